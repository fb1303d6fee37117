package aws

import (
	"errors"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
)

// claimMaxAge is the executor's refresh window in these tests.
const claimMaxAge = 3 * time.Minute

// One group, one manager: the claim on awssim's group, step by step, as two managers (and a restart
// of the first) see it.
func TestClaimOneManagerPerGroup(t *testing.T) {
	sim := newSim(t, awssim.GroupSpec{Name: "claimed", MaxSize: 1, ProtectFromScaleIn: true}, awssim.Options{})
	ctx := t.Context()
	plugin := func() *InstanceGroup {
		g := simGroup("claimed")
		if _, err := g.Init(ctx, quietLog(), simSettings(t, sim)); err != nil {
			t.Fatalf("Init = %v", err)
		}
		return g
	}
	a, b, aRestarted := plugin(), plugin(), plugin()
	first := fleeting.Claim{SystemID: "s_aaaaaaaaaaaa", Host: "host-a", MaxAge: claimMaxAge}
	second := fleeting.Claim{SystemID: "s_bbbbbbbbbbbb", Host: "host-b", MaxAge: claimMaxAge}
	takeOver := second
	takeOver.TakeOver = true
	writeTag := func(value string) func() error {
		return func() error { return a.client.TagGroup(ctx, "claimed", ClaimTag, value) }
	}
	old := time.Now().Add(-2 * claimMaxAge).UTC().Format(time.RFC3339)

	steps := []struct {
		name string
		call func() error
		// refusedBy is the system ID the call is refused for, "" when it succeeds.
		refusedBy string
		// holder is the claim's "SYSTEM_ID on HOST" afterwards, "" for none.
		holder string
	}{
		{"first manager claims the free group", func() error { return a.Claim(ctx, first) }, "", first.Holder()},
		{"second manager is refused", func() error { return b.Claim(ctx, second) }, first.SystemID, first.Holder()},
		{"first manager refreshes", func() error { return a.Claim(ctx, first) }, "", first.Holder()},
		{"first manager restarted claims again", func() error { return aRestarted.Claim(ctx, first) }, "", first.Holder()},
		{"second manager takes over (HA)", func() error { return b.Claim(ctx, takeOver) }, "", second.Holder()},
		{"first manager's refresh is refused", func() error { return a.Claim(ctx, first) }, second.SystemID, second.Holder()},
		{"first manager's unclaim leaves the second's claim", func() error { return a.Unclaim(ctx, first) }, "", second.Holder()},
		{"second manager unclaims", func() error { return b.Unclaim(ctx, second) }, "", ""},
		{"unclaim of no claim", func() error { return b.Unclaim(ctx, second) }, "", ""},
		{"a stale claim is written", writeTag("s_cccccccccccc on host-c at " + old), "", "s_cccccccccccc on host-c"},
		{"stale claim is taken", func() error { return a.Claim(ctx, first) }, "", first.Holder()},
		{"a malformed claim is written", writeTag("someone's"), "", ""},
		{"malformed claim is taken", func() error { return b.Claim(ctx, second) }, "", second.Holder()},
	}
	for _, st := range steps {
		err := st.call()
		var claimed *fleeting.GroupClaimedError
		switch {
		case st.refusedBy == "" && err != nil:
			t.Fatalf("%s: %v", st.name, err)
		case st.refusedBy != "" && (!errors.Is(err, fleeting.ErrGroupClaimed) || !errors.As(err, &claimed)):
			t.Fatalf("%s = %v, want a GroupClaimedError", st.name, err)
		case st.refusedBy != "":
			if claimed.SystemID != st.refusedBy || time.Since(claimed.ClaimedAt) > time.Minute || !strings.Contains(err.Error(), st.refusedBy) || !strings.Contains(err.Error(), `"claimed"`) {
				t.Errorf("%s: %+v (%v), want it to name %s, the group and a claim of the last minute", st.name, claimed, err, st.refusedBy)
			}
		}
		tags, err := a.groupTags(ctx)
		if err != nil {
			t.Fatal(err)
		}
		value, tagged := tags[ClaimTag]
		holder := ""
		if before, _, ok := strings.Cut(value, " at "); ok {
			holder = before
		}
		if holder != st.holder || tagged != (st.holder != "" || st.name == "a malformed claim is written") {
			t.Errorf("%s: claim tag %q (present %v), want holder %q", st.name, value, tagged, st.holder)
		}
	}
	if n := sim.Calls()["CreateOrUpdateTags"]; n == 0 {
		t.Errorf("no CreateOrUpdateTags call reached awssim: %v", sim.Calls())
	}
}

func TestParseClaim(t *testing.T) {
	at := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  groupClaim
		ok    bool
	}{
		{"s_0123456789ab on host-1 at 2026-12-07T04:00:00Z", groupClaim{"s_0123456789ab", "host-1", at}, true},
		{"s_0123456789ab on host at sea at 2026-12-07T04:00:00Z", groupClaim{"s_0123456789ab", "host at sea", at}, true},
		{"s_0123456789ab on  at 2026-12-07T04:00:00Z", groupClaim{"s_0123456789ab", "", at}, true},
		{"s_0123456789ab on host-1 at yesterday", groupClaim{}, false},
		{"s_0123456789ab host-1 at 2026-12-07T04:00:00Z", groupClaim{}, false},
		{" on host-1 at 2026-12-07T04:00:00Z", groupClaim{}, false},
		{"", groupClaim{}, false},
	}
	for _, tt := range tests {
		got, err := parseClaim(tt.value)
		if (err == nil) != tt.ok || tt.ok && (got.SystemID != tt.want.SystemID || got.Host != tt.want.Host || !got.At.Equal(tt.want.At)) {
			t.Errorf("parseClaim(%q) = %+v, %v; want %+v (ok %v)", tt.value, got, err, tt.want, tt.ok)
		}
	}
}

// A claim's value fits a tag and reads back as written, whatever the host is called; anything else
// parses or fails without a panic.
func FuzzParseClaim(f *testing.F) {
	f.Add("s_0123456789ab", "host-1", int64(1796616000), "s_0123456789ab on host-1 at 2026-12-07T04:00:00Z")
	f.Add("s_x", strings.Repeat("h", 300), int64(0), "garbage at 2026-12-07T04:00:00+01:00")
	f.Fuzz(func(t *testing.T, systemID, host string, unix int64, raw string) {
		_, _ = parseClaim(raw)
		if systemID == "" || strings.ContainsAny(systemID, " \t\n") || len(systemID) > 64 || unix < 0 || unix > 253402300799 {
			return
		}
		at := time.Unix(unix, 0).UTC()
		v := claimValue(fleeting.Claim{SystemID: systemID, Host: host}, at)
		if len(v) > maxTagValue && len(systemID)+len(" on  at ")+len(time.RFC3339) <= maxTagValue {
			t.Fatalf("claimValue is %d bytes, over the tag limit %d", len(v), maxTagValue)
		}
		got, err := parseClaim(v)
		if err != nil || got.SystemID != systemID || !strings.HasPrefix(host, got.Host) || !got.At.Equal(at) {
			t.Fatalf("parseClaim(%q) = %+v, %v; want %s on %s at %s", v, got, err, systemID, host, at)
		}
	})
}
