package manager_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
)

func managerGoroutines() []string {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	var out []string
	for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "fleetrunner/manager.") && !strings.Contains(g, "manager_test.") {
			out = append(out, g)
		}
	}
	return out
}

// TestGracefulStopLeavesNoGoroutines: after Run returned from a graceful stop, none of the manager's
// goroutines is left.
func TestGracefulStopLeavesNoGoroutines(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 2, requestConcurrency: 2})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "one", Script: []string{"echo hi"}})
	r.start(0)
	r.finished(id)
	r.m.StopGracefully()
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	var left []string
	for range 50 { // goroutines that already ended may still be on their way out
		if left = managerGoroutines(); len(left) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%d manager goroutines left after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
}
