package dockerautoscaler

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// TestCollectorsExportFleetState: the fleeting metrics follow the taskscaler's view of the fleet.
func TestCollectorsExportFleetState(t *testing.T) {
	testenv.RequireSSHD(t)
	rc := &config.RunnerConfig{
		Name:              "metrics",
		RunnerCredentials: config.RunnerCredentials{URL: "http://127.0.0.1:1", Token: randomToken()},
		Executor:          Name,
		Docker:            &config.DockerConfig{Image: "busybox"},
		Autoscaler: &config.AutoscalerConfig{
			Plugin:                      "local",
			CapacityPerInstance:         2,
			MaxInstances:                2,
			MaxUseCount:                 5,
			UpdateInterval:              time.Second,
			UpdateIntervalWhenExpecting: 100 * time.Millisecond,
			PluginConfig:                config.PluginConfig{"base_address": testBase(), "boot_delay": "50ms", "sshd_delay": "0s", "docker_delay": "0s", "max_size": 2},
			Policy:                      []config.AutoscalerPolicyConfig{{IdleCount: 3, IdleTime: time.Minute}},
		},
	}
	p, err := newProvider(rc, executors.Deps{Logger: testLogger(t), ConfigDir: t.TempDir()}, testPlugins, docker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	testrig.WaitFor(t, 30*time.Second, "two ready instances for three idle slots", func() bool { return p.Stats().Instances.Ready == 2 })

	reg := prometheus.NewPedanticRegistry()
	for _, c := range p.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			switch {
			case m.Gauge != nil:
				got[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				got[key] = m.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{
		"fleeting_taskscaler_tasks/idle":                       4,
		"fleeting_taskscaler_tasks/acquired":                   0,
		"fleeting_provisioner_instances/running":               2,
		"fleeting_taskscaler_desired_instances":                2,
		"fleeting_taskscaler_max_tasks_per_instance":           2,
		"fleeting_taskscaler_max_use_count_per_instance":       5,
		"fleeting_provisioner_max_instances":                   2,
		"fleeting_provisioner_instance_operations_total/ready": 2,
		"fleeting_taskscaler_failures_total/ready_command":     0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}
