package manager_test

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

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

// panickyExec panics in Reserve once, like a buggy executor.
type panickyExec struct {
	*scriptExec
	panicked atomic.Bool
}

func (e *panickyExec) Reserve(ctx context.Context) (executors.Reservation, error) {
	if !e.panicked.Swap(true) {
		panic("reserve exploded")
	}
	return e.scriptExec.Reserve(ctx)
}

// TestPanickingReserveDoesNotStopTheRunner: a panic in the executor fails a round, not the process.
func TestPanickingReserveDoesNotStopTheRunner(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 1})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after the panic", Script: []string{"echo fine"}})
	p := &panickyExec{scriptExec: r.exec}
	r.startWith(p, time.Hour)
	if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
		t.Errorf("job after a panicking Reserve: %s; want success", snap.Status)
	}
	if !strings.Contains(r.logs.String(), "reserve exploded") {
		t.Errorf("the panic is not logged:\n%s", r.logs.String())
	}
}

// deadlineExec records how much time its Shutdown was given.
type deadlineExec struct {
	*scriptExec
	left atomic.Int64
}

func (e *deadlineExec) Shutdown(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok {
		e.left.Store(int64(time.Until(d)))
	}
	return e.scriptExec.Shutdown(ctx)
}

// TestForcefulStopTimeoutStillShutsProvidersDown: when aborted jobs do not end within shutdown_timeout,
// the providers still get shutdown_timeout to remove their instances, not an expired context.
func TestForcefulStopTimeoutStillShutsProvidersDown(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 1})
	text := strings.Replace(string(mustRead(t, r.cfgPath)), "shutdown_timeout = 5", "shutdown_timeout = 1", 1)
	if err := os.WriteFile(r.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "stuck", Script: []string{"echo start", "wait"}})
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	p := &deadlineExec{scriptExec: r.exec}
	r.startWith(p, time.Hour)
	if err := r.exec.waitStarted(r.ctx(), id); err != nil {
		t.Fatal(err)
	}
	r.exec.mu.Lock()
	r.exec.blockAbort = stuck
	r.exec.mu.Unlock()
	r.m.StopForcefully()
	if err := r.wait(); err == nil || !strings.Contains(err.Error(), "shutdown_timeout") {
		t.Errorf("forceful stop with a stuck job: %v; want an error naming shutdown_timeout", err)
	}
	if _, _, _, _, shutdowns := r.exec.stats(); shutdowns != 1 {
		t.Fatalf("provider shut down %d times; want 1", shutdowns)
	}
	if left := time.Duration(p.left.Load()); left <= 0 {
		t.Errorf("provider shutdown got %s; want up to shutdown_timeout", left)
	}
}

// TestNewTokenEndsUnhealthyPause: requests sent with a token reset outside this process are refused
// until config.toml carries the new token; those refusals paused the runner, and the new token must end
// the pause rather than leave the runner idle for unhealthy_interval.
func TestNewTokenEndsUnhealthyPause(t *testing.T) {
	r := newRotationRig(t, `  unhealthy_requests_limit = 2
  unhealthy_interval = "1h"
  [runners.feature_flags]
    FF_DISABLE_AUTOMATIC_TOKEN_ROTATION = true`)
	r.proxy.open.Store(true)
	r.start(time.Hour)
	c, err := gitlab.NewClient(logrus.New(), gitlab.ClientConfig{URL: r.sim.URL()})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.ResetToken(r.ctx(), r.rotating)
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	waitLog(t, r.logs, "runner is unhealthy")
	edited := strings.Replace(string(r.initialFile), r.rotating, resp.Token, 1)
	if err := os.WriteFile(r.cfgPath, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	r.m.Reload()
	waitLog(t, r.logs, "runner token changed in config.toml")
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after", Script: []string{"echo new token"}})
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	snap, err := r.sim.WaitFinished(ctx, id)
	if err != nil || snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job after the new token was configured: %v %s; want success (the pause must end)", err, snap.Status)
	}
}
