package bench

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
)

func init() {
	Register(Bench{Name: "5 scaling", Run: runScaling})
}

// scalingStart is `fleetrunner simulate`'s default --start: a Monday at midnight UTC.
var scalingStart = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)

// scalingShortJobs is how many of each trace's first jobs the short profile replays.
const scalingShortJobs = 300

// scalingPolicy is the default policy of the table: upstream's defaults (one job per instance, no
// max_instances, no idle capacity) with a 10 minute idle_time, built by the executor's own mapping
// from config as `fleetrunner simulate` builds it, and the simulator's default boot delay.
func scalingPolicy() (sim.Config, error) {
	ac := &config.AutoscalerConfig{
		CapacityPerInstance: 1,
		Policy:              []config.AutoscalerPolicyConfig{{Timezone: "UTC", IdleCount: 0, IdleTime: 10 * time.Minute}},
	}
	opts, err := dockerautoscaler.TaskscalerOptions(ac, 0)
	if err != nil {
		return sim.Config{}, err
	}
	return sim.Config{Options: opts, Start: scalingStart, BootDelay: sim.DefaultBootDelay}, nil
}

// runScaling replays every trace of testdata/traces (see its SOURCES.md) through the real taskscaler on
// the simulated cloud and clock. The floor of instance-minutes is the jobs' own run time divided by the
// capacity per instance: no policy can pay for less.
func runScaling(t *testing.T, p Profile) []Row {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "traces", "*.csv"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no traces in testdata/traces at the repository root: %v", err)
	}
	cfg, err := scalingPolicy()
	if err != nil {
		t.Fatal(err)
	}
	capacity := float64(cfg.Options.CapacityPerInstance)
	var rows []Row
	for _, file := range files {
		jobs, err := sim.LoadTrace(file)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(file), ".csv")
		note := fmt.Sprintf("%d jobs, capacity 1, idle_count 0, idle_time 10m, boot %s", len(jobs), cfg.BootDelay)
		if p.Short && len(jobs) > scalingShortJobs {
			jobs = jobs[:scalingShortJobs]
			note = fmt.Sprintf("first %d jobs (short profile); ", len(jobs)) + note[strings.Index(note, "capacity"):]
		}
		var busy time.Duration
		for _, j := range jobs {
			busy += j.Duration
		}
		began := time.Now()
		res, err := sim.Run(t.Context(), jobs, cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %d jobs simulated in %s", name, len(jobs), time.Since(began).Round(time.Millisecond))
		rows = append(rows, Row{
			Name:      "scaling " + name + ": instance-minutes",
			Value:     res.InstanceMinutes,
			Unit:      "inst-min",
			Limit:     busy.Minutes() / capacity,
			LimitName: "the jobs' own run time / capacity_per_instance",
			Note:      note,
		}, Row{
			Name:  "scaling " + name + ": p95 wait",
			Value: res.WaitP95.Seconds(),
			Unit:  "s",
			Limit: cfg.BootDelay.Seconds(),
			// Not a floor of the p95 (a job that finds a free slot waits nothing) but of a cold start:
			// above 1× more than 5% of the jobs waited for a boot and the scaler's reaction.
			LimitName: "boot delay: the least a job that finds no free slot waits",
			Goal:      "figure (issue 14 tunes it)",
			Note:      fmt.Sprintf("p50 %s, p99 %s, max %s; peak %d instances", res.WaitP50.Round(100*time.Millisecond), res.WaitP99.Round(100*time.Millisecond), res.WaitMax.Round(100*time.Millisecond), res.PeakInstances),
		})
	}
	return rows
}
