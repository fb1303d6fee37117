package aws

import (
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// TestAPICallsPerScalingEvent drives the plugin the way the taskscaler does (Update polls, a scale-out,
// one ConnectInfo per instance for its pooled connection, a Heartbeat per job, a scale-in) and prints
// the AWS calls per scaling event. API use must follow scaling events, not jobs.
func TestAPICallsPerScalingEvent(t *testing.T) {
	const rounds, perStep, jobsPerInstance = 3, 3, 5
	// Consistent listings: a lagging one costs a DescribeInstances more, at random, and the counts
	// below are exact.
	sim := newSim(t, awssim.GroupSpec{Name: "calls", MaxSize: perStep, ProtectFromScaleIn: true, Boot: &local.BootModel{Running: 100 * time.Millisecond}},
		awssim.Options{ConsistentListings: true})
	g := simGroup("calls")
	if _, err := g.Init(t.Context(), quietLog(), simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	polls := 0
	poll := func(done func(map[string]fleeting.State) bool) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := map[string]fleeting.State{}
			polls++
			if err := g.Update(t.Context(), func(id string, s fleeting.State) { st[id] = s }); err != nil {
				t.Fatalf("Update = %v", err)
			}
			if done(st) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out; states %v", st)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	before := sim.Calls()
	for range rounds {
		if n, err := g.Increase(t.Context(), perStep); n != perStep || err != nil {
			t.Fatalf("Increase = %d, %v", n, err)
		}
		var ids []string
		poll(func(st map[string]fleeting.State) bool {
			ids = ids[:0]
			for id, s := range st {
				if s == fleeting.StateRunning {
					ids = append(ids, id)
				}
			}
			return len(ids) == perStep
		})
		for _, id := range ids {
			if _, err := g.ConnectInfo(t.Context(), id); err != nil {
				t.Fatalf("ConnectInfo = %v", err)
			}
			for range jobsPerInstance {
				if err := g.Heartbeat(t.Context(), id); err != nil {
					t.Fatalf("Heartbeat = %v", err)
				}
			}
		}
		if got, err := g.Decrease(t.Context(), ids); err != nil || len(got) != perStep {
			t.Fatalf("Decrease = %q, %v", got, err)
		}
		poll(func(st map[string]fleeting.State) bool {
			for _, s := range st {
				if s != fleeting.StateDeleted {
					return false
				}
			}
			return true
		})
	}
	after := sim.Calls()
	d := func(action string) int { return after[action] - before[action] }
	events := 2 * rounds
	jobs := rounds * perStep * jobsPerInstance
	perEvent := d("SetDesiredCapacity") + d("TerminateInstanceInAutoScalingGroup") + d("DescribeInstances") + d("SendSSHPublicKey")
	t.Logf("%d scaling events (%d out, %d in, %d instances each), %d jobs, %d Update polls", events, rounds, rounds, perStep, jobs, polls)
	t.Logf("per scale-out: SetDesiredCapacity %.1f, DescribeInstances %.1f, SendSSHPublicKey %.1f (one per instance connection)",
		float64(d("SetDesiredCapacity"))/rounds, float64(d("DescribeInstances"))/rounds, float64(d("SendSSHPublicKey"))/rounds)
	t.Logf("per scale-in: TerminateInstanceInAutoScalingGroup %.1f", float64(d("TerminateInstanceInAutoScalingGroup"))/rounds)
	t.Logf("event-driven calls per scaling event %.1f, per job %.2f; DescribeAutoScalingGroups per Update poll %.2f",
		float64(perEvent)/float64(events), float64(perEvent)/float64(jobs), float64(d("DescribeAutoScalingGroups"))/float64(polls))

	for action, want := range map[string]int{
		"SetDesiredCapacity":                  rounds,
		"DescribeInstances":                   rounds,
		"SendSSHPublicKey":                    rounds * perStep,
		"TerminateInstanceInAutoScalingGroup": rounds * perStep,
		"DescribeAutoScalingGroups":           polls,
	} {
		if d(action) != want {
			t.Errorf("%s called %d times; want %d", action, d(action), want)
		}
	}
}
