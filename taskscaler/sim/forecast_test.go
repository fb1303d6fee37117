package sim

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/forecast"
)

// forecastRun is one row of the comparison: an upstream-style single policy, or the forecast.
type forecastRun struct {
	name     string
	idle     int
	forecast bool
}

var forecastRuns = []forecastRun{
	{name: "idle_count 0", idle: 0}, {name: "idle_count 2", idle: 2}, {name: "idle_count 5", idle: 5},
	{name: "idle_count 10", idle: 10}, {name: "forecast", forecast: true},
}

// traceConfig is how the traces are compared: boot 60 s (the measurement), idle_time 20m,
// upstream's preemptive default (idle_count > 0), figures from measureFrom on.
func traceConfig(r forecastRun, measureFrom time.Duration) Config {
	return Config{
		Options: options(func(o *taskscaler.Options) {
			o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{IdleCount: r.idle, IdleTime: 20 * time.Minute, Preemptive: r.idle > 0})}
			if r.forecast {
				o.Forecast = &forecast.Options{History: 14 * 24 * time.Hour, Quantile: 0.9, Location: time.UTC}
			}
		}),
		BootDelay:   time.Minute,
		MeasureFrom: measureFrom,
	}
}

// heldOut is where the figures start: the last two days, but never before the end of the first day,
// which the forecast learns from.
func heldOut(jobs []Job) time.Duration {
	end := jobs[len(jobs)-1].Arrival
	return max(end-48*time.Hour, 24*time.Hour)
}

// TestForecastOnTraces prints, for the four vendored traces, the forecast against upstream-style
// single policies on the held-out days. It takes minutes, so it runs only with
// FLEETRUNNER_SIM_TRACES=1 (go test -run TestForecastOnTraces -v ./taskscaler/sim/).
func TestForecastOnTraces(t *testing.T) {
	if os.Getenv("FLEETRUNNER_SIM_TRACES") != "1" {
		t.Skip("set FLEETRUNNER_SIM_TRACES=1 to simulate the four testdata traces (minutes)")
	}
	paths, err := filepath.Glob("../../testdata/traces/*.csv")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no traces in testdata/traces: %v", err)
	}
	for _, p := range paths {
		jobs, err := LoadTrace(p)
		if err != nil {
			t.Fatal(err)
		}
		from := heldOut(jobs)
		t.Logf("%s: %d jobs, figures from %s", filepath.Base(p), len(jobs), from)
		for _, r := range forecastRuns {
			cfg := traceConfig(r, from)
			cfg.Start = start
			res, err := Run(t.Context(), jobs, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("  %-14s jobs %5d  instance-min %9.1f  p95 %8s  p99 %8s  peak %4d",
				r.name, res.Jobs, res.InstanceMinutes, res.WaitP95.Round(100*time.Millisecond), res.WaitP99.Round(100*time.Millisecond), res.PeakInstances)
		}
	}
}

// TestForecastWarmsBeforeTheRush: ten jobs arrive together at 09:00 every day. On the third day the
// forecast, having seen two, has the instances ready when they come, where the policy alone (idle_count
// 0) makes them wait a boot; and it holds them only around the rush, not all night.
func TestForecastWarmsBeforeTheRush(t *testing.T) {
	var jobs []Job
	for day := range 3 {
		for range 10 {
			jobs = append(jobs, Job{Arrival: time.Duration(day)*24*time.Hour + 9*time.Hour, Duration: 5 * time.Minute})
		}
	}
	from := 48 * time.Hour
	run := func(r forecastRun) *Result {
		cfg := traceConfig(r, from)
		cfg.Start = start
		res, err := Run(t.Context(), jobs, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	policy, fc := run(forecastRun{idle: 0}), run(forecastRun{forecast: true})
	t.Logf("day 3: policy p95 %s, %.0f instance-min; forecast p95 %s, %.0f instance-min", policy.WaitP95, policy.InstanceMinutes, fc.WaitP95, fc.InstanceMinutes)
	if policy.Jobs != 10 || fc.Jobs != 10 {
		t.Fatalf("jobs measured: %d and %d, want the third day's 10", policy.Jobs, fc.Jobs)
	}
	if policy.WaitP95 < time.Minute {
		t.Errorf("policy p95 wait %s, want at least the 1m boot", policy.WaitP95)
	}
	// The forecast holds 9 (the 0.9 quantile of the burst: the last job counts 10 arrivals within a
	// boot, the first 1), so one job may still wait.
	if fc.WaitP50 != 0 || fc.WaitP95 > time.Minute+time.Second {
		t.Errorf("forecast p50 wait %s, p95 %s; want 0 and at most one boot: the instances should be ready at 09:00", fc.WaitP50, fc.WaitP95)
	}
	// Ten instances over the rush's hour, plus the lead before it and the hold after: far below ten
	// instances for the whole day.
	if limit := 10 * 75.0; fc.InstanceMinutes > limit {
		t.Errorf("forecast used %.0f instance-minutes on day 3, want at most %.0f", fc.InstanceMinutes, limit)
	}
}
