package manager_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

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
