package tune_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler/tune"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
)

var monday = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)

// bursts is days of traffic where the only jobs are a pipeline of n jobs of one minute at 09:30 each
// day, all at the same second.
func bursts(days, n int) []sim.Job {
	var jobs []sim.Job
	for d := range days {
		at := time.Duration(d)*24*time.Hour + 9*time.Hour + 30*time.Minute
		for range n {
			jobs = append(jobs, sim.Job{Arrival: at, Duration: time.Minute, Pipeline: fmt.Sprint(d)})
		}
	}
	return jobs
}

func fleet(maxInstances int) tune.Fleet {
	return tune.Fleet{Autoscaler: config.AutoscalerConfig{CapacityPerInstance: 1, MaxInstances: maxInstances}, BootDelay: time.Minute}
}

// TestSearchFindsTheBurstHour: with a burst of 4 jobs at 09:30 and nothing else, the cheapest plan with
// no wait keeps 4 idle slots from 09:00 to 09:59 only, with the shortest idle_time tried.
func TestSearchFindsTheBurstHour(t *testing.T) {
	out, err := tune.Search(t.Context(), tune.Input{Jobs: bursts(3, 4), Start: monday, Fleet: fleet(0), Target: 0})
	if err != nil {
		t.Fatal(err)
	}
	var want [24]int
	want[9] = 4
	if !out.Met || out.Plan.Idle != want || out.Plan.IdleTime != 2*time.Minute || out.Plan.ScaleFactor != 0 {
		t.Fatalf("plan %+v (met %v), want idle 4 in hour 9 only, idle_time 2m, no scale_factor", out.Plan, out.Met)
	}
	if out.Fit.WaitP95 != 0 || out.Evaluations < 3 {
		t.Errorf("fit p95 %s after %d evaluations", out.Fit.WaitP95, out.Evaluations)
	}
	pol := out.Plan.Policies()
	if len(pol) != 2 || pol[1].IdleCount != 4 || strings.Join(pol[1].Periods, ";") != "* 9 * * *" || pol[0].IdleCount != 0 || pol[0].Periods != nil {
		t.Errorf("policies %+v, want an all-day block with idle_count 0 and one for hour 9 with 4", pol)
	}
}

// TestSearchTargetNotMet: one instance at most cannot serve a burst of 4 at once without a wait; the
// search says so and returns the closest plan.
func TestSearchTargetNotMet(t *testing.T) {
	out, err := tune.Search(t.Context(), tune.Input{Jobs: bursts(3, 4), Start: monday, Fleet: fleet(1), Target: 0})
	if err != nil {
		t.Fatal(err)
	}
	if out.Met || out.Fit == nil || out.Fit.WaitP95 <= 0 {
		t.Fatalf("met %v with p95 %v, want the target reported as not met", out.Met, out.Fit)
	}
}

func TestPoliciesMergeHours(t *testing.T) {
	var p tune.Plan
	p.IdleTime = 5 * time.Minute
	for h := 8; h <= 17; h++ {
		p.Idle[h] = 3
	}
	p.Idle[12] = 5
	p.Idle[23] = 3
	pol := p.Policies()
	if len(pol) != 3 {
		t.Fatalf("%d blocks, want 3 (one per distinct idle_count): %+v", len(pol), pol)
	}
	if got := strings.Join(pol[1].Periods, ";"); pol[1].IdleCount != 3 || got != "* 8-11 * * *;* 13-17 * * *;* 23 * * *" {
		t.Errorf("idle_count 3 block: %d %q", pol[1].IdleCount, got)
	}
	if got := strings.Join(pol[2].Periods, ";"); pol[2].IdleCount != 5 || got != "* 12 * * *" {
		t.Errorf("idle_count 5 block: %d %q", pol[2].IdleCount, got)
	}

	// The blocks are TOML that config.toml takes under [runners.autoscaler], and read back the same.
	var cfg struct {
		Runners []struct {
			Autoscaler struct {
				Policy []config.AutoscalerPolicyConfig `toml:"policy"`
			} `toml:"autoscaler"`
		} `toml:"runners"`
	}
	text := "[[runners]]\n  [runners.autoscaler]\n" + tune.TOML(pol)
	if _, err := toml.Decode(text, &cfg); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	got := cfg.Runners[0].Autoscaler.Policy
	if len(got) != 3 || got[2].IdleTime != 5*time.Minute || got[2].Timezone != "UTC" || strings.Join(got[1].Periods, ";") != strings.Join(pol[1].Periods, ";") {
		t.Errorf("read back %+v\nfrom\n%s", got, text)
	}
}

// mornings and nights is a job at 09:30 and one at 23:30 on each of days.
func morningsAndNights(days int) []sim.Job {
	var jobs []sim.Job
	for d := range days {
		day := time.Duration(d) * 24 * time.Hour
		jobs = append(jobs, sim.Job{Arrival: day + 9*time.Hour + 30*time.Minute, Duration: time.Minute}, sim.Job{Arrival: day + 23*time.Hour + 30*time.Minute, Duration: time.Minute})
	}
	return jobs
}

func TestSplit(t *testing.T) {
	fit, held, heldStart, err := tune.Split(morningsAndNights(7), monday)
	if err != nil {
		t.Fatal(err)
	}
	if len(fit) != 10 || len(held) != 4 || !heldStart.Equal(monday.AddDate(0, 0, 5)) || held[0].Arrival != 9*time.Hour+30*time.Minute {
		t.Errorf("week: fit %d, held %d from %s (first at %s), want 10 and the last 2 days", len(fit), len(held), heldStart, held[0].Arrival)
	}
	fit, held, _, err = tune.Split(morningsAndNights(3), monday)
	if err != nil || len(fit) != 4 || len(held) != 2 {
		t.Errorf("3 days: fit %d, held %d, %v; want the last day held out", len(fit), len(held), err)
	}
	// Two days and a few jobs after midnight: the stragglers go with the last day.
	straggler := append(morningsAndNights(2), sim.Job{Arrival: 48*time.Hour + 10*time.Minute, Duration: time.Minute})
	fit, held, _, err = tune.Split(straggler, monday)
	if err != nil || len(fit) != 2 || len(held) != 3 {
		t.Errorf("2 days and a straggler: fit %d, held %d, %v; want day 2 and the straggler held out", len(fit), len(held), err)
	}
	if _, _, _, err := tune.Split(bursts(2, 2), monday); err == nil || !strings.Contains(err.Error(), "at least 2 days") {
		t.Errorf("a trace of 1 day and a bit: %v, want a refusal with the reason", err)
	}
}

func TestDemand(t *testing.T) {
	jobs := []sim.Job{{Arrival: 9 * time.Hour}, {Arrival: 9*time.Hour + 10*time.Second}, {Arrival: 9*time.Hour + 5*time.Minute}, {Arrival: 14 * time.Hour}}
	d := tune.Demand(jobs, monday, time.Minute)
	if d[9] != 2 || d[14] != 1 || d[0] != 0 {
		t.Errorf("demand %v, want 2 at 9 (two jobs within a minute), 1 at 14", d)
	}
}
