package sim

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
)

// sharedTraces are the project's trace files, next to the repository (../shared/traces from its root).
func sharedTraces(tb testing.TB) []string {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", "..", "shared", "traces", "*.csv"))
	if len(files) == 0 {
		msg := "no shared traces at ../shared/traces (relative to the repository root)"
		if os.Getenv(testenv.RequireAllEnv) != "" {
			tb.Fatal(msg)
		}
		tb.Skip("skipping: " + msg)
	}
	return files
}

// benchConfig is the default policy the benchmark reports: upstream's defaults (one job per instance,
// no max_instances, no idle capacity) with a 10 minute idle_time and a 45 s boot.
func benchConfig(tb testing.TB) Config {
	ps, err := capacity.NewPolicies([]config.AutoscalerPolicyConfig{{IdleCount: 0, IdleTime: 10 * time.Minute}})
	if err != nil {
		tb.Fatal(err)
	}
	return Config{
		BootDelay: 45 * time.Second,
		Options:   taskscaler.Options{CapacityPerInstance: 1, Policies: ps},
	}
}

// BenchmarkSharedTraces replays every shared trace with the default policy and reports its figures.
func BenchmarkSharedTraces(b *testing.B) {
	for _, file := range sharedTraces(b) {
		jobs, err := LoadTrace(file)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(filepath.Base(file), func(b *testing.B) {
			var res *Result
			for b.Loop() {
				res, err = Run(b.Context(), jobs, benchConfig(b))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(res.Jobs), "jobs")
			b.ReportMetric(res.InstanceMinutes, "instance-min")
			b.ReportMetric(float64(res.PeakInstances), "peak-instances")
			b.ReportMetric(res.WaitP50.Seconds(), "p50-wait-s")
			b.ReportMetric(res.WaitP95.Seconds(), "p95-wait-s")
			b.ReportMetric(res.WaitP99.Seconds(), "p99-wait-s")
		})
	}
}
