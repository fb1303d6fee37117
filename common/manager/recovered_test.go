package manager_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// recoveringExec is the test executor plus jobs "left over" from a previous manager process.
type recoveringExec struct {
	*scriptExec
	jobs []executors.RecoveredJob
}

func (e *recoveringExec) RecoveredJobs() []executors.RecoveredJob { return e.jobs }

func TestRecoveredJobsAreFailedAtStart(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "interrupted", Script: []string{"sleep 600"}})

	// A previous process took the job and died: the job is running in GitLab.
	taken := r.takeJob(id)

	var forgotten atomic.Bool
	rec := &recoveringExec{scriptExec: r.exec, jobs: []executors.RecoveredJob{{
		ID: id, Token: taken.Token, URL: r.url, Instance: "i-0abc", Done: func() { forgotten.Store(true) },
	}}}
	r.writeConfig(runnerSettings{concurrent: 1})
	r.startWith(rec, time.Hour)

	snap := r.finished(id)
	if snap.Status != "failed" || snap.FailureReason != "runner_system_failure" {
		t.Errorf("interrupted job: status %s, reason %s; want failed, runner_system_failure", snap.Status, snap.FailureReason)
	}
	if !strings.Contains(string(snap.Trace), "instance i-0abc") {
		t.Errorf("interrupted job's log does not say where it ran: %q", snap.Trace)
	}
	if strings.Contains(string(snap.Trace), taken.Token) {
		t.Error("the job token reached the job log")
	}
	deadline := time.Now().Add(testTimeout)
	for !forgotten.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !forgotten.Load() {
		t.Error("the provider was not told that the recovered job was reported")
	}
}
