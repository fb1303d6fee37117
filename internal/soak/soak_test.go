package soak_test

import (
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/internal/soak"
)

// TestSoak runs the profile FLEETRUNNER_SOAK names (short by default, long for `make soak`), prints the
// figures and asserts the goals. Seconds and memory are printed only; goroutines get a generous bound.
func TestSoak(t *testing.T) {
	p, err := soak.ProfileFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := soak.SeedFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	f := soak.Run(t, p, seed)
	t.Logf("soak figures:\n%s", f.Table())
	if len(f.HandoutLost) > 0 {
		t.Logf("jobs lost in the hand-out window (GitLab ends them at their timeout):\n  %s", strings.Join(f.HandoutLost, "\n  "))
	}

	for _, goal := range []struct {
		what string
		bad  []string
	}{
		{"jobs lost (not in a final state)", f.Jobs.Lost},
		{"jobs whose outcome does not fit their script", f.Jobs.WrongOutcome},
		{"traces that lost bytes, mismatch their checksum or hide a system failure", f.Jobs.TraceProblems},
		{"jobs in flight at a kill -9 that no state file knew", f.Unrecorded},
		{"jobs in flight at a kill -9 not reported as runner_system_failure", f.Unreported},
		{"state file problems", f.StateProblems},
		{"instances orphaned (in the cloud, in no state file) before the shutdown", f.Orphaned},
		{"instances left after the shutdown (delete_instances_on_shutdown)", f.LeftAfterShutdown},
		{"job leftovers on the engine once every job was final", f.Leftovers},
		{"job leftovers on the engine after the shutdown", f.LeftoversAfterShutdown},
	} {
		if len(goal.bad) > 0 {
			t.Errorf("%s: %d, want 0:\n  %s", goal.what, len(goal.bad), strings.Join(goal.bad, "\n  "))
		}
	}
	if f.Shutdown != "" {
		t.Errorf("SIGQUIT: %s", f.Shutdown)
	}
	if limit := 2*f.FirstEnd.Goroutines + 50; f.LastEnd.Goroutines > limit {
		t.Errorf("the last manager process ended with %d goroutines, above twice the first one's %d plus 50", f.LastEnd.Goroutines, f.FirstEnd.Goroutines)
	}
}
