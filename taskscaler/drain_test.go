package taskscaler

import (
	"context"
	"slices"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
)

// drainCases: Drain on an idle and on a busy instance.
var drainCases = []struct {
	name string
	busy bool
}{
	{name: "idle instance is removed at once"},
	{name: "busy instance keeps its job, takes no new one, goes when it releases", busy: true},
}

func TestDrain(t *testing.T) {
	for _, tc := range drainCases {
		t.Run(tc.name, func(t *testing.T) {
			c := clock.NewFake(t0)
			g := newFakeGroup(c)
			ts := start(t, g, func(o *Options) {
				o.Policies = []Policy{allDay(Policy{IdleCount: 2, IdleTime: time.Hour, Preemptive: true})}
			})
			eventually(t, c, "two ready", func() bool { return ready(ts) == 2 })
			target := g.ids()[0]
			var running *Acquisition
			if tc.busy {
				a, err := ts.Acquire(t.Context(), "running")
				if err != nil {
					t.Fatal(err)
				}
				running, target = a, a.InstanceID
			}
			if !ts.Drain(target, "spot interruption notice") {
				t.Fatalf("Drain(%s) refused a serving instance", target)
			}
			if ts.Drain(target, "again") {
				t.Error("a second Drain changed something")
			}
			if ts.Drain("i-unknown", "unknown") {
				t.Error("Drain of an unknown instance changed something")
			}
			if got := ts.Stats().Counters.DrainRequested; got != 1 {
				t.Errorf("DrainRequested = %d, want 1", got)
			}
			// The new job lands on the other ready instance, never on the drained one.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			a, err := ts.Acquire(ctx, "new")
			if err != nil {
				t.Fatal(err)
			}
			if a.InstanceID == target {
				t.Fatalf("new job acquired the drained instance %s", target)
			}
			if tc.busy {
				if err := running.Context().Err(); err != nil {
					t.Fatalf("the running job on a draining instance was cut off: %v", err)
				}
				if s := ts.Stats(); s.Instances.Draining != 1 {
					t.Errorf("instances draining = %d, want 1", s.Instances.Draining)
				}
				c.Advance(time.Minute)
				if !slices.Contains(g.ids(), target) {
					t.Fatal("draining instance removed while its job ran")
				}
				ts.Release(running.Key())
			}
			eventually(t, c, "drained instance deleted", func() bool { return !slices.Contains(g.ids(), target) })
		})
	}
}
