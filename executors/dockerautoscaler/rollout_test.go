package dockerautoscaler

import (
	"maps"
	"slices"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// fakeFleet is a taskscaler's view of its instances for roll-out tests: Drain moves an idle instance to
// remove and a busy one to draining, as the taskscaler does.
type fakeFleet struct {
	instances map[string]taskscaler.InstanceInfo
	drained   []string
	reasons   []string
}

func (f *fakeFleet) Instances() []taskscaler.InstanceInfo {
	var out []taskscaler.InstanceInfo
	for _, id := range slices.Sorted(maps.Keys(f.instances)) {
		out = append(out, f.instances[id])
	}
	return out
}

func (f *fakeFleet) Drain(id, reason string) bool {
	in, ok := f.instances[id]
	if !ok || in.State != "ready" {
		return false
	}
	in.State = "remove"
	if in.Acquired > 0 {
		in.State = "draining"
	}
	f.instances[id] = in
	f.drained = append(f.drained, id)
	f.reasons = append(f.reasons, reason)
	return true
}

// TestRolloutPace: each check drains outdated instances while fewer than the pace are draining for
// the roll-out, idle ones before busy ones; one counts until it has left; instances that do not serve
// slots are left alone.
func TestRolloutPace(t *testing.T) {
	ready := func(id string, jobs int) taskscaler.InstanceInfo {
		return taskscaler.InstanceInfo{ID: id, State: "ready", Acquired: jobs}
	}
	tests := []struct {
		name      string
		pace      config.Pace
		instances []taskscaler.InstanceInfo
		outdated  []string
		// rounds lists what each check drains; after each, the instances drained in it leave.
		rounds [][]string
	}{
		{
			name:      "one at a time, idle first",
			pace:      config.PaceCount(1),
			instances: []taskscaler.InstanceInfo{ready("i-busy", 1), ready("i-b", 0), ready("i-a", 0), ready("i-new", 0)},
			outdated:  []string{"i-busy", "i-b", "i-a"},
			rounds:    [][]string{{"i-a"}, {"i-b"}, {"i-busy"}, nil},
		},
		{
			name:      "a percentage of the fleet, fewest jobs first",
			pace:      config.PacePercent(50),
			instances: []taskscaler.InstanceInfo{ready("i-1", 2), ready("i-2", 1), ready("i-3", 0), ready("i-4", 0), ready("i-new1", 0), ready("i-new2", 1)},
			outdated:  []string{"i-1", "i-2", "i-3", "i-4"},
			// 3 of 6 instances, then 2 of the 3 left.
			rounds: [][]string{{"i-3", "i-4", "i-2"}, {"i-1"}},
		},
		{
			name: "only serving instances",
			pace: config.PaceCount(5),
			instances: []taskscaler.InstanceInfo{ready("i-ready", 0), {ID: "i-creating", State: "creating"},
				{ID: "i-draining", State: "draining", Acquired: 1}, {ID: "i-removing", State: "removing"}},
			outdated: []string{"i-creating", "i-draining", "i-removing", "i-ready", "i-unknown"},
			rounds:   [][]string{{"i-ready"}},
		},
		{
			name: "outdated instances already out of service take their share",
			pace: config.PaceCount(2),
			instances: []taskscaler.InstanceInfo{ready("i-a", 0), ready("i-b", 0), {ID: "i-draining", State: "draining", Acquired: 1},
				ready("i-new", 0)},
			outdated: []string{"i-a", "i-b", "i-draining"},
			// i-draining holds one of the two places throughout.
			rounds: [][]string{{"i-a"}, {"i-b"}},
		},
		{
			name:      "off",
			pace:      config.PaceCount(0),
			instances: []taskscaler.InstanceInfo{ready("i-a", 0)},
			outdated:  []string{"i-a"},
			rounds:    [][]string{nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeFleet{instances: map[string]taskscaler.InstanceInfo{}}
			for _, in := range tt.instances {
				f.instances[in.ID] = in
			}
			r := &rollout{pace: tt.pace, draining: map[string]bool{}}
			for i, want := range tt.rounds {
				var found []fleeting.Outdated
				for _, id := range tt.outdated {
					if _, ok := f.instances[id]; ok || id == "i-unknown" {
						found = append(found, fleeting.Outdated{Instance: id, Reason: "launch template lt-1 version 1, the group launches version 2"})
					}
				}
				f.drained = nil
				r.step(logging.Discard(), f, found)
				if !slices.Equal(f.drained, want) {
					t.Fatalf("check %d drained %v, want %v", i+1, f.drained, want)
				}
				if got := r.outdated.Load(); got != int64(len(found)) {
					t.Errorf("check %d: outdated gauge %d, want %d", i+1, got, len(found))
				}
				// A second check before anything left drains nothing more.
				f.drained = nil
				r.step(logging.Discard(), f, found)
				if len(f.drained) != 0 {
					t.Fatalf("check %d again, before the drained left: drained %v", i+1, f.drained)
				}
				for _, id := range want {
					delete(f.instances, id)
				}
			}
			for _, reason := range f.reasons {
				if reason != "roll-out: launch template lt-1 version 1, the group launches version 2" {
					t.Errorf("drain reason %q", reason)
				}
			}
		})
	}
}
