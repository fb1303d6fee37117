package dockerautoscaler

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// child is a manager process: this test binary re-executed with childManagerEnv.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(t *testing.T, configPath, logPath string) *child {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childManagerEnv+"="+configPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() { c.kill() })
	return c
}

// kill is kill -9, and waits for the process to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// stop asks for a graceful stop and waits for it.
func (c *child) stop(t *testing.T) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.done:
		if code := c.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("manager exited with code %d", code)
		}
	case <-time.After(time.Minute):
		t.Error("manager did not stop within a minute of SIGQUIT")
		c.kill()
	}
}

// managerFiles writes the rig's runner into a config.toml for child managers, and names the file their
// log goes to (shown when the test fails).
func (r *rig) managerFiles(t *testing.T) (configPath, logPath string) {
	t.Helper()
	configPath = filepath.Join(r.dir, "config.toml")
	if err := config.Save(configPath, &config.Config{Concurrent: 4, CheckInterval: 1, ShutdownTimeout: 20,
		Runners: []*config.RunnerConfig{r.runner}}); err != nil {
		t.Fatal(err)
	}
	logPath = filepath.Join(r.dir, "manager.log")
	dumpFile(t, logPath)
	return configPath, logPath
}

// removeInstancesAtEnd makes sure, whatever happens, that no sshd of the local group kept in pluginDir
// outlives the test: a group on the same state_dir adopts and removes them.
func removeInstancesAtEnd(t *testing.T, pluginDir, baseAddress string) {
	t.Cleanup(func() {
		g := &local.InstanceGroup{StateDir: pluginDir, BaseAddress: baseAddress, MaxSize: 4}
		ctx := context.Background()
		if _, err := g.Init(ctx, logging.Discard(), fleeting.Settings{}); err != nil {
			t.Errorf("clean up instances: %v", err)
			return
		}
		var ids []string
		_ = g.Update(ctx, func(id string, _ fleeting.State) { ids = append(ids, id) })
		_, _ = g.Decrease(ctx, ids)
		_ = g.Shutdown(ctx)
	})
}

// pluginInstances lists the instances the local plugin keeps in its state_dir.
func pluginInstances(t *testing.T, stateDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(stateDir, "instances"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// TestManagerKilledAndRestarted: kill -9 the manager process while a job runs and start it again. The
// instance that was idle is adopted (same ID, not removed) and takes the next job; the one that ran the
// job is removed; the job is reported failed (runner_system_failure) at once; every instance left in
// the group is one the new manager owns.
func TestManagerKilledAndRestarted(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	pluginDir := filepath.Join(r.dir, "local-state")
	ac := r.runner.Autoscaler
	ac.CapacityPerInstance, ac.MaxInstances = 1, 3
	ac.PluginConfig["state_dir"] = pluginDir
	ac.Policy = []config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: time.Minute}}
	configPath, logPath := r.managerFiles(t)
	statePath := state.Path(ac.StateStorageDir(r.dir), stateRunner(r.runner))
	removeInstancesAtEnd(t, pluginDir, ac.PluginConfig["base_address"].(string))

	first := startChild(t, configPath, logPath)
	idA := r.sim.Enqueue(gitlabsim.JobSpec{Name: "in-flight", Image: r.image, Script: []string{"echo started-A", "sleep 60"}})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if _, err := r.sim.WaitJob(ctx, idA, func(j gitlabsim.JobSnapshot) bool { return strings.Contains(string(j.Trace), "started-A") }); err != nil {
		t.Fatalf("job A never started its script: %v", err)
	}
	var busy, idle string
	testrig.WaitFor(t, 30*time.Second, "the state file to show job A on one instance and another instance idle", func() bool {
		snap, err := state.NewFile(statePath).Load()
		if err != nil || snap == nil {
			return false
		}
		busy, idle = "", ""
		for _, j := range snap.Jobs {
			if j.JobID == idA {
				busy = j.InstanceID
			}
		}
		for _, in := range snap.Instances {
			if in.ID != busy && in.State == "ready" {
				idle = in.ID
			}
		}
		return busy != "" && idle != ""
	})
	first.kill()
	t.Logf("manager killed with job %d on %s and %s idle", idA, busy, idle)
	killedAt := time.Now()

	second := startChild(t, configPath, logPath)
	// "At once": the new manager reports it right after start, not after GitLab's job timeout.
	reportCtx, cancelReport := context.WithTimeout(ctx, 20*time.Second)
	snapA, err := r.sim.WaitFinished(reportCtx, idA)
	cancelReport()
	switch {
	case err != nil:
		t.Errorf("job A was not reported failed within 20 s of the restart: %v", err)
	case snapA.Status != gitlabsim.StatusFailed || snapA.FailureReason != string(job.RunnerSystemFailure):
		t.Errorf("job A: %s %q, want failed %s", snapA.Status, snapA.FailureReason, job.RunnerSystemFailure)
	default:
		t.Logf("job A reported failed (%s) %s after the kill", snapA.FailureReason, time.Since(killedAt).Round(time.Millisecond))
	}

	testrig.WaitFor(t, 30*time.Second, "the instance that ran job A to be removed", func() bool {
		return !slices.Contains(pluginInstances(t, pluginDir), busy)
	})
	if !slices.Contains(pluginInstances(t, pluginDir), idle) {
		t.Fatalf("idle instance %s was removed instead of adopted", idle)
	}

	idB := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-restart", Image: r.image, Script: []string{"echo B"}})
	snapB, err := r.sim.WaitFinished(ctx, idB)
	if err != nil || snapB.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job B after the restart: %v %s; trace:\n%s", err, snapB.Status, snapB.Trace)
	}
	if on := connectedTo(snapB.Trace); len(on) != 1 || on[0] != idle {
		t.Errorf("job B ran on %v, want the adopted instance %s", on, idle)
	}

	// No orphan: every instance in the group is one the new manager's state knows, and the reverse.
	testrig.WaitFor(t, 30*time.Second, "the group and the state file to agree", func() bool {
		snap, err := state.NewFile(statePath).Load()
		if err != nil || snap == nil {
			return false
		}
		known := map[string]bool{}
		for _, in := range snap.Instances {
			known[in.ID] = true
		}
		group := pluginInstances(t, pluginDir)
		return slices.Equal(slices.Sorted(maps.Keys(known)), group) && slices.Contains(group, idle)
	})
	second.stop(t)
}
