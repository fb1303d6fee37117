package dockerautoscaler

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// startManager writes the rig's runner into a config.toml and runs the real manager on it in-process.
// It returns the provider the manager made and a stop function that waits for the manager to end.
func (r *rig) startManager(t *testing.T, concurrent int) (*Provider, func()) {
	t.Helper()
	path := filepath.Join(r.dir, "config.toml")
	if err := config.Save(path, &config.Config{Concurrent: concurrent, CheckInterval: 1, ShutdownTimeout: 30,
		Runners: []*config.RunnerConfig{r.runner}}); err != nil {
		t.Fatal(err)
	}
	p, stop := testrig.StartManager(t, testLogger(t), path, "s_manager", Name, New(testPlugins))
	return p.(*Provider), stop
}

// fleetWatch samples the taskscaler's instances until stopped: the most jobs any instance held at
// once, the highest use count, and every instance ever seen.
type fleetWatch struct {
	mu          sync.Mutex
	maxAcquired map[string]int
	maxUse      int
	stop        chan struct{}
	done        chan struct{}
}

func watchFleet(p *Provider) *fleetWatch {
	w := &fleetWatch{maxAcquired: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			w.mu.Lock()
			for _, in := range p.Instances() {
				w.maxAcquired[in.ID] = max(w.maxAcquired[in.ID], in.Acquired)
				w.maxUse = max(w.maxUse, in.UseCount)
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *fleetWatch) end() {
	close(w.stop)
	<-w.done
}

// avail is how many more jobs an instance can take now.
func avail(in taskscaler.InstanceInfo, capacity, maxUse int) int {
	if in.State != "ready" {
		return 0
	}
	return max(0, min(capacity-in.Acquired, maxUse-in.UseCount-in.Acquired))
}

// TestManyJobsThroughTheManager: 30 jobs through the real manager on the local plugin with
// capacity_per_instance=2, max_instances=4, max_use_count=4 and idle_count=2 (two idle slots). Every job
// succeeds, no instance holds more than two jobs, instances are retired after four jobs, and once the
// work is done idle_time scales the fleet back in to what holds two idle slots.
func TestManyJobsThroughTheManager(t *testing.T) {
	t.Parallel()
	const (
		jobs     = 30
		capacity = 2
		maxUse   = 4
		maxInst  = 4
	)
	r := newRig(t)
	r.runner.RequestConcurrency = 4
	ac := r.runner.Autoscaler
	ac.CapacityPerInstance, ac.MaxInstances, ac.MaxUseCount = capacity, maxInst, maxUse
	preemptive := false
	ac.Policy = []config.AutoscalerPolicyConfig{{IdleCount: 2, IdleTime: 2 * time.Second, PreemptiveMode: &preemptive}}
	p, stop := r.startManager(t, capacity*maxInst)

	// idle_count = 2 slots = one instance of capacity 2, before any job.
	testrig.WaitFor(t, 30*time.Second, "two idle slots", func() bool {
		s := p.Stats()
		return s.Slots.Idle == 2 && s.Instances.Ready == 1
	})

	w := watchFleet(p)
	ids := make([]int64, jobs)
	for i := range ids {
		ids[i] = r.sim.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("job-%02d", i), Image: r.image,
			Script: []string{"echo job $CI_JOB_NAME", "sleep 1"}})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	perInstance := map[string]int{}
	for _, id := range ids {
		snap, err := r.sim.WaitFinished(ctx, id)
		if err != nil {
			t.Fatalf("job %d did not finish: %v (stats %+v)", id, err, p.Stats())
		}
		if snap.Status != gitlabsim.StatusSuccess {
			t.Errorf("job %d: %s %s; trace:\n%s", id, snap.Status, snap.FailureReason, snap.Trace)
		}
		on := connectedTo(snap.Trace)
		if len(on) != 1 {
			t.Errorf("job %d ran on %v, want exactly one instance", id, on)
			continue
		}
		perInstance[on[0]]++
	}
	w.end()

	for id, n := range w.maxAcquired {
		if n > capacity {
			t.Errorf("instance %s held %d jobs at once; capacity_per_instance is %d", id, n, capacity)
		}
	}
	if w.maxUse > maxUse {
		t.Errorf("an instance reached use count %d; max_use_count is %d", w.maxUse, maxUse)
	}
	for id, n := range perInstance {
		if n > maxUse {
			t.Errorf("job logs show %d jobs on instance %s; max_use_count is %d", n, id, maxUse)
		}
	}
	if len(perInstance) < jobs/maxUse {
		t.Errorf("jobs ran on %d instances; with max_use_count %d at least %d were needed", len(perInstance), maxUse, jobs/maxUse)
	}

	// Scale-in: instances that reached max_use_count are retired, and beyond the two idle slots every
	// instance goes after idle_time.
	testrig.WaitFor(t, 30*time.Second, "scale-in to two idle slots", func() bool {
		s := p.Stats()
		if s.Instances.Removing > 0 || s.Instances.Draining > 0 || s.Slots.Idle < 2 {
			return false
		}
		for _, in := range p.Instances() {
			if s.Slots.Idle-avail(in, capacity, maxUse) >= 2 {
				return false // removing it would still leave two idle slots
			}
		}
		return true
	})
	s := p.Stats()
	t.Logf("instances: %d created, %d removed, %d ready at the end; jobs per instance %v",
		s.Counters.InstancesCreated, s.Counters.InstancesRemoved, s.Instances.Ready, perInstance)
	if int(s.Counters.InstancesRemoved) < len(perInstance)-maxInst {
		t.Errorf("only %d instances removed after %d were used", s.Counters.InstancesRemoved, len(perInstance))
	}
	stop()
}

// TestReloadAppliesPolicies: a policy list changed in config.toml reaches the taskscaler through the
// manager's reload alone (no job runs in between): an idle target appears and is served.
func TestReloadAppliesPolicies(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	p, stop := r.startManager(t, 2)
	defer stop()
	if s := p.Stats(); s.IdleTarget != 0 {
		t.Fatalf("before the reload: %+v", s)
	}

	r.runner.Autoscaler.Policy = []config.AutoscalerPolicyConfig{{IdleCount: 2, IdleTime: time.Minute}}
	if err := config.Save(filepath.Join(r.dir, "config.toml"), &config.Config{Concurrent: 2, CheckInterval: 1, ShutdownTimeout: 30,
		Runners: []*config.RunnerConfig{r.runner}}); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 30*time.Second, "the reloaded idle target served", func() bool {
		s := p.Stats()
		return s.IdleTarget == 2 && s.Slots.Idle >= 2
	})
}
