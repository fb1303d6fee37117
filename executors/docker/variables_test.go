package docker

import (
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// TestVariablePrecedence: as upstream's GetAllVariables, [[runners]] environment comes first, the
// runner's predefined CI_* variables next, then the job's variables, which therefore override both.
func TestVariablePrecedence(t *testing.T) {
	rc := &config.RunnerConfig{Environment: []string{"GIT_DEPTH=5", "FROM_RUNNER=yes", "CI_PROJECT_DIR=/elsewhere"}}
	j := &job.Job{Image: job.Image{Name: "alpine:3"}, RunnerInfo: job.RunnerInfo{Timeout: 900},
		Variables: job.Variables{{Key: "GIT_DEPTH", Value: "1"}}}
	r := planRun(t, rc, j)
	for key, want := range map[string]string{
		"GIT_DEPTH":      "1",          // the job's value wins over the runner environment
		"FROM_RUNNER":    "yes",        // the runner environment still reaches the job
		"CI_PROJECT_DIR": r.projectDir, // a runner environment entry cannot move the project
		"CI_JOB_TIMEOUT": "900",
		"CI_JOB_STATUS":  "running",
		"CI_JOB_IMAGE":   "alpine:3",
	} {
		if got := r.vars.Get(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
}

// TestGitCheckoutParsesBool: GIT_CHECKOUT is read with strconv.ParseBool as upstream ("0", "FALSE"
// turn the checkout off; an unparsable value keeps it on).
func TestGitCheckoutParsesBool(t *testing.T) {
	for value, want := range map[string]bool{"": true, "false": false, "0": false, "FALSE": false, "f": false, "true": true, "1": true, "maybe": true} {
		r := planRun(t, &config.RunnerConfig{}, &job.Job{Variables: job.Variables{{Key: "GIT_CHECKOUT", Value: value}}})
		if got := r.gitCheckout(); got != want {
			t.Errorf("GIT_CHECKOUT=%q: checkout %v, want %v", value, got, want)
		}
	}
}
