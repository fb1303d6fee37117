package local_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// The claim in claim.json, step by step, as two managers on one state_dir see it.
func TestClaim(t *testing.T) {
	dir := t.TempDir()
	g := newGroup(dir)
	if _, err := g.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
		t.Fatal(err)
	}
	killAll(t, g)
	const maxAge = time.Minute
	a := fleeting.Claim{SystemID: "s_a", Host: "host-a", MaxAge: maxAge}
	b := fleeting.Claim{SystemID: "s_b", Host: "host-b", MaxAge: maxAge}
	bTakes := b
	bTakes.TakeOver = true
	write := func(content string) func() error {
		return func() error { return os.WriteFile(filepath.Join(dir, "claim.json"), []byte(content), 0o600) }
	}
	stale := `{"system_id":"s_c","host":"host-c","at":"` + time.Now().Add(-2*maxAge).UTC().Format(time.RFC3339) + `"}`
	steps := []struct {
		name      string
		call      func() error
		refusedBy string
	}{
		{"a claims", func() error { return g.Claim(t.Context(), a) }, ""},
		{"b is refused", func() error { return g.Claim(t.Context(), b) }, "s_a"},
		{"a claims again", func() error { return g.Claim(t.Context(), a) }, ""},
		{"b takes over", func() error { return g.Claim(t.Context(), bTakes) }, ""},
		{"a is refused", func() error { return g.Claim(t.Context(), a) }, "s_b"},
		{"a's unclaim leaves b's claim", func() error { return g.Unclaim(t.Context(), a) }, ""},
		{"a is still refused", func() error { return g.Claim(t.Context(), a) }, "s_b"},
		{"b unclaims", func() error { return g.Unclaim(t.Context(), b) }, ""},
		{"a claims the free group", func() error { return g.Claim(t.Context(), a) }, ""},
		{"a stale claim is left", write(stale), ""},
		{"b claims over the stale claim", func() error { return g.Claim(t.Context(), b) }, ""},
		{"a malformed claim is left", write("{"), ""},
		{"a claims over the malformed claim", func() error { return g.Claim(t.Context(), a) }, ""},
	}
	for _, st := range steps {
		err := st.call()
		var held *fleeting.GroupClaimedError
		switch {
		case st.refusedBy == "" && err != nil:
			t.Fatalf("%s: %v", st.name, err)
		case st.refusedBy != "" && (!errors.As(err, &held) || !errors.Is(err, fleeting.ErrGroupClaimed) || held.SystemID != st.refusedBy):
			t.Fatalf("%s = %v, want refused for %s", st.name, err, st.refusedBy)
		}
	}
}
