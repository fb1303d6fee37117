package dockerautoscaler

import (
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// readyInstances lists the instances serving slots.
func readyInstances(p *Provider) []taskscaler.InstanceInfo {
	var out []taskscaler.InstanceInfo
	for _, in := range p.Instances() {
		if in.State == "ready" {
			out = append(out, in)
		}
	}
	return out
}

// TestInstanceUnusableBeforeScript: the only ready instance breaks while idle, before the taskscaler could
// notice (long update_interval): the machine dies, or its Docker Engine does while sshd still answers.
// The job acquires it, cannot use it, marks it unhealthy and runs to success on a fresh instance.
func TestInstanceUnusableBeforeScript(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault func(t *testing.T, p *Provider, pluginDir, id string) error
	}{
		{"killed", func(t *testing.T, p *Provider, _, id string) error { return p.local(t).Kill(id) }},
		// The pooled SSH connection works; the Docker ping through it fails after the lease was taken.
		{"docker stopped", func(t *testing.T, _ *Provider, pluginDir, id string) error {
			testenv.RequireRoot(t, "hiding an instance's Docker socket")
			if err := local.DockerGateAvailable(); err != nil {
				t.Fatalf("the local plugin cannot stop an instance's Docker: %v", err)
			}
			s, err := instanceSSHD(pluginDir, id)
			if err != nil {
				return err
			}
			return s.StopDocker()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, pluginDir := keptInstanceRig(t)
			ac := r.runner.Autoscaler
			ac.MaxInstances = 2
			ac.UpdateInterval = time.Minute // no listing or health check notices the fault on its own
			p := r.newProvider(t)

			testrig.WaitFor(t, 30*time.Second, "one ready instance", func() bool { return len(readyInstances(p)) == 1 })
			// Let the pass that saw it ready end, so the next listing is a minute away.
			time.Sleep(500 * time.Millisecond)
			victim := readyInstances(p)[0].ID
			if err := tc.fault(t, p, pluginDir, victim); err != nil {
				t.Fatal(err)
			}

			r.sim.Enqueue(gitlabsim.JobSpec{Name: "moves", Image: r.image, Script: []string{"echo job ran fine"}})
			err, snap := r.runOne(t, p, nil)
			if err != nil || snap.Status != gitlabsim.StatusSuccess {
				t.Fatalf("job: err %v, status %s; trace:\n%s", err, snap.Status, snap.Trace)
			}
			out := string(snap.Trace)
			if !strings.Contains(out, "Instance "+victim+" cannot be used") || !strings.Contains(out, "moving the job to another instance") {
				t.Errorf("the job log does not say the job moved off %s:\n%s", victim, out)
			}
			ids := connectedTo(snap.Trace)
			if len(ids) != 1 || ids[0] == victim {
				t.Errorf("job connected to %v; want exactly one instance other than the broken %s", ids, victim)
			}
			if n := p.Stats().Counters.MarkedUnhealthy; n != 1 {
				t.Errorf("MarkedUnhealthy = %d, want 1", n)
			}
			if slices.ContainsFunc(readyInstances(p), func(in taskscaler.InstanceInfo) bool { return in.ID == victim }) {
				t.Errorf("broken instance %s still serves slots", victim)
			}
		})
	}
}

// TestInstanceKilledMidScript: the instance dies while the job's script runs. The job fails with
// runner_system_failure as soon as the SSH connection is found dead (keepalive 1 s), long before the
// script would have ended.
func TestInstanceKilledMidScript(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.runner.Autoscaler.CapacityPerInstance = 1
	p := r.newProvider(t)

	r.sim.Enqueue(gitlabsim.JobSpec{Name: "long", Image: r.image, Script: []string{"echo sleeping", "sleep 30"}})
	var killedAt time.Time
	// The script's container runs `sleep 30` once it said so: pull the plug.
	err, snap := r.runOne(t, p, onceInOutput("step_script", "sleeping", func() {
		busy := busyInstance(p)
		if busy == "" {
			t.Error("no instance holds the running job")
			return
		}
		killedAt = time.Now()
		if err := p.local(t).Kill(busy); err != nil {
			t.Error(err)
		}
	}))
	if killedAt.IsZero() {
		t.Fatalf("the script never started; err %v; trace:\n%s", err, snap.Trace)
	}
	took := time.Since(killedAt)
	t.Logf("job failed %s after its instance was killed", took.Round(time.Millisecond))
	if reason, _ := job.Failure(err); reason != job.RunnerSystemFailure {
		t.Errorf("Run error %v has reason %q, want %s", err, reason, job.RunnerSystemFailure)
	}
	if snap.Status != gitlabsim.StatusFailed || snap.FailureReason != string(job.RunnerSystemFailure) {
		t.Errorf("job %d: status %s reason %q, want failed %s", snap.ID, snap.Status, snap.FailureReason, job.RunnerSystemFailure)
	}
	if !strings.Contains(string(snap.Trace), "was lost while the job ran") {
		t.Errorf("job log does not say the instance was lost:\n%s", snap.Trace)
	}
	// The script sleeps 30 s: finishing well before that shows the loss, not the script, ended the job.
	if took > 20*time.Second {
		t.Errorf("job took %s after the kill to fail; the lost connection was not noticed", took)
	}
}
