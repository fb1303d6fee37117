package manager_test

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
)

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
