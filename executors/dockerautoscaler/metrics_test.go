package dockerautoscaler

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
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
			// A histogram's own key wins over instance_operation_time_buckets, which wins over the default.
			InstanceOperationTimeBuckets: []float64{5, 50},
			InstanceCreationTimeBuckets:  []float64{1, 2, 3},
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
	got, bounds := gathered(t, reg)
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

		"fleeting_provisioner_instance_creation_time_seconds/count":      2,
		"fleeting_provisioner_instance_is_running_time_seconds/count":    2,
		"fleeting_taskscaler_task_instance_readiness_time_seconds/count": 2,
		"fleeting_provisioner_instance_deletion_time_seconds/count":      0,
		"fleeting_provisioner_instance_life_duration_seconds/count":      0,
		"fleetrunner_job_slot_wait_seconds/count":                        0,
		"fleetrunner_scale_operations_total/increase/requested":          2,
		"fleetrunner_scale_operations_total/increase/accepted":           2,
		"fleetrunner_scale_operations_total/decrease/requested":          0,
		"fleetrunner_instance_seconds_total/busy":                        0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if got["fleetrunner_instance_seconds_total/booting"] <= 0 {
		t.Errorf("no booting time counted: %v", got["fleetrunner_instance_seconds_total/booting"])
	}
	for name, want := range map[string][]float64{
		"fleeting_provisioner_instance_creation_time_seconds":   {1, 2, 3},
		"fleeting_provisioner_instance_is_running_time_seconds": {5, 50},
		"fleeting_provisioner_instance_life_duration_seconds":   {5, 50},
	} {
		if !slices.Equal(bounds[name], want) {
			t.Errorf("%s buckets %v, want %v", name, bounds[name], want)
		}
	}
}

// gathered reads reg into name/label values… → value (a histogram's sample count under …/count) and
// name/label values… → bucket bounds.
func gathered(t *testing.T, reg *prometheus.Registry) (map[string]float64, map[string][]float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	got := map[string]float64{}
	bounds := map[string][]float64{}
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
			case m.Histogram != nil:
				got[key+"/count"] = float64(m.GetHistogram().GetSampleCount())
				for _, b := range m.GetHistogram().GetBucket() {
					bounds[key] = append(bounds[key], b.GetUpperBound())
				}
			}
		}
	}
	return got, bounds
}

type fakeCalls []fleeting.APICallCount

func (f fakeCalls) APICalls() []fleeting.APICallCount { return f }

// TestAPICallsCollector: a plugin's API call counts are exported as they are, one series per service,
// operation and outcome.
func TestAPICallsCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(apiCallsCollector{fakeCalls{
		{Service: "auto_scaling", Operation: "SetDesiredCapacity", Outcome: fleeting.OutcomeThrottled, Count: 3},
		{Service: "ec2", Operation: "DescribeInstances", Outcome: fleeting.OutcomeSuccess, Count: 7},
	}})
	got, _ := gathered(t, reg)
	want := map[string]float64{
		// Label values in label-name order: operation, outcome, service.
		"fleetrunner_cloud_api_requests_total/DescribeInstances/success/ec2":             7,
		"fleetrunner_cloud_api_requests_total/SetDesiredCapacity/throttled/auto_scaling": 3,
	}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestSlotWaitIsObservedPerJob: a job that ran is one observation of its wait for a slot: with no idle
// instance kept, the boot of one (the local plugin's delays add up to 900ms), not the job's run.
func TestSlotWaitIsObservedPerJob(t *testing.T) {
	r := newRig(t)
	p := r.newProvider(t)
	r.sim.Enqueue(gitlabsim.JobSpec{Name: "waits", Image: r.image, Script: []string{"sleep 1"}})
	if err, snap := r.runOne(t, p, nil); err != nil || snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job: err %v, status %s; trace:\n%s", err, snap.Status, snap.Trace)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(p.metrics.slotWait)
	families, err := reg.Gather()
	if err != nil || len(families) != 1 {
		t.Fatalf("gather: %d families, %v", len(families), err)
	}
	h := families[0].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() < 0.5 || h.GetSampleSum() >= 30 {
		t.Errorf("slot wait: %d observations summing to %.2fs; want one, the boot of an instance", h.GetSampleCount(), h.GetSampleSum())
	}
}
