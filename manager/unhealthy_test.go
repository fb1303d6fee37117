package manager_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// newBlipRig is a rig whose runner reaches GitLab through a proxy the test can take down.
func newBlipRig(t *testing.T, simOpts gitlabsim.Options) (*rig, *testrig.TCPProxy) {
	t.Helper()
	r := newRig(t, simOpts)
	proxy := testrig.NewTCPProxy(t, strings.TrimPrefix(r.sim.URL(), "http://"))
	r.url = "http://" + proxy.Addr()
	return r, proxy
}

// startUnhealthy starts a runner (one failure pauses it, for at most an hour) while GitLab is out of
// reach, and returns once the first pause began. The pauses the observer hears of go to pauses.
func startUnhealthy(t *testing.T, reloadInterval time.Duration) (*rig, *testrig.TCPProxy, *pauseObserver) {
	t.Helper()
	r, proxy := newBlipRig(t, gitlabsim.Options{})
	pauses := &pauseObserver{}
	r.observer = pauses
	r.writeConfig(runnerSettings{concurrent: 1, extra: `  unhealthy_requests_limit = 1
  unhealthy_interval = "1h"`})
	proxy.Down()
	r.start(reloadInterval)
	waitLog(t, r.logs, "runner is unhealthy (1 failed job requests in a row)")
	return r, proxy, pauses
}

// pauseObserver records the RunnerPaused calls: true for a pause, false for its end.
type pauseObserver struct {
	nopObserver
	mu     sync.Mutex
	paused []bool
}

func (o *pauseObserver) RunnerPaused(_ manager.RunnerInfo, until time.Time) {
	o.mu.Lock()
	o.paused = append(o.paused, !until.IsZero())
	o.mu.Unlock()
}

func (o *pauseObserver) calls() []bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.paused)
}

// nopObserver ignores what the manager tells it; tests embed it and override what they look at.
type nopObserver struct{}

func (nopObserver) Serving(bool)                                           {}
func (nopObserver) Configured(int, []manager.RunnerInfo)                   {}
func (nopObserver) ProviderStarted(manager.RunnerInfo, executors.Provider) {}
func (nopObserver) ProviderStopped(manager.RunnerInfo, executors.Provider) {}
func (nopObserver) RequestStarted(manager.RunnerInfo)                      {}
func (nopObserver) RequestEnded(manager.RunnerInfo, int)                   {}
func (nopObserver) APIResponse(manager.RunnerInfo, string, int)            {}
func (nopObserver) ProcessingFailure(manager.RunnerInfo, string)           {}
func (nopObserver) RunnerPaused(manager.RunnerInfo, time.Time)             {}
func (nopObserver) RunnerLease(manager.RunnerInfo, manager.LeaseInfo)      {}
func (nopObserver) JobStarted(manager.JobInfo) manager.JobObserver         { return nopJob{} }

type nopJob struct{}

func (nopJob) Stage(string)               {}
func (nopJob) Finished(job.FailureReason) {}

// A one-second outage fails the runner's parallel job requests all at once; that is one failure, not
// unhealthy_requests_limit of them, and job pickup goes on (it used to stop for unhealthy_interval).
func TestOneSecondOutageDoesNotStopJobPickup(t *testing.T) {
	t.Parallel()
	r, proxy := newBlipRig(t, gitlabsim.Options{LongPoll: 3 * time.Second})
	r.writeConfig(runnerSettings{concurrent: 3, requestConcurrency: 3, extra: `  unhealthy_interval = "1h"`})
	r.start(0)
	waitLog(t, r.logs, "no job")
	// The next round of three requests goes out within check_interval and is held by long polling:
	// the outage cuts all three.
	time.Sleep(1500 * time.Millisecond)
	proxy.Down()
	time.Sleep(time.Second)
	proxy.Up()
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-blip", Script: []string{"echo picked up"}})
	if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job queued after a 1 s outage: %s; want success", snap.Status)
	}
	if strings.Contains(r.logs.String(), "pause=1h0m0s") {
		t.Errorf("a 1 s outage paused the runner for unhealthy_interval:\n%s", r.logs.String())
	}
}

// A longer outage pauses the runner, but for seconds: one probe request follows each pause, a failed
// probe doubles the next one, and the first healthy answer ends it.
func TestUnhealthyPauseBacksOffWithProbes(t *testing.T) {
	t.Parallel()
	r, proxy, pauses := startUnhealthy(t, 0)
	waitLog(t, r.logs, "runner is still unhealthy (the probe request failed)")
	proxy.Up()
	waitLog(t, r.logs, "GitLab answers the runner again")
	// Each pause, the failed probe's included, and then its end reach the observer (the status page).
	if got := pauses.calls(); len(got) < 3 || !got[0] || !got[1] || got[len(got)-1] {
		t.Errorf("observer heard pauses %v, want at least two pauses (true) and then their end (false)", got)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "pause=5s") || !strings.Contains(logs, "pause=10s") {
		t.Errorf("pauses are not 5 s then 10 s:\n%s", logs)
	}
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-outage", Script: []string{"echo back"}})
	if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job after GitLab came back: %s; want success", snap.Status)
	}
}

// An operator who fixed the cause reloads: the pause ends at once.
func TestReloadEndsUnhealthyPause(t *testing.T) {
	t.Parallel()
	r, proxy, pauses := startUnhealthy(t, time.Hour)
	proxy.Up()
	r.m.Reload()
	waitLog(t, r.logs, "configuration reloaded: the unhealthy pause ends")
	if got := pauses.calls(); len(got) < 2 || got[len(got)-1] {
		t.Errorf("observer heard pauses %v, want the reload's end of the pause (false) last", got)
	}
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-reload", Script: []string{"echo reloaded"}})
	if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job after the reload: %s; want success", snap.Status)
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
	c, err := gitlab.NewClient(logging.Discard(), gitlab.ClientConfig{URL: r.sim.URL()})
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
