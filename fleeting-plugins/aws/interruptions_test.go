package aws

import (
	"testing"
	"time"

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
	if err := sim.InterruptSpot(ids[0], 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got, err := g.Interruptions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Instance != ids[0] || got[0].Reason != "spot interruption notice (marked-for-termination)" || got[0].NoticedAt.IsZero() {
		t.Fatalf("Interruptions after a notice for %s = %+v", ids[0], got)
	}
	if calls := sim.Calls()["DescribeSpotInstanceRequests"] - before; calls != 2 {
		t.Errorf("%d DescribeSpotInstanceRequests calls for 2 polls, want 2", calls)
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
