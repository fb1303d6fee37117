package aws

import (
	"errors"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// TestClaimMoto: moto (5.2) keeps CreateOrUpdateTags and DeleteTags on the group and lists them in
// DescribeAutoScalingGroups, so the claim works on it as on awssim: a second manager is refused naming
// the first, and after the first unclaims, the second claims.
func TestClaimMoto(t *testing.T) {
	startMoto(t)
	if err := createMotoGroup(t.Context(), sdkConfig(t), "claimed", motoLinuxAMI, 1, 0); err != nil {
		t.Fatalf("set up moto: %v", err)
	}
	plugin := func() *InstanceGroup {
		g := &InstanceGroup{Name: "claimed", Region: "us-east-1", maxAttempts: 1}
		if _, err := g.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
			t.Fatalf("Init = %v", err)
		}
		return g
	}
	a, b := plugin(), plugin()
	first := fleeting.Claim{SystemID: "s_aaaaaaaaaaaa", Host: "host-a", MaxAge: claimMaxAge}
	second := fleeting.Claim{SystemID: "s_bbbbbbbbbbbb", Host: "host-b", MaxAge: claimMaxAge}
	if err := a.Claim(t.Context(), first); err != nil {
		t.Fatalf("first Claim = %v", err)
	}
	var claimed *fleeting.GroupClaimedError
	if err := b.Claim(t.Context(), second); !errors.As(err, &claimed) || claimed.SystemID != first.SystemID || claimed.Host != first.Host {
		t.Fatalf("second Claim = %v, want it refused naming %s", err, first.Holder())
	}
	if err := b.Unclaim(t.Context(), second); err != nil {
		t.Fatalf("second Unclaim = %v", err)
	}
	if err := a.Unclaim(t.Context(), first); err != nil {
		t.Fatalf("first Unclaim = %v", err)
	}
	if tags, err := a.groupTags(t.Context()); err != nil || tags[ClaimTag] != "" {
		t.Fatalf("claim tag after Unclaim = %q, %v", tags[ClaimTag], err)
	}
	if err := b.Claim(t.Context(), second); err != nil {
		t.Fatalf("second Claim after the first unclaimed = %v", err)
	}
	if tags, _ := b.groupTags(t.Context()); !strings.HasPrefix(tags[ClaimTag], second.Holder()+" at ") {
		t.Errorf("claim tag = %q, want %s's", tags[ClaimTag], second.Holder())
	}
}
