package manager_test

import (
	"fmt"
	"hash/crc32"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
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

// A job that had written output before the crash gets the failure message after that output, and the
// final update's size is the stored log's (it used to be rewritten from offset 0 and lost).
func TestRecoveredJobMessageFollowsItsEarlierOutput(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "interrupted", Script: []string{"sleep 40"}})
	taken := r.takeJob(id)
	client, err := gitlab.NewClient(logrus.New(), gitlab.ClientConfig{URL: r.url})
	if err != nil {
		t.Fatal(err)
	}
	earlier := "Running with fleetrunner\n$ sleep 40"
	jc := gitlab.JobCredentials{ID: id, Token: taken.Token}
	if res := client.PatchTrace(r.ctx(), jc, []byte(earlier), 0, false); res.State != gitlab.PatchSucceeded {
		t.Fatalf("the earlier process's log: %+v", res)
	}

	rec := &recoveringExec{scriptExec: r.exec, jobs: []executors.RecoveredJob{{ID: id, Token: taken.Token, URL: r.url, Instance: "i-0abc"}}}
	r.writeConfig(runnerSettings{concurrent: 1})
	r.startWith(rec, time.Hour)

	snap := r.finished(id)
	trace := string(snap.Trace)
	if !strings.HasPrefix(trace, earlier+"\n") || !strings.Contains(trace[len(earlier):], "the runner manager stopped while this job was running on instance i-0abc") {
		t.Errorf("log of the recovered job = %q; want the earlier output, then the failure message on a line of its own", trace)
	}
	if snap.Bytesize != int64(len(snap.Trace)) {
		t.Errorf("final update says %d bytes, GitLab stored %d", snap.Bytesize, len(snap.Trace))
	}
	if snap.Checksum != "" && snap.Checksum != fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(snap.Trace)) {
		t.Errorf("final update's checksum %s does not match the stored log", snap.Checksum)
	}
}

// The three ways a job can be left over are told apart in its log.
func TestRecoveredJobMessages(t *testing.T) {
	tests := []struct {
		name string
		job  executors.RecoveredJob
		want string
	}{
		{"on an instance", executors.RecoveredJob{Instance: "i-0abc"}, "stopped while this job was running on instance i-0abc"},
		{"before an instance", executors.RecoveredJob{}, "stopped before this job got an instance; it did not run"},
		{"ended", executors.RecoveredJob{Ended: true}, "stopped after this job ended but before its final state reached GitLab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, gitlabsim.Options{})
			id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "left-over", Script: []string{"true"}})
			taken := r.takeJob(id)
			rj := tt.job
			rj.ID, rj.Token, rj.URL = id, taken.Token, r.url
			r.writeConfig(runnerSettings{concurrent: 1})
			r.startWith(&recoveringExec{scriptExec: r.exec, jobs: []executors.RecoveredJob{rj}}, time.Hour)
			if snap := r.finished(id); !strings.Contains(string(snap.Trace), tt.want) {
				t.Errorf("log %q does not say %q", snap.Trace, tt.want)
			}
		})
	}
}

// TestGracefulStopReportsRecoveredJobsFirst: a graceful stop right after the start must not cut the
// report of a job the previous process left running short; it would be forgotten unreported.
func TestGracefulStopReportsRecoveredJobsFirst(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "interrupted", Script: []string{"sleep 600"}})
	taken := r.takeJob(id)
	// Every answer is slow, so reporting the job (a PATCH and a PUT) takes longer than the stop.
	r.sim.SetFaults(gitlabsim.Faults{Latency: 300 * time.Millisecond})
	rec := &recoveringExec{scriptExec: r.exec, jobs: []executors.RecoveredJob{{ID: id, Token: taken.Token, URL: r.url, Instance: "i-0abc"}}}
	r.writeConfig(runnerSettings{concurrent: 1})
	r.startWith(rec, time.Hour)
	waitLog(t, r.logs, "fleetrunner is running")
	r.m.StopGracefully()
	if err := r.wait(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if snap, _ := r.sim.Job(id); snap.Status != gitlabsim.StatusFailed {
		t.Errorf("job interrupted by the previous process is %s after a graceful stop; want failed (reported)", snap.Status)
	}
}
