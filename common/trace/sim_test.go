package trace_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/common/trace"
)

const secret = "hunter2-very-secret-value"

type rig struct {
	sim   *gitlabsim.Server
	c     *gitlab.Client
	token string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	sim, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	c, err := gitlab.NewClient(logging.Discard(), gitlab.ClientConfig{URL: sim.URL(), Info: gitlab.NewVersionInfo("test", "bash", nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, token := sim.CreateRunner(gitlabsim.RunnerOptions{})
	return &rig{sim: sim, c: c, token: token}
}

// take enqueues a job with a masked variable and asks for it until GitLab hands it out.
func (r *rig) take(t *testing.T) *job.Job {
	t.Helper()
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "j", Script: []string{"true"},
		Variables: []job.Variable{{Key: "PASSWORD", Value: secret, Masked: true}}})
	for range 200 {
		res := r.c.RequestJob(t.Context(), r.token, "s_trace")
		if res.Status == http.StatusCreated && res.Err == nil {
			if res.Job.ID != id {
				t.Fatalf("got job %d, want %d", res.Job.ID, id)
			}
			return res.Job
		}
	}
	t.Fatal("no job handed out after 200 requests")
	return nil
}

func (r *rig) newTrace(j *job.Job, o trace.Options) *trace.Trace {
	o.MaskPhrases = j.Variables.MaskedValues()
	o.TokenPrefixes = j.Features.TokenMaskPrefixes
	if o.UpdateInterval == 0 {
		o.UpdateInterval = 20 * time.Millisecond
	}
	return trace.New(r.c, gitlab.JobCredentials{ID: j.ID, Token: j.Token}, o)
}

// checkStored asserts that GitLab holds exactly the trace's bytes, with its checksum, and no secret.
func (r *rig) checkStored(t *testing.T, j *job.Job, tr *trace.Trace, status string) gitlabsim.JobSnapshot {
	t.Helper()
	snap, _ := r.sim.Job(j.ID)
	if snap.Status != status {
		t.Fatalf("job status = %s, want %s", snap.Status, status)
	}
	if !bytes.Equal(snap.Trace, tr.Bytes()) {
		t.Fatalf("stored trace differs from what was written:\nstored %q\nlocal  %q", snap.Trace, tr.Bytes())
	}
	if snap.Checksum != tr.Checksum() || snap.Bytesize != tr.Size() {
		t.Fatalf("reported %s/%d, trace has %s/%d", snap.Checksum, snap.Bytesize, tr.Checksum(), tr.Size())
	}
	if bytes.Contains(snap.Trace, []byte(secret)) || bytes.Contains(snap.Trace, []byte(j.Token)) {
		t.Fatalf("a secret reached GitLab: %q", snap.Trace)
	}
	return snap
}

func writeLines(t *testing.T, tr *trace.Trace, n int) {
	t.Helper()
	for i := range n {
		if _, err := fmt.Fprintf(tr, "line %d: %s and the job token %s\n", i, strings.Repeat("x", i%50), "glcbt-abc"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSimMaskedValueSplitAcrossWrites(t *testing.T) {
	r := newRig(t)
	for _, split := range []int{1, len(secret) / 2, len(secret) - 1} {
		j := r.take(t)
		tr := r.newTrace(j, trace.Options{})
		tr.Start()
		line := "the password is " + secret + "\n"
		cut := strings.Index(line, secret) + split
		_, _ = tr.Write([]byte(line[:cut]))
		_, _ = tr.Write([]byte(line[cut:]))
		_, _ = tr.Write([]byte("token " + j.Token + "\n"))
		if err := tr.Finish(t.Context(), gitlab.JobSuccess, "", 0); err != nil {
			t.Fatal(err)
		}
		snap := r.checkStored(t, j, tr, gitlabsim.StatusSuccess)
		if !bytes.Contains(snap.Trace, []byte("the password is [MASKED]\n")) || !bytes.Contains(snap.Trace, []byte("token glcbt-[MASKED]\n")) {
			t.Fatalf("masked output missing: %q", snap.Trace)
		}
	}
}

func TestSimTraceProtocol(t *testing.T) {
	tests := []struct {
		name   string
		faults gitlabsim.Faults
		check  func(t *testing.T, snap gitlabsim.JobSnapshot)
	}{
		{name: "416 recovery", faults: gitlabsim.Faults{RangeMismatch416: 3}},
		{name: "202 final-state retry", faults: gitlabsim.Faults{FinalState202: 2}, check: func(t *testing.T, snap gitlabsim.JobSnapshot) {
			if snap.Updates < 3 {
				t.Fatalf("%d PUTs, want the final state repeated after each 202", snap.Updates)
			}
		}},
		{name: "412 resend", faults: gitlabsim.Faults{TraceValidation412: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			j := r.take(t)
			r.sim.SetFaults(tc.faults)
			tr := r.newTrace(j, trace.Options{})
			tr.Start()
			writeLines(t, tr, 200)
			if err := tr.Finish(t.Context(), gitlab.JobFailed, job.ScriptFailure, 3); err != nil {
				t.Fatal(err)
			}
			snap := r.checkStored(t, j, tr, gitlabsim.StatusFailed)
			if snap.FailureReason != "script_failure" || snap.ExitCode != 3 {
				t.Fatalf("reason %s exit %d", snap.FailureReason, snap.ExitCode)
			}
			if tc.check != nil {
				tc.check(t, snap)
			}
		})
	}
}

func TestSimOutputLimit(t *testing.T) {
	r := newRig(t)
	j := r.take(t)
	tr := r.newTrace(j, trace.Options{OutputLimit: 1000})
	tr.Start()
	writeLines(t, tr, 100)
	if err := tr.Finish(t.Context(), gitlab.JobSuccess, "", 0); err != nil {
		t.Fatal(err)
	}
	snap := r.checkStored(t, j, tr, gitlabsim.StatusSuccess)
	if !bytes.Contains(snap.Trace, []byte("Job's log exceeded limit of 1000 bytes.")) || bytes.Contains(snap.Trace, []byte("line 99")) {
		t.Fatalf("trace = %q", snap.Trace)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second): // a hang guard, not a timing assertion
		t.Fatalf("%s was not signalled", what)
	}
}

func TestSimGracefulCancel(t *testing.T) {
	r := newRig(t)
	j := r.take(t)
	tr := r.newTrace(j, trace.Options{ForceSendInterval: time.Millisecond})
	tr.Start()
	writeLines(t, tr, 10)
	if err := r.sim.Cancel(j.ID); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, tr.Canceling(), "Canceling()")
	select {
	case <-tr.Aborted():
		t.Fatal("a graceful cancel must not abort")
	default:
	}
	_, _ = tr.Write([]byte("after_script ran\n"))
	if err := tr.Finish(t.Context(), gitlab.JobFailed, j.ReasonFor(job.JobCanceled), 0); err != nil {
		t.Fatal(err)
	}
	snap := r.checkStored(t, j, tr, gitlabsim.StatusCanceled)
	if !bytes.HasSuffix(snap.Trace, []byte("after_script ran\n")) {
		t.Fatalf("trace = %q", snap.Trace)
	}
}

func TestSimAbort(t *testing.T) {
	r := newRig(t)
	j := r.take(t)
	tr := r.newTrace(j, trace.Options{ForceSendInterval: time.Millisecond})
	tr.Start()
	writeLines(t, tr, 10)
	// canceling, then a forced cancel: the job is canceled and every request gets 403.
	if err := r.sim.Cancel(j.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.sim.Cancel(j.ID); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, tr.Aborted(), "Aborted()")
	if err := tr.Finish(t.Context(), gitlab.JobFailed, j.ReasonFor(job.JobCanceled), 0); !errors.Is(err, trace.ErrAborted) {
		t.Fatalf("Finish = %v, want ErrAborted", err)
	}
	if snap, _ := r.sim.Job(j.ID); snap.Status != gitlabsim.StatusCanceled {
		t.Fatalf("status %s", snap.Status)
	}
}

func TestSimThirtyPercentErrors(t *testing.T) {
	r := newRig(t)
	for range 5 {
		j := func() *job.Job {
			r.sim.SetFaults(gitlabsim.Faults{})
			return r.take(t)
		}()
		r.sim.SetFaults(gitlabsim.Faults{ErrorRate: 0.3, DropRate: 0.05})
		tr := r.newTrace(j, trace.Options{Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
		tr.Start()
		writeLines(t, tr, 300)
		_, _ = tr.Write([]byte("password: " + secret[:5]))
		_, _ = tr.Write([]byte(secret[5:] + "\n"))
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		err := tr.Finish(ctx, gitlab.JobSuccess, "", 0)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		r.sim.SetFaults(gitlabsim.Faults{})
		r.checkStored(t, j, tr, gitlabsim.StatusSuccess)
	}
}
