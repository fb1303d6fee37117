package aws

import (
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// TestInterruptions: a spot interruption notice shows for exactly the noticed instance, in one
// DescribeSpotInstanceRequests call per poll, and the instance leaves the group once EC2 reclaims it.
func TestInterruptions(t *testing.T) {
	sim, g, ids := runningSimGroup(t, awssim.GroupSpec{Name: "spot", MaxSize: 3, ProtectFromScaleIn: true, AZs: []string{"us-east-1a"}, Boot: &local.BootModel{}}, 2)
	before := sim.Calls()["DescribeSpotInstanceRequests"]
	if got, err := g.Interruptions(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("Interruptions before any notice = %v, %v; want none", got, err)
	}
	if err := sim.InterruptSpot(ids[0], 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// EC2's listings are eventually consistent (awssim lags them too): a just-launched instance's spot
	// request may be missing from the first answers, so the notice is polled for, as the executor does.
	polls := 1
	var got []fleeting.Interruption
	for noticeBy := time.Now().Add(10 * time.Second); len(got) == 0; polls++ {
		if time.Now().After(noticeBy) {
			t.Fatalf("no interruption reported for %s within 10s of its notice", ids[0])
		}
		var err error
		if got, err = g.Interruptions(t.Context()); err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if len(got) != 1 || got[0].Instance != ids[0] || got[0].Reason != "spot interruption notice (marked-for-termination)" || got[0].NoticedAt.IsZero() {
		t.Fatalf("Interruptions after a notice for %s = %+v", ids[0], got)
	}
	if calls := sim.Calls()["DescribeSpotInstanceRequests"] - before; calls != polls {
		t.Errorf("%d DescribeSpotInstanceRequests calls for %d polls of 2 instances, want one per poll", calls, polls)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, there := updateOnce(t, g)[ids[0]]; !there {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reclaimed instance %s still listed 20s after the notice", ids[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, err := g.Interruptions(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("Interruptions once the instance is gone = %+v, %v; want none", got, err)
	}
}
