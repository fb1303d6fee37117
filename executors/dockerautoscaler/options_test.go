package dockerautoscaler

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/forecast"
)

func TestTaskscalerOptions(t *testing.T) {
	off := false
	ac := &config.AutoscalerConfig{
		CapacityPerInstance: 2, MaxInstances: 4, MaxUseCount: 3,
		ReservationThrottling: &off,
		ScaleThrottle:         config.ScaleThrottle{Limit: -1},
		StateStorage:          config.StateStorage{KeepInstanceWithAcquisitions: true},
		Policy:                []config.AutoscalerPolicyConfig{{IdleCount: 1}},
	}
	o, err := TaskscalerOptions(ac, 0)
	if err != nil {
		t.Fatal(err)
	}
	if o.CapacityPerInstance != 2 || o.MaxInstances != 4 || o.MaxUseCount != 3 || o.ReservationThrottling ||
		o.ScaleThrottleLimit != taskscaler.ScaleThrottleUnlimited || !o.KeepInstanceWithAcquisitions || len(o.Policies) != 1 || !o.Policies[0].Preemptive {
		t.Fatalf("TaskscalerOptions = %+v", o)
	}
	if _, err := TaskscalerOptions(&config.AutoscalerConfig{Policy: []config.AutoscalerPolicyConfig{{}, {Timezone: "Mars/Olympus"}}}, 0); err == nil ||
		!strings.Contains(err.Error(), "entry 2") || !strings.Contains(err.Error(), "Mars/Olympus") {
		t.Fatalf("a bad timezone = %v, want an error naming the entry and the zone", err)
	}
}

// TestTaskscalerOptionsResolved: an empty [runners.autoscaler] gives the taskscaler upstream's values,
// every one set, so the taskscaler decides nothing itself.
func TestTaskscalerOptionsResolved(t *testing.T) {
	o, err := TaskscalerOptions(&config.AutoscalerConfig{Policy: []config.AutoscalerPolicyConfig{{}}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := taskscaler.Options{
		CapacityPerInstance:         1,
		Policies:                    []taskscaler.Policy{{Periods: []string{"* * * * *"}, Location: time.Local}},
		UpdateInterval:              time.Minute,
		UpdateIntervalWhenExpecting: 2 * time.Second,
		DeletionRetryInterval:       time.Minute,
		FailureThreshold:            3,
		InstanceAcquireTimeout:      15 * time.Minute,
		CreationTimeout:             15 * time.Minute,
		CreateBackoff:               5 * time.Second,
		MaxCreateBackoff:            5 * time.Minute,
		ScaleThrottleLimit:          100,
		ScaleThrottleBurst:          100,
		ReservationThrottling:       true,
		ShutdownDeletionInterval:    10 * time.Second,
		ShutdownDeletionRetries:     3,
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("TaskscalerOptions of an empty table =\n%+v\nwant\n%+v", o, want)
	}
}

// TestTaskscalerOptionsForecast: [runners.autoscaler.forecast] reaches the taskscaler resolved, and
// only when enabled.
func TestTaskscalerOptionsForecast(t *testing.T) {
	for _, tt := range []struct {
		name string
		f    *config.AutoscalerForecastConfig
		want *forecast.Options
	}{
		{name: "no table", f: nil, want: nil},
		{name: "not enabled", f: &config.AutoscalerForecastConfig{Quantile: 0.5}, want: nil},
		{name: "defaults", f: &config.AutoscalerForecastConfig{Enabled: true}, want: &forecast.Options{History: 14 * 24 * time.Hour, Quantile: 0.9}},
		{name: "set", f: &config.AutoscalerForecastConfig{Enabled: true, History: 48 * time.Hour, Quantile: 0.5, Lead: time.Minute},
			want: &forecast.Options{History: 48 * time.Hour, Quantile: 0.5, Lead: time.Minute}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := TaskscalerOptions(&config.AutoscalerConfig{Forecast: tt.f}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(o.Forecast, tt.want) {
				t.Fatalf("Forecast = %+v, want %+v", o.Forecast, tt.want)
			}
		})
	}
}

// TestTaskscalerOptionsGroupSize: the plugin's group size caps max_instances, and the scale_throttle
// burst that follows it.
func TestTaskscalerOptionsGroupSize(t *testing.T) {
	for _, tt := range []struct {
		maxInstances, maxSize, want int
	}{{0, 5, 5}, {8, 5, 5}, {3, 5, 3}, {3, 0, 3}} {
		o, err := TaskscalerOptions(&config.AutoscalerConfig{MaxInstances: tt.maxInstances}, tt.maxSize)
		if err != nil {
			t.Fatal(err)
		}
		if o.MaxInstances != tt.want || o.ScaleThrottleBurst != tt.want {
			t.Errorf("max_instances %d, group size %d: max instances %d, burst %d; want both %d",
				tt.maxInstances, tt.maxSize, o.MaxInstances, o.ScaleThrottleBurst, tt.want)
		}
	}
}

func TestStateFile(t *testing.T) {
	off := false
	dir := t.TempDir()
	rc := &config.RunnerConfig{Name: "r", RunnerCredentials: config.RunnerCredentials{URL: "https://gitlab.example.com", Token: "glrt-abcdefghijkl"},
		Autoscaler: &config.AutoscalerConfig{}}
	p := &Provider{runner: rc, log: logging.Discard()}
	if got, want := p.stateFile(dir), filepath.Join(dir, ".taskscaler", "runner-"); !strings.HasPrefix(got, want) {
		t.Errorf("state file %q, want it below %q", got, want)
	}
	rc.Name = ""
	if got, want := p.stateFile(dir), filepath.Join(dir, ".taskscaler", "abcdefgh", "state.json"); got != want {
		t.Errorf("without id and name: state file %q, want %q (the short token)", got, want)
	}
	// A directory named after the short token is left alone with state_storage off.
	rc.Name = "r"
	legacy := filepath.Join(dir, ".taskscaler", "abcdefgh")
	if err := os.MkdirAll(legacy, 0o700); err != nil {
		t.Fatal(err)
	}
	rc.Autoscaler.StateStorage.Enabled = &off
	if got := p.stateFile(dir); got != "" {
		t.Errorf("with state_storage off: state file %q, want none", got)
	}
	if _, err := os.Stat(legacy); err != nil {
		t.Errorf("with state_storage off the legacy directory was touched: %v", err)
	}
}

// TestHistogramBuckets: a histogram's own *_buckets key, else instance_operation_time_buckets, else
// the default, which for the life duration is its own.
func TestHistogramBuckets(t *testing.T) {
	got := HistogramBuckets(&config.AutoscalerConfig{})
	want := Buckets{Creation: defaultOperationBuckets, IsRunning: defaultOperationBuckets, Deletion: defaultOperationBuckets,
		Readiness: defaultOperationBuckets, LifeDuration: defaultLifeBuckets}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults: %+v", got)
	}
	op, own := []float64{1, 10}, []float64{2, 20}
	got = HistogramBuckets(&config.AutoscalerConfig{InstanceOperationTimeBuckets: op, InstanceReadinessTimeBuckets: own})
	want = Buckets{Creation: op, IsRunning: op, Deletion: op, Readiness: own, LifeDuration: op}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("with instance_operation_time_buckets and instance_readiness_time_buckets: %+v", got)
	}
}
