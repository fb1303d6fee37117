package sim

import (
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// traceFiles are the job-arrival traces kept in the repository (testdata/traces at its root, with their
// SOURCES.md).
func traceFiles(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*.csv"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no traces in testdata/traces at the repository root: %v", err)
	}
	return files
}

// benchConfig is the default policy the benchmark reports: upstream's defaults (one job per instance,
// no max_instances, no idle capacity) with a 10 minute idle_time and a 45 s boot.
func benchConfig() Config {
	return Config{
		BootDelay: 45 * time.Second,
		Options: options(func(o *taskscaler.Options) {
			o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{IdleCount: 0, IdleTime: 10 * time.Minute})}
		}),
	}
}

// BenchmarkTraces replays every shared trace with the default policy and reports its figures.
func BenchmarkTraces(b *testing.B) {
	for _, file := range traceFiles(b) {
		jobs, err := LoadTrace(file)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(filepath.Base(file), func(b *testing.B) {
			var res *Result
			for b.Loop() {
				res, err = Run(b.Context(), jobs, benchConfig())
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
