package manager_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// leaseObserver records RunnerLease calls.
type leaseObserver struct {
	manager.Observer
	mu     sync.Mutex
	leases []manager.LeaseInfo
}

func (o *leaseObserver) RunnerLease(_ manager.RunnerInfo, l manager.LeaseInfo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.leases = append(o.leases, l)
}

func (o *leaseObserver) standbys() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, l := range o.leases {
		if l.Standby {
			n++
		}
	}
	return n
}

// TestStandbyUntilTheFactoryServes: while the executor's factory says another manager manages the
// runner's fleet (executors.StandbyError), the manager requests no job for it and asks the factory
// again at the error's RetryAt; once the factory builds the provider, the runner is served.
func TestStandbyUntilTheFactoryServes(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	var asked atomic.Int32
	held := make(chan struct{})
	r.registry = executors.Registry{config.ExecutorDocker: func(rc *config.RunnerConfig, deps executors.Deps) (executors.Provider, error) {
		asked.Add(1)
		select {
		case <-held:
			return r.exec, nil
		default:
			return nil, &executors.StandbyError{Holder: "s_other on host-2 (pid 1)", HolderSince: time.Now().Add(-time.Minute),
				RetryAt: time.Now().Add(200 * time.Millisecond), Err: errors.New("lease held")}
		}
	}}
	obs := &leaseObserver{Observer: nopObserver{}}
	r.observer = obs
	r.writeConfig(runnerSettings{concurrent: 2, requestConcurrency: 1})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-takeover", Script: []string{"echo done"}})
	r.start(0)
	testrig.WaitFor(t, 10*time.Second, "the factory asked again while on standby", func() bool { return asked.Load() >= 3 })
	if snap, _ := r.sim.Job(id); snap.Status != gitlabsim.StatusPending {
		t.Fatalf("a job was taken on standby: %s", snap.Status)
	}
	if obs.standbys() == 0 {
		t.Error("the observer was not told the runner is on standby")
	}
	waitLog(t, r.logs, "standby: another manager manages this runner's fleet")
	close(held)
	if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
		t.Errorf("job after the takeover: %s", snap.Status)
	}
	waitLog(t, r.logs, "took the runner's fleet over")
}

// losingProvider is the test executor until lost is set; then Reserve says it gave its fleet up.
type losingProvider struct {
	executors.Provider
	lost *atomic.Bool
}

func (p losingProvider) Reserve(ctx context.Context) (executors.Reservation, error) {
	if p.lost.Load() {
		return nil, &executors.StandbyError{RetryAt: time.Now(), Err: executors.ErrNoCapacity}
	}
	return p.Provider.Reserve(ctx)
}

// TestProviderThatGaveItsFleetUpIsRebuilt: a provider whose Reserve reports it gave its fleet up is shut
// down, and the runner's provider is built again, which serves the runner.
func TestProviderThatGaveItsFleetUpIsRebuilt(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	var built atomic.Int32
	lost := &atomic.Bool{}
	r.registry = executors.Registry{config.ExecutorDocker: func(*config.RunnerConfig, executors.Deps) (executors.Provider, error) {
		if built.Add(1) > 1 {
			lost.Store(false)
		}
		return losingProvider{Provider: r.exec, lost: lost}, nil
	}}
	r.writeConfig(runnerSettings{concurrent: 2, requestConcurrency: 1})
	r.start(0)
	if snap := r.finished(r.sim.Enqueue(gitlabsim.JobSpec{Name: "before", Script: []string{"echo done"}})); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job before: %s", snap.Status)
	}
	lost.Store(true)
	testrig.WaitFor(t, 10*time.Second, "the provider built again", func() bool { return built.Load() == 2 })
	if snap := r.finished(r.sim.Enqueue(gitlabsim.JobSpec{Name: "after", Script: []string{"echo done"}})); snap.Status != gitlabsim.StatusSuccess {
		t.Errorf("job after the provider was rebuilt: %s", snap.Status)
	}
	if _, _, _, _, shutdowns := r.exec.stats(); shutdowns != 1 {
		t.Errorf("the provider that gave its fleet up was shut down %d times, want 1", shutdowns)
	}
	waitLog(t, r.logs, "the executor gave the runner's fleet up")
}
