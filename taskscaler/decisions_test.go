package taskscaler

import (
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
)

func TestDecisionsRecordScalingAndReasonChanges(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.Policies = []Policy{allDay(Policy{IdleCount: 2, IdleTime: 5 * time.Minute})}
	})
	eventually(t, c, "two idle slots", func() bool { return ts.Stats().Slots.Idle == 2 })
	settle(t, c, g, ts)

	ds := ts.Decisions()
	if len(ds) < 2 {
		t.Fatalf("want an increase and a steady state, got %+v", ds)
	}
	inc := ds[0]
	if inc.Action != ActionIncrease || inc.Count != 2 || inc.Desired != 2 || inc.Actual != 0 || inc.Reason == "" {
		t.Errorf("first decision: %+v", inc)
	}
	steady := 0
	for _, d := range ds {
		if d.Action == ActionNone && d.Reason == "the fleet is at its desired size" {
			steady++
		}
	}
	if steady != 1 {
		t.Errorf("a steady fleet is recorded once, not every pass; got %d times in %+v", steady, ds)
	}

	idx, p := ts.ActivePolicy()
	if idx != 0 || p.IdleCount != 2 {
		t.Errorf("active policy: %d %+v", idx, p)
	}

	if err := ts.SetPolicies(nil); err != nil {
		t.Fatal(err)
	}
	eventuallyStep(t, c, time.Second, "scaled in", func() bool { return len(g.ids()) == 0 })
	ds = ts.Decisions()
	var dec *Decision
	for i := range ds {
		if ds[i].Action == ActionDecrease {
			dec = &ds[i]
		}
	}
	if dec == nil || dec.Count != 2 || dec.Desired != 0 || dec.Actual != 2 || !strings.Contains(dec.Reason, "idle") {
		t.Errorf("decrease: %+v in %+v", dec, ds)
	}
	if idx, _ := ts.ActivePolicy(); idx != -1 {
		t.Errorf("no policy is in force, got index %d", idx)
	}
}

func TestDecisionsKeepTheLastTwenty(t *testing.T) {
	ts := &Taskscaler{}
	for i := range 30 {
		ts.recordLocked(Decision{Action: ActionIncrease, Count: i})
	}
	ds := ts.Decisions()
	if len(ds) != decisionsKept || ds[0].Count != 10 || ds[len(ds)-1].Count != 29 {
		t.Errorf("kept %d decisions from %d to %d", len(ds), ds[0].Count, ds[len(ds)-1].Count)
	}
}
