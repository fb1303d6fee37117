package testrig

import (
	"context"
	"errors"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/common/trace"
)

// Sim starts a GitLab simulator that takes every trace update at once (closed at the end of the test)
// and registers one runner as description; it returns the simulator and the runner's token.
func Sim(t testing.TB, description string) (*gitlabsim.Server, string) {
	t.Helper()
	sim, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	_, token := sim.CreateRunner(gitlabsim.RunnerOptions{Description: description})
	return sim, token
}

// SimRunner is Sim with a client of the runner that announces executor with features.
func SimRunner(t testing.TB, description, executor string, features map[string]bool) (*gitlabsim.Server, *gitlab.Client, string) {
	t.Helper()
	sim, token := Sim(t, description)
	gl, err := gitlab.NewClient(logging.Discard(), gitlab.ClientConfig{URL: sim.URL(),
		Info: gitlab.NewVersionInfo(executor, "sh", features)})
	if err != nil {
		t.Fatal(err)
	}
	return sim, gl, token
}

// FinishJob sends job j's final state as the manager does: success, or failed for the reason and with
// the exit code that runErr, the executor's error, carries.
func FinishJob(ctx context.Context, tr *trace.Trace, j *job.Job, runErr error) error {
	state := gitlab.JobSuccess
	reason, code := job.Failure(runErr)
	if runErr != nil {
		state = gitlab.JobFailed
		tr.Errorf("Job failed: %v", runErr)
	}
	// A final "failed" is answered with Job-Status: failed, which the client reads as an abort; the
	// simulator's state is what counts.
	if err := tr.Finish(ctx, state, j.ReasonFor(reason), code); err != nil && !errors.Is(err, trace.ErrAborted) {
		return err
	}
	return nil
}
