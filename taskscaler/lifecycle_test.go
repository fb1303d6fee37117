package taskscaler

import (
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
)

// measures records what Options.Observe is told.
type measures struct {
	mu  sync.Mutex
	got map[Measure][]time.Duration
}

func (m *measures) observe(k Measure, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got[k] = append(m.got[k], d)
}

func (m *measures) of(k Measure) []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Duration(nil), m.got[k]...)
}

func TestLifecycleDurationsAndInstanceTime(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	m := &measures{got: map[Measure][]time.Duration{}}
	ts := start(t, g, func(o *Options) {
		o.Policies = []Policy{allDay(Policy{IdleCount: 1, IdleTime: time.Minute})}
		o.Observe = m.observe
	})
	eventually(t, c, "one ready instance", func() bool { return ready(ts) == 1 })
	a, err := ts.Acquire(t.Context(), "job")
	if err != nil {
		t.Fatal(err)
	}
	busyFrom := c.Now()
	eventually(t, c, "the idle target refilled", func() bool { return ts.Stats().Slots.Idle == 1 })
	c.Advance(10 * time.Minute)
	ts.Release(a.Key())
	busyFor := c.Now().Sub(busyFrom)
	if err := ts.SetPolicies(nil); err != nil {
		t.Fatal(err)
	}
	eventuallyStep(t, c, time.Second, "every instance gone", func() bool { return len(g.ids()) == 0 && len(ts.Instances()) == 0 })

	// Two instances lived through every stage; the fake boots in 10s and deletes in 5s.
	for k, name := range map[Measure]string{MeasureCreation: "creation", MeasureIsRunning: "is running",
		MeasureReadiness: "readiness", MeasureDeletion: "deletion", MeasureLife: "life"} {
		if n := len(m.of(k)); n != 2 {
			t.Errorf("%s observed %d times, want 2: %v", name, n, m.of(k))
		}
	}
	// The fake boots in 10s from Increase: creation runs to the first listing, is-running from there.
	created, running := m.of(MeasureCreation), m.of(MeasureIsRunning)
	for i := range min(len(created), len(running)) {
		if d := created[i] + running[i]; d < 10*time.Second || d > 15*time.Second {
			t.Errorf("creation %s + is-running %s, the fake boots in 10s", created[i], running[i])
		}
	}
	for _, d := range m.of(MeasureDeletion) {
		if d < 5*time.Second || d > 10*time.Second {
			t.Errorf("deletion time %s, the fake deletes in 5s", d)
		}
	}
	for _, d := range m.of(MeasureLife) {
		if d < 15*time.Second {
			t.Errorf("life %s is shorter than booting and deleting", d)
		}
	}

	it := ts.Stats().Counters.InstanceTime
	if it.Busy < busyFor || it.Busy > busyFor+time.Second {
		t.Errorf("busy time %s, the job held its slot for %s", it.Busy, busyFor)
	}
	// The second instance idled through the job's ten minutes.
	if it.Idle < 10*time.Minute || it.Booting < 15*time.Second || it.Removing < 10*time.Second || it.Draining != 0 {
		t.Errorf("instance time %+v", it)
	}
	k := ts.Stats().Counters
	if k.IncreaseAsked != 2 || k.InstancesRequested != 2 || k.DecreaseAsked != 2 || k.DecreaseAccepted != 2 {
		t.Errorf("scale counters %+v", k)
	}
}
