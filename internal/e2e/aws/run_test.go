package e2eaws_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// shortBoot boots like an EC2 instance, only quicker: running after 300 ms, sshd refusing connections
// for a second more, Docker half a second after sshd, each ±30%.
var shortBoot = local.BootModel{Running: 300 * time.Millisecond, SSHD: time.Second, Docker: 500 * time.Millisecond, Jitter: 0.3}

// groupSpec is an Auto Scaling group set up as deploy/aws recommends: empty at first, new instances
// protected from scale-in, AZRebalance suspended.
func groupSpec(name string, maxSize int) awssim.GroupSpec {
	return awssim.GroupSpec{Name: name, MaxSize: maxSize, Boot: &shortBoot,
		ProtectFromScaleIn: true, SuspendAZRebalance: true}
}

// groupWatch samples the group's desired capacity and InService instances as awssim sees them.
type groupWatch struct {
	mu           sync.Mutex
	desired      []int // each change of the desired capacity, starting with the first sample
	maxInService int
	stop, done   chan struct{}
}

func (w *awsWorld) watchGroup(t *testing.T) *groupWatch {
	gw := &groupWatch{stop: make(chan struct{}), done: make(chan struct{})}
	sample := func() {
		d, n := w.Sim.DesiredCapacity(w.Spec.Name), w.InService()
		gw.mu.Lock()
		defer gw.mu.Unlock()
		if len(gw.desired) == 0 || gw.desired[len(gw.desired)-1] != d {
			gw.desired = append(gw.desired, d)
		}
		gw.maxInService = max(gw.maxInService, n)
	}
	sample() // before anyone touched the group
	go func() {
		defer close(gw.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-gw.stop:
				sample()
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	t.Cleanup(gw.end)
	return gw
}

func (gw *groupWatch) end() {
	select {
	case <-gw.stop:
	default:
		close(gw.stop)
	}
	<-gw.done
}

func (gw *groupWatch) snapshot() (desired []int, maxInService int) {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	return slices.Clone(gw.desired), gw.maxInService
}

// runJobs enqueues n jobs and waits for all of them; every one must succeed. It returns how many jobs
// ran on each instance.
func runJobs(t *testing.T, r *jobRig, p *dockerautoscaler.Provider, n int, name string, script ...string) map[string]int {
	t.Helper()
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = r.gl.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("%s-%02d", name, i), Image: r.image, Script: script})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	perInstance := map[string]int{}
	for _, id := range ids {
		snap, err := r.gl.WaitFinished(ctx, id)
		if err != nil {
			t.Fatalf("job %d did not finish: %v (taskscaler %+v)", id, err, p.Stats())
		}
		if snap.Status != gitlabsim.StatusSuccess {
			t.Errorf("job %d (%s): %s %s; trace:\n%s", id, snap.Name, snap.Status, snap.FailureReason, snap.Trace)
			continue
		}
		on := ranOn(snap.Trace)
		if len(on) != 1 {
			t.Errorf("job %d ran on %v, want exactly one instance", id, on)
			continue
		}
		perInstance[on[0]]++
	}
	return perInstance
}

// settledAt reports whether the group and the taskscaler agree on exactly n ready instances and
// nothing else is starting or leaving.
func settledAt(w *awsWorld, p *dockerautoscaler.Provider, n int) bool {
	s := p.Stats()
	return w.Sim.DesiredCapacity(w.Spec.Name) == n && len(w.Sim.Instances(w.Spec.Name)) == n && w.InService() == n &&
		s.Instances.Ready == n && s.Instances.Requested+s.Instances.Creating+s.Instances.Readying+s.Instances.Removing == 0
}

// TestRunScalesFromZeroAndBack: `fleetrunner run` with plugin = "aws" on a group that starts empty runs
// 20 jobs on real sshd instances and Docker. The group grows from 0 to its MaxSize under the load and,
// idle_time after the last job, shrinks back to the one instance that holds the idle_count slot. Each
// instance got exactly one EC2 Instance Connect key, for its one pooled connection.
func TestRunScalesFromZeroAndBack(t *testing.T) {
	t.Parallel()
	const jobs, capacity, maxSize = 20, 2, 4
	r := newJobRig(t)
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-scale", maxSize), watchedSim)
	logins := w.watchLogins(t)
	gw := w.watchGroup(t)
	path := r.writeConfig(t, w, fleet{capacity: capacity, maxInstances: maxSize, idleCount: 1, idleTime: 2 * time.Second})
	p, stop := r.startManager(t, path)

	perInstance := runJobs(t, r, p, jobs, "scale", "echo job $CI_JOB_NAME", "sleep 1")
	// idle_count = 1 slot = one instance of capacity 2, once idle_time has passed.
	testrig.WaitFor(t, time.Minute, "the group to shrink back to one instance", func() bool { return settledAt(w, p, 1) })
	gw.end()
	stop()

	desired, maxInService := gw.snapshot()
	s := p.Stats()
	t.Logf("desired capacity over time %v; at most %d instances in service; jobs per instance %v", desired, maxInService, perInstance)
	t.Logf("taskscaler: %d instances created, %d removed; AWS calls %v", s.Counters.InstancesCreated, s.Counters.InstancesRemoved, w.Sim.Calls())
	if desired[0] != 0 {
		t.Errorf("the group started at desired capacity %d, want 0", desired[0])
	}
	if slices.Max(desired) != maxSize || maxInService != maxSize {
		t.Errorf("the group grew to desired %d with %d in service; %d jobs for %d slots should take it to MaxSize %d",
			slices.Max(desired), maxInService, jobs, capacity*maxSize, maxSize)
	}
	if last := desired[len(desired)-1]; last != 1 {
		t.Errorf("desired capacity ended at %d, want 1 (idle_count 1 with capacity_per_instance 2)", last)
	}
	if len(perInstance) < 2 {
		t.Errorf("jobs ran on %d instances; the load should have spread over several", len(perInstance))
	}
	if n := s.Counters.UnexpectedRemovals + s.Counters.MarkedUnhealthy + s.Counters.UnhealthyRemoved + s.Counters.ReadyFailures; n != 0 {
		t.Errorf("taskscaler counters %+v: want no lost, unhealthy or failed instances", s.Counters)
	}
	checkKeyPushes(t, w, logins, true)
}

// TestRunUnderThrottling: with 30% of all AWS calls throttled (Throttling, RequestLimitExceeded,
// ThrottlingException), the SDK's adaptive retryer backs off and every job still passes.
func TestRunUnderThrottling(t *testing.T) {
	t.Parallel()
	const jobs = 8
	r := newJobRig(t)
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-throttled", 4), watchedSim)
	w.Sim.SetFaults(awssim.Faults{ThrottleRate: 0.3})
	logins := w.watchLogins(t)
	path := r.writeConfig(t, w, fleet{capacity: 2, maxInstances: 4, idleCount: 1, idleTime: 2 * time.Second})
	p, stop := r.startManager(t, path)

	perInstance := runJobs(t, r, p, jobs, "throttled", "echo job $CI_JOB_NAME")
	stop()
	s := p.Stats()
	t.Logf("jobs per instance %v; AWS calls (throttled ones included) %v; taskscaler counters %+v", perInstance, w.Sim.Calls(), s.Counters)
	if s.Counters.ReadyFailures+s.Counters.UnhealthyRemoved+s.Counters.MarkedUnhealthy != 0 {
		t.Errorf("throttling cost instances: taskscaler counters %+v", s.Counters)
	}
	checkKeyPushes(t, w, logins, true)
}

// runningScript enqueues a job whose script runs for a minute and returns it, with the instance it runs
// on, once its script has started.
func runningScript(ctx context.Context, t *testing.T, r *jobRig, name string) (int64, string) {
	t.Helper()
	// The marker is computed by the shell, so it shows up only once the script runs, never in the
	// echoed command line.
	id := r.gl.Enqueue(gitlabsim.JobSpec{Name: name, Image: r.image, Script: []string{`echo "marker-$((6*7))"`, "sleep 60"}})
	snap, err := r.gl.WaitJob(ctx, id, func(j gitlabsim.JobSnapshot) bool {
		return j.Finished() || strings.Contains(string(j.Trace), "marker-42")
	})
	if err != nil || snap.Finished() {
		t.Fatalf("the script never got to run: %v; %s %s; trace:\n%s", err, snap.Status, snap.FailureReason, snap.Trace)
	}
	on := ranOn(snap.Trace)
	if len(on) != 1 {
		t.Fatalf("the job log names instances %v, want one", on)
	}
	return id, on[0]
}

// TestInstanceTerminatedFromOutside: a spot-style termination of the instance running a job's script
// fails that job with runner_system_failure within seconds (connector keepalive 1s); the group gets a
// replacement instance and the next jobs succeed on it.
func TestInstanceTerminatedFromOutside(t *testing.T) {
	t.Parallel()
	r := newJobRig(t)
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-spot", 2), watchedSim)
	logins := w.watchLogins(t)
	gw := w.watchGroup(t)
	// Both the group and the runner replace the lost instance (the runner sees its instance gone before
	// listings show the group's replacement); the surplus one goes once idle for idle_time.
	path := r.writeConfig(t, w, fleet{capacity: 2, maxInstances: 2, idleCount: 1, idleTime: 3 * time.Second})
	p, stop := r.startManager(t, path)
	testrig.WaitFor(t, time.Minute, "one ready instance", func() bool { return settledAt(w, p, 1) })

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	id, victim := runningScript(ctx, t, r, "interrupted")
	if err := w.Sim.TerminateFromOutside(victim); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()

	snap, err := r.gl.WaitFinished(ctx, id)
	if err != nil {
		t.Fatalf("the interrupted job never finished: %v", err)
	}
	t.Logf("job failed %s after its instance was terminated", time.Since(killedAt).Round(time.Millisecond))
	if snap.Status != gitlabsim.StatusFailed || snap.FailureReason != string(job.RunnerSystemFailure) {
		t.Errorf("interrupted job: %s %q, want failed %s; trace:\n%s", snap.Status, snap.FailureReason, job.RunnerSystemFailure, snap.Trace)
	}
	if !strings.Contains(string(snap.Trace), "was lost while the job ran") {
		t.Errorf("the job log does not say the instance was lost:\n%s", snap.Trace)
	}

	testrig.WaitFor(t, time.Minute, "a replacement instance", func() bool {
		return settledAt(w, p, 1) && !slices.ContainsFunc(w.Sim.Instances(w.Spec.Name), func(in awssim.InstanceInfo) bool { return in.ID == victim })
	})
	perInstance := runJobs(t, r, p, 2, "after", "echo job $CI_JOB_NAME")
	if _, ok := perInstance[victim]; ok {
		t.Errorf("a job ran on the terminated instance %s: %v", victim, perInstance)
	}
	gw.end()
	stop()
	desired, _ := gw.snapshot()
	t.Logf("desired capacity over time %v; jobs after the termination ran on %v; taskscaler counters %+v", desired, perInstance, p.Stats().Counters)
	checkKeyPushes(t, w, logins, false)
}

// TestRunOnABadDay: `fleetrunner run` on a group whose instances boot as EC2's do (running before
// their sshd answers, Docker after sshd), in listings that lag, with EC2 refusing launches for lack of
// capacity (all of them at first, then half): every job passes and every instance the runner asked
// for comes. Then the group replaces the idle instance after a failed health check: the runner sees it
// go, takes the replacement, runs jobs on it and ends with nothing left behind.
func TestRunOnABadDay(t *testing.T) {
	t.Parallel()
	const jobs, capacity, maxSize = 8, 2, 4
	r := newJobRig(t)
	opts := watchedSim
	opts.LaunchRetryDelay = 500 * time.Millisecond
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-bad-day", maxSize), opts)
	w.Sim.SetFaults(awssim.Faults{InsufficientCapacityRate: 1})
	logins := w.watchLogins(t)
	gw := w.watchGroup(t)
	path := r.writeConfig(t, w, fleet{capacity: capacity, maxInstances: maxSize, idleCount: 1, idleTime: 2 * time.Second})
	p, stop := r.startManager(t, path)

	// Capacity comes back, in part, once EC2 has refused a launch.
	capacityBack := make(chan struct{})
	go func() {
		defer close(capacityBack)
		for w.failedLaunches() == 0 {
			select {
			case <-t.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		w.Sim.SetFaults(awssim.Faults{InsufficientCapacityRate: 0.5})
	}()
	perInstance := runJobs(t, r, p, jobs, "bad-day", "echo job $CI_JOB_NAME", "sleep 1")
	<-capacityBack
	if w.failedLaunches() == 0 {
		t.Fatalf("no launch failed for lack of capacity; the test proved nothing")
	}
	testrig.WaitFor(t, time.Minute, "the group to shrink back to one instance", func() bool { return settledAt(w, p, 1) })
	asked := p.Stats().Counters.InstancesRequested
	_, maxInService := gw.snapshot()
	t.Logf("jobs per instance %v; at most %d instances in service; %d launches failed for lack of capacity, %d instances launched for %d asked",
		perInstance, maxInService, w.failedLaunches(), w.Launched(), asked)
	if w.Launched() != int(asked) {
		t.Errorf("the runner asked for %d instances and the group launched %d; want every one it asked for, and no more", asked, w.Launched())
	}

	victim := w.GroupIDs()[0]
	if err := w.Sim.ReplaceInstance(victim, awssim.ReplaceUnhealthy); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, time.Minute, "the runner to settle on the replacement", func() bool {
		return settledAt(w, p, 1) && !slices.Contains(w.GroupIDs(), victim)
	})
	after := runJobs(t, r, p, 2, "after-replacement", "echo job $CI_JOB_NAME")
	if _, ok := after[victim]; ok {
		t.Errorf("a job ran on the replaced instance %s: %v", victim, after)
	}
	testrig.WaitFor(t, time.Minute, "the group to settle at one instance", func() bool { return settledAt(w, p, 1) })
	gw.end()
	stop()

	desired, _ := gw.snapshot()
	c := p.Stats().Counters
	t.Logf("desired capacity over time %v; jobs after the replacement ran on %v; taskscaler counters %+v; the group launched %d; AWS calls %v",
		desired, after, c, w.Launched(), w.Sim.Calls())
	if c.UnexpectedRemovals != 1 || c.ReadyFailures != 0 {
		t.Errorf("taskscaler counters %+v: want exactly one instance lost (the replaced one) and no failed ready", c)
	}
	if int(c.InstancesCreated) != w.Launched() {
		t.Errorf("the runner counted %d new instances; the group launched %d", c.InstancesCreated, w.Launched())
	}
	checkKeyPushes(t, w, logins, true)
}
