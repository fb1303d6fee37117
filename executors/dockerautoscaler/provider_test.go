package dockerautoscaler

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

func TestNewProviderRejectsBadConfig(t *testing.T) {
	base := func() *config.RunnerConfig {
		return &config.RunnerConfig{
			Name:              "bad",
			RunnerCredentials: config.RunnerCredentials{URL: "http://127.0.0.1:1", Token: randomToken()},
			Executor:          Name,
			Docker:            &config.DockerConfig{Image: "busybox"},
			Autoscaler: &config.AutoscalerConfig{
				Plugin:       "local",
				PluginConfig: config.PluginConfig{"base_address": testBase()},
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(*config.RunnerConfig)
		want   []string
	}{
		{"no autoscaler section", func(r *config.RunnerConfig) { r.Autoscaler = nil }, []string{"[runners.autoscaler] is missing"}},
		{"no docker section", func(r *config.RunnerConfig) { r.Docker = nil }, []string{"[runners.docker] is missing"}},
		{"unknown plugin", func(r *config.RunnerConfig) { r.Autoscaler.Plugin = "registry.example.com/fleeting/plugins/nimbus:1.2" },
			[]string{"plugin", `"nimbus"`, "local", "static"}},
		{"unknown plugin_config key", func(r *config.RunnerConfig) { r.Autoscaler.PluginConfig["boot_delai"] = "1s" },
			[]string{"plugin_config", "boot_delai"}},
		{"plugin_config of the wrong type", func(r *config.RunnerConfig) { r.Autoscaler.PluginConfig["max_size"] = "four" },
			[]string{"plugin_config", "max_size"}},
		{"plugin_config the plugin rejects", func(r *config.RunnerConfig) { r.Autoscaler.PluginConfig["base_address"] = "10.0.0.1" },
			[]string{`plugin "local" rejected`, "base_address"}},
		{"bad policy", func(r *config.RunnerConfig) {
			r.Autoscaler.Policy = []config.AutoscalerPolicyConfig{{Periods: []string{"not a cron"}}}
		}, []string{"[runners.autoscaler]", "not a cron"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := base()
			tt.mutate(rc)
			p, err := New(testPlugins)(rc, executors.Deps{ConfigDir: t.TempDir()})
			if err == nil {
				_ = p.Shutdown(context.Background())
				t.Fatal("the provider accepted a broken config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestReadyCommandFailure: an instance whose instance_ready_command fails is removed, and the log
// names the instance and the command's output.
func TestReadyCommandFailure(t *testing.T) {
	testenv.RequireSSHD(t)
	r := &rig{dir: t.TempDir(), runner: &config.RunnerConfig{
		Name:              "ready",
		RunnerCredentials: config.RunnerCredentials{URL: "http://127.0.0.1:1", Token: randomToken()},
		Executor:          Name,
		Docker:            &config.DockerConfig{Image: "busybox"},
		Autoscaler: &config.AutoscalerConfig{
			Plugin:                      "local",
			CapacityPerInstance:         1,
			MaxInstances:                1,
			InstanceReadyCommand:        "echo provisioning went wrong >&2; exit 3",
			UpdateInterval:              time.Second,
			UpdateIntervalWhenExpecting: 100 * time.Millisecond,
			PluginConfig:                config.PluginConfig{"base_address": testBase(), "boot_delay": "50ms", "sshd_delay": "0s", "docker_delay": "0s", "max_size": 1},
			Policy:                      []config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: time.Minute}},
		},
	}}
	log, hook := test.NewNullLogger()
	p, err := newProvider(r.runner, executors.Deps{Logger: log, ConfigDir: r.dir}, testPlugins, docker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })

	testrig.WaitFor(t, 30*time.Second, "a failed ready command", func() bool { return p.Stats().Counters.ReadyFailures > 0 })
	var line string
	for _, e := range hook.AllEntries() {
		if err, ok := e.Data["error"].(error); ok && strings.Contains(err.Error(), "instance_ready_command") {
			line = err.Error()
			break
		}
	}
	for _, want := range []string{"instance_ready_command on instance local-", "exited with code 3", "provisioning went wrong"} {
		if !strings.Contains(line, want) {
			t.Errorf("ready failure %q lacks %q", line, want)
		}
	}
	if s := p.Stats(); s.Instances.Ready != 0 {
		t.Errorf("an instance that failed its ready command serves jobs: %+v", s.Instances)
	}
	if _, err := p.Reserve(t.Context()); !errors.Is(err, executors.ErrNoCapacity) {
		t.Errorf("Reserve with no ready instance (preemptive) = %v, want ErrNoCapacity", err)
	}
}

// TestUpdatePolicies: a reloaded policy list reaches the taskscaler (here: an idle target appears and is
// served); a broken one is refused and the running one kept.
func TestUpdatePolicies(t *testing.T) {
	testenv.RequireSSHD(t)
	rc := &config.RunnerConfig{
		Name:              "policies",
		RunnerCredentials: config.RunnerCredentials{URL: "http://127.0.0.1:1", Token: randomToken()},
		Executor:          Name,
		Docker:            &config.DockerConfig{Image: "busybox"},
		Autoscaler: &config.AutoscalerConfig{
			Plugin:                      "local",
			CapacityPerInstance:         1,
			MaxInstances:                2,
			UpdateInterval:              time.Second,
			UpdateIntervalWhenExpecting: 100 * time.Millisecond,
			PluginConfig:                config.PluginConfig{"base_address": testBase(), "boot_delay": "50ms", "sshd_delay": "0s", "docker_delay": "0s", "max_size": 2},
		},
	}
	p, err := newProvider(rc, executors.Deps{Logger: testLogger(t), ConfigDir: t.TempDir()}, testPlugins, docker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	if s := p.Stats(); s.IdleTarget != 0 || s.Instances.Ready != 0 {
		t.Fatalf("before the reload: %+v", s)
	}

	reloaded := *rc
	ac := *rc.Autoscaler
	ac.Policy = []config.AutoscalerPolicyConfig{{IdleCount: 2, IdleTime: time.Minute}}
	reloaded.Autoscaler = &ac
	if err := p.UpdatePolicies(&reloaded); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 30*time.Second, "two idle instances after the reload", func() bool {
		s := p.Stats()
		return s.IdleTarget == 2 && s.Instances.Ready == 2
	})

	broken := reloaded
	bac := ac
	bac.Policy = []config.AutoscalerPolicyConfig{{Periods: []string{"61 * * * *"}, IdleCount: 0}}
	broken.Autoscaler = &bac
	if err := p.UpdatePolicies(&broken); err == nil || !strings.Contains(err.Error(), "keeping the running one") {
		t.Errorf("UpdatePolicies with a broken period = %v, want a refusal", err)
	}
	if s := p.Stats(); s.IdleTarget != 2 {
		t.Errorf("idle target %d after a refused reload, want 2", s.IdleTarget)
	}
}

// TestHealthCheck: with FF_USE_FLEETING_ACQUIRE_HEARTBEATS the check also runs `exit 0` over the
// instance's SSH connection; a killed instance fails it.
func TestHealthCheck(t *testing.T) {
	testenv.RequireSSHD(t)
	rc := &config.RunnerConfig{
		Name:              "health",
		RunnerCredentials: config.RunnerCredentials{URL: "http://127.0.0.1:1", Token: randomToken()},
		Executor:          Name,
		FeatureFlags:      map[string]bool{config.FFUseFleetingAcquireHeartbeats: true},
		Docker:            &config.DockerConfig{Image: "busybox"},
		Autoscaler: &config.AutoscalerConfig{
			Plugin:                      "local",
			CapacityPerInstance:         1,
			MaxInstances:                1,
			UpdateInterval:              time.Minute,
			UpdateIntervalWhenExpecting: 100 * time.Millisecond,
			PluginConfig:                config.PluginConfig{"base_address": testBase(), "boot_delay": "50ms", "sshd_delay": "0s", "docker_delay": "0s", "max_size": 1},
			Policy:                      []config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: time.Minute}},
		},
	}
	p, err := newProvider(rc, executors.Deps{Logger: testLogger(t), ConfigDir: t.TempDir()}, testPlugins, docker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	if !p.heartbeatOverSSH {
		t.Fatal("FF_USE_FLEETING_ACQUIRE_HEARTBEATS in feature_flags was not picked up")
	}
	testrig.WaitFor(t, 30*time.Second, "a ready instance", func() bool { return len(readyInstances(p)) == 1 })
	id := readyInstances(p)[0].ID
	if err := p.healthCheck(t.Context(), taskscaler.Instance{ID: id}); err != nil {
		t.Fatalf("health check of a live instance: %v", err)
	}
	if err := p.local(t).Kill(id); err != nil {
		t.Fatal(err)
	}
	if err := p.healthCheck(t.Context(), taskscaler.Instance{ID: id}); err == nil {
		t.Error("health check of a killed instance passed")
	}
}
