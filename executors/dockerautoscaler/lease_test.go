package dockerautoscaler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state/dynamostate"
)

// lease is the lease every test here gives the runner: short, so that takeovers take seconds.
const lease = 3 * time.Second

// newLeaseRig is the rig with the dynamodb state backend on moto's DynamoDB (testrig.StateTable) and the
// local plugin keeping its instances in pluginDir, so that every manager on the rig's config shares the
// fleet as managers on different hosts share an Auto Scaling group.
func newLeaseRig(t *testing.T, capacity, maxInstances int, idleTime time.Duration) (r *rig, pluginDir, endpoint string) {
	t.Helper()
	endpoint = testrig.StateTable(t)
	r, pluginDir = newSharedRig(t, capacity, maxInstances, idleTime)
	r.runner.Autoscaler.StateStorage = config.StateStorage{Backend: config.StateBackendDynamoDB, DynamoDBTable: testrig.StateTableName,
		DynamoDBRegion: testrig.MotoRegion, DynamoDBEndpoint: endpoint, LeaseDuration: lease}
	return r, pluginDir, endpoint
}

// newSharedRig is the rig with the local plugin keeping its instances in pluginDir, where every
// provider on the rig's runner finds them, and one idle instance wanted.
func newSharedRig(t *testing.T, capacity, maxInstances int, idleTime time.Duration) (r *rig, pluginDir string) {
	t.Helper()
	r = newRig(t)
	pluginDir = filepath.Join(r.dir, "local-state")
	ac := r.runner.Autoscaler
	ac.CapacityPerInstance, ac.MaxInstances = capacity, maxInstances
	ac.PluginConfig["state_dir"] = pluginDir
	ac.Policy = []config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: idleTime}}
	removeInstancesAtEnd(t, pluginDir, ac.PluginConfig["base_address"].(string))
	return r, pluginDir
}

// startAs starts a provider on the rig's runner as the manager with systemID; stopProvider shuts one
// down. Unlike newProvider they leave its stop to the test, which plays several managers in turn.
func (r *rig) startAs(t *testing.T, systemID string) (*Provider, error) {
	return newProvider(r.runner, executors.Deps{Logger: testLogger(t), ConfigDir: r.dir, SystemID: systemID}, testPlugins, docker.Options{})
}

func stopProvider(t *testing.T, p *Provider) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestStateLease runs the provider on the dynamodb state backend (moto's DynamoDB, the local plugin's
// real sshd instances): a second manager on the same runner is refused and told who holds the fleet;
// a graceful stop hands the lease over, and the next manager starts at once and adopts the instances;
// a manager whose lease another took over (as after a pause longer than the lease) stops taking jobs
// and scaling, and its stop leaves the new holder's lease alone.
func TestStateLease(t *testing.T) {
	r, pluginDir, endpoint := newLeaseRig(t, 1, 2, time.Minute)
	start := func(systemID string) (*Provider, error) { return r.startAs(t, systemID) }
	stop := func(p *Provider) { stopProvider(t, p) }

	first, err := start("s_first")
	if err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 30*time.Second, "the first manager's idle instance ready", func() bool { return first.Stats().Instances.Ready == 1 })
	instance := first.Instances()[0].ID

	if second, err := start("s_second"); err == nil {
		stop(second)
		t.Fatal("a second manager started on a runner whose lease the first holds")
	} else if se := (*executors.StandbyError)(nil); !errors.As(err, &se) || !errors.Is(err, state.ErrHeld) ||
		!strings.HasPrefix(se.Holder, "s_first on ") || !se.RetryAt.After(time.Now()) {
		t.Fatalf("second manager refused with %v; want a StandbyError naming s_first until its lease runs out", err)
	}

	stop(first)
	second, err := start("s_second")
	if err != nil {
		t.Fatalf("the second manager did not start after the first handed the lease over: %v", err)
	}
	if !slices.ContainsFunc(second.Instances(), func(in taskscaler.InstanceInfo) bool { return in.ID == instance }) {
		t.Errorf("the second manager did not adopt instance %s: %v", instance, second.Instances())
	}

	// A third manager takes the lease as if the second had been cut off past its expiry.
	later, err := dynamostate.New(t.Context(), dynamostate.Config{Table: testrig.StateTableName, Region: testrig.MotoRegion, Endpoint: endpoint,
		Now: func() time.Time { return time.Now().Add(time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	third := later.Lease(state.Key(stateRunner(r.runner)), state.Holder{SystemID: "s_third", Host: "elsewhere", PID: 1}, lease)
	if _, err := third.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 10*time.Second, "the second manager to notice it lost the lease", func() bool {
		_, err := second.Reserve(t.Context())
		return errors.Is(err, errLeaseLost) && errors.Is(err, executors.ErrNoCapacity)
	})
	stop(second)
	tenure, err := third.Holder(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if tenure.Holder.SystemID != "s_third" {
		t.Errorf("after the stale manager stopped the lease is held by %s, want s_third", tenure.Holder)
	}
	if got := pluginInstances(t, pluginDir); !slices.Contains(got, instance) {
		t.Errorf("the stale manager's stop removed instance %s (left: %v); the new holder manages it", instance, got)
	}
}

// TestStandbyTakesOver runs two real managers (child processes) on one runner with the dynamodb state
// backend: the second waits on standby while the first serves; kill -9 of the first while a job runs
// makes the second take the fleet over once the lease runs out: it adopts the instances, reports the
// job the first was running as a system failure at once, and takes new jobs. A graceful stop of the
// second hands the lease back. The figure: seconds from the kill to the standby's first job starting.
func TestStandbyTakesOver(t *testing.T) {
	r, _, _ := newLeaseRig(t, 1, 3, time.Minute)
	configPath, logA := r.managerFiles(t)
	logB := filepath.Join(r.dir, "standby.log")
	dumpFile(t, logB)

	active := startChild(t, configPath, logA)
	testrig.WaitFor(t, 30*time.Second, "the first manager to hold the lease", func() bool { return fileHas(logA, "holding the runner's state lease") })
	standby := startChild(t, configPath, logB)
	testrig.WaitFor(t, 30*time.Second, "the second manager on standby", func() bool { return fileHas(logB, "standby: another manager manages this runner's fleet") })

	inFlight := r.sim.Enqueue(gitlabsim.JobSpec{Name: "in-flight", Image: r.image, Script: []string{"echo started-A", "sleep 60"}})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if _, err := r.sim.WaitJob(ctx, inFlight, func(j gitlabsim.JobSnapshot) bool { return strings.Contains(string(j.Trace), "started-A") }); err != nil {
		t.Fatalf("the in-flight job never started: %v", err)
	}
	if fileHas(logB, "job received") {
		t.Fatal("the standby manager took a job while the first one served the runner")
	}
	active.kill()
	killedAt := time.Now()
	next := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-takeover", Image: r.image, Script: []string{"echo started-B"}})
	if _, err := r.sim.WaitJob(ctx, next, func(j gitlabsim.JobSnapshot) bool { return strings.Contains(string(j.Trace), "started-B") }); err != nil {
		t.Fatalf("the standby never ran a job after the kill: %v", err)
	}
	t.Logf("kill -9 of the active manager to the standby's first job starting: %.1f s (lease %s)", time.Since(killedAt).Seconds(), lease)
	snap, err := r.sim.WaitFinished(ctx, inFlight)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Status != gitlabsim.StatusFailed || snap.FailureReason != "runner_system_failure" || !strings.Contains(string(snap.Trace), "the runner manager stopped while this job was running") {
		t.Errorf("the killed manager's job: %s %q, want failed runner_system_failure with the reason in its log:\n%s", snap.Status, snap.FailureReason, snap.Trace)
	}
	if snap, err := r.sim.WaitFinished(ctx, next); err != nil || snap.Status != gitlabsim.StatusSuccess {
		t.Errorf("the job after the takeover: %v %s", err, snap.Status)
	}
	if !fileHas(logB, "took the runner's fleet over") || !fileHas(logB, "adopted") {
		t.Error("the standby's log does not say it took the fleet over and adopted the instances")
	}

	standby.stop(t)
	if !fileHas(logB, "released the runner's state lease") {
		t.Error("the graceful stop did not hand the lease over")
	}
}

// fileHas reports whether the file at path contains s.
func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// TestLostLeaseReturnsToStandby: a manager (child process) whose lease another manager took over, as
// after a pause or a network cut longer than the lease, gives the fleet up and waits on standby; when
// the other manager hands the lease back, it takes the fleet over again and runs jobs.
func TestLostLeaseReturnsToStandby(t *testing.T) {
	r, pluginDir, endpoint := newLeaseRig(t, 1, 2, time.Minute)
	configPath, logPath := r.managerFiles(t)

	m := startChild(t, configPath, logPath)
	defer m.stop(t)
	testrig.WaitFor(t, 30*time.Second, "the manager's idle instance ready", func() bool { return fileHas(logPath, "instance ready") })
	before := pluginInstances(t, pluginDir)

	later, err := dynamostate.New(t.Context(), dynamostate.Config{Table: testrig.StateTableName, Region: testrig.MotoRegion, Endpoint: endpoint,
		Now: func() time.Time { return time.Now().Add(time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	other := later.Lease(state.Key(stateRunner(r.runner)), state.Holder{SystemID: "s_other", Host: "elsewhere", PID: 1}, lease)
	if _, err := other.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 20*time.Second, "the manager to give the fleet up and wait on standby", func() bool {
		return fileHas(logPath, "gave the runner's fleet up") && fileHas(logPath, `holder="s_other on elsewhere (pid 1)"`)
	})
	if err := other.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	testrig.WaitFor(t, 20*time.Second, "the manager to take the fleet back", func() bool { return fileHas(logPath, "took the runner's fleet over") })
	t.Logf("lease handed back to the manager taking the fleet over: %.1f s", time.Since(released).Seconds())
	for _, id := range before {
		if !slices.Contains(pluginInstances(t, pluginDir), id) {
			t.Errorf("instance %s was removed while another manager held the lease (before %v, now %v)", id, before, pluginInstances(t, pluginDir))
		}
	}
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-return", Image: r.image, Script: []string{"echo ok"}})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if snap, err := r.sim.WaitFinished(ctx, id); err != nil || snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job after the manager took the fleet back: %v %s\n%s", err, snap.Status, snap.Trace)
	}
}

// TestFailovers kills the active manager of a pair with SIGKILL again and again while jobs arrive,
// starting a new standby in its place each time: every job ends in GitLab as a success or a clear
// system failure (none is lost silently), every failover's standby takes the fleet over and runs jobs,
// and at the end no instance runs that the state does not know (none orphaned). `go test` does 5
// failovers; FLEETRUNNER_SOAK=long (`make soak`) does the 20. The figures: seconds from each
// kill to the next job starting.
func TestFailovers(t *testing.T) {
	failovers := 5
	if os.Getenv("FLEETRUNNER_SOAK") == "long" {
		failovers = 20
	}
	r, pluginDir, endpoint := newLeaseRig(t, 2, 3, 20*time.Second)
	configPath, _ := r.managerFiles(t)
	start := func(n int) (*child, string) {
		logPath := filepath.Join(r.dir, fmt.Sprintf("manager-%02d.log", n))
		dumpFile(t, logPath)
		return startChild(t, configPath, logPath), logPath
	}

	active, activeLog := start(0)
	testrig.WaitFor(t, 30*time.Second, "the first manager to hold the lease", func() bool { return fileHas(activeLog, "holding the runner's state lease") })
	standby, standbyLog := start(1)
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(failovers+2)*time.Minute)
	defer cancel()
	var jobs []int64
	var takeovers []time.Duration
	for round := range failovers {
		testrig.WaitFor(t, 30*time.Second, "the new manager on standby", func() bool { return fileHas(standbyLog, "standby: another manager manages") })
		// A long job the kill cuts short, and short ones before and after it.
		long := r.sim.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("cut-%02d", round), Image: r.image, Script: []string{"echo running-long", "sleep 60"}})
		before := r.sim.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("before-%02d", round), Image: r.image, Script: []string{"echo ok"}})
		jobs = append(jobs, long, before)
		if _, err := r.sim.WaitJob(ctx, long, func(j gitlabsim.JobSnapshot) bool { return strings.Contains(string(j.Trace), "running-long") }); err != nil {
			t.Fatalf("round %d: the long job never started: %v", round, err)
		}
		if _, err := r.sim.WaitFinished(ctx, before); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		active.kill()
		killed := time.Now()
		after := r.sim.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("after-%02d", round), Image: r.image, Script: []string{"echo started-after"}})
		jobs = append(jobs, after)
		if _, err := r.sim.WaitJob(ctx, after, func(j gitlabsim.JobSnapshot) bool { return strings.Contains(string(j.Trace), "started-after") }); err != nil {
			t.Fatalf("round %d: no job started after the kill: %v", round, err)
		}
		takeovers = append(takeovers, time.Since(killed))
		active, activeLog = standby, standbyLog
		standby, standbyLog = start(round + 2)
	}
	for _, id := range jobs {
		snap, err := r.sim.WaitFinished(ctx, id)
		if err != nil {
			t.Fatalf("job %d never finished: %v", id, err)
		}
		clear := snap.Status == gitlabsim.StatusSuccess ||
			snap.Status == gitlabsim.StatusFailed && snap.FailureReason == "runner_system_failure" && strings.Contains(string(snap.Trace), "the runner manager stopped")
		if !clear {
			t.Errorf("job %d (%s) ended %s %q without a clear reason:\n%s", id, snap.Name, snap.Status, snap.FailureReason, snap.Trace)
		}
	}
	slices.Sort(takeovers)
	t.Logf("%d failovers (lease %s): kill -9 to the next job starting min %.1f s, median %.1f s, max %.1f s",
		failovers, lease, takeovers[0].Seconds(), takeovers[len(takeovers)/2].Seconds(), takeovers[len(takeovers)-1].Seconds())

	// A process stopped before it installed its signal handlers would die of SIGQUIT.
	testrig.WaitFor(t, 30*time.Second, "the last manager on standby", func() bool { return fileHas(standbyLog, "standby: another manager manages") })
	standby.stop(t)
	active.stop(t)
	store := mustTable(t, endpoint).Lease(state.Key(stateRunner(r.runner)), state.Holder{SystemID: "s_reader"}, lease).Store(t.Context())
	snap, err := store.Load()
	if err != nil || snap == nil {
		t.Fatalf("the final state: %v, %v", snap, err)
	}
	for _, id := range pluginInstances(t, pluginDir) {
		if !slices.ContainsFunc(snap.Instances, func(in state.Instance) bool { return in.ID == id }) {
			t.Errorf("instance %s runs but the final state does not know it (orphaned); state: %+v", id, snap.Instances)
		}
	}
}

func mustTable(t *testing.T, endpoint string) *dynamostate.Table {
	t.Helper()
	tbl, err := dynamostate.New(t.Context(), dynamostate.Config{Table: testrig.StateTableName, Region: testrig.MotoRegion, Endpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}
