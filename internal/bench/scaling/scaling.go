// Package scaling is the table of `make bench-scaling`: for each job trace of testdata/traces, what
// upstream-style single policies, the policy `fleetrunner tune` finds and the forecast mode cost
// (instance-hours over the lower bound) against the queue wait they give (p95, p99), all measured on
// the held-out days the tuning never saw, and whether the goal of issue 14 is met on that trace.
//
// Every row is a run of the whole trace through the real taskscaler on the simulator, measured on the
// held-out days only (their jobs' waits and the instance time in them), so that the forecast mode
// has learnt from the earlier days as it would in production, and every row starts those days the
// same way.
package scaling

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler/tune"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
)

// Saving is the goal: the tuned policy or the forecast mode meets the target with at least this share
// fewer instance-hours than the cheapest upstream-style single policy that meets it.
const Saving = 0.25

// Setup is the fleet and the target of the table.
type Setup struct {
	// Target is the p95 queue wait a policy must keep on the held-out days to count as meeting it.
	Target    time.Duration
	BootDelay time.Duration
	Capacity  int
	// Budget is tune's search time per trace.
	Budget time.Duration
	// Short keeps each trace's first two days and an hour (the short profile of `go test`).
	Short bool
	Log   logrus.FieldLogger
}

// DefaultSetup is the fleet: one job per instance, a 60 s boot, p95 wait within half a boot.
func DefaultSetup() Setup {
	return Setup{Target: 30 * time.Second, BootDelay: 60 * time.Second, Capacity: 1, Budget: tune.DefaultBudget}
}

// Row is one policy on one trace's held-out days.
type Row struct {
	Trace, Policy string
	// InstanceHours and LowerBoundHours are on the held-out days; the bound is the held-out jobs' own
	// run time over the capacity per instance.
	InstanceHours, LowerBoundHours float64
	P95, P99                       time.Duration
	Jobs                           int
	Kind                           Kind
}

// Kind tells the rows of a trace apart for the goal.
type Kind int

// The kinds of row.
const (
	Upstream Kind = iota
	Tuned
	Forecast
)

// Ratio is the instance-hours over the lower bound.
func (r Row) Ratio() float64 { return r.InstanceHours / r.LowerBoundHours }

// Trace is one trace's rows and the goal's verdict on it.
type Trace struct {
	Name string
	// Target is the p95 wait the verdict asks for: the setup's, or the lowest an upstream-style
	// single policy reaches on the held-out days when none of them reaches the setup's.
	Target   time.Duration
	Rows     []Row
	Verdict  string
	Met      bool
	HeldDays string
}

// Run measures every trace file.
func Run(ctx context.Context, files []string, s Setup) ([]Trace, error) {
	var out []Trace
	for _, file := range files {
		t, err := runTrace(ctx, file, s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(file), err)
		}
		out = append(out, t)
	}
	return out, nil
}

func runTrace(ctx context.Context, file string, s Setup) (Trace, error) {
	name := strings.TrimSuffix(filepath.Base(file), ".csv")
	jobs, err := sim.LoadTrace(file)
	if err != nil {
		return Trace{}, err
	}
	start := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	if s.Short {
		jobs = shorten(jobs)
	}
	fit, held, heldStart, err := tune.Split(jobs, start)
	if err != nil {
		return Trace{}, err
	}
	cut := heldStart.Sub(start)
	lower := tune.LowerBoundMinutes(held, s.Capacity) / 60
	t := Trace{Name: name, Target: s.Target, HeldDays: fmt.Sprintf("%d held-out jobs from %s", len(held), heldStart.Format("Mon 2006-01-02"))}
	fleet := tune.Fleet{Autoscaler: config.AutoscalerConfig{CapacityPerInstance: s.Capacity}, BootDelay: s.BootDelay}
	measure := func(runs []run) error {
		cfgs := make([]sim.Config, len(runs))
		for i, r := range runs {
			if cfgs[i], err = r.fleet.Config(r.policies, start); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			cfgs[i].MeasureFrom = cut
		}
		results, err := tune.RunAll(ctx, jobs, cfgs, 0)
		if err != nil {
			return err
		}
		for i, r := range runs {
			m := results[i]
			t.Rows = append(t.Rows, Row{Trace: name, Policy: r.name, Kind: r.kind, InstanceHours: m.InstanceMinutes / 60, LowerBoundHours: lower, P95: m.WaitP95, P99: m.WaitP99, Jobs: m.Jobs})
		}
		return nil
	}

	var upstream []run
	for _, n := range tune.UpstreamIdleCounts {
		upstream = append(upstream, run{fmt.Sprintf("upstream idle_count=%d idle_time=%s", n, tune.UpstreamIdleTime), Upstream, fleet, tune.Upstream(n, tune.UpstreamIdleTime)})
	}
	if err := measure(upstream); err != nil {
		return Trace{}, err
	}
	// Where no upstream-style policy keeps the target, the goal is the best p95 one of them reaches.
	best := t.Rows[0].P95
	for _, r := range t.Rows {
		best = min(best, r.P95)
	}
	if best > t.Target {
		t.Target = best
	}
	found, err := tune.Search(ctx, tune.Input{Jobs: fit, Start: start, Fleet: fleet, Target: t.Target, Budget: s.Budget, Log: s.Log})
	if err != nil {
		return Trace{}, err
	}
	fc := fleet
	fc.Autoscaler.Forecast = &config.AutoscalerForecastConfig{Enabled: true}
	err = measure([]run{
		{"tuned (" + summary(found) + ")", Tuned, fleet, found.Plan.Policies()},
		{fmt.Sprintf("forecast (on idle_count %d, idle_time %s, preemptive_mode false)", forecastCap, tune.UpstreamIdleTime), Forecast, fc, forecastPolicy()},
	})
	if err != nil {
		return Trace{}, err
	}
	t.Verdict, t.Met = verdict(t.Rows, t.Target)
	return t, nil
}

// run is one row to simulate.
type run struct {
	name     string
	kind     Kind
	fleet    tune.Fleet
	policies []config.AutoscalerPolicyConfig
}

// forecastCap is the idle_count of the forecast row's policy, which the forecast replaces.
const forecastCap = 10

// forecastPolicy is the policy the forecast row runs on: the largest upstream-style one, with
// preemptive_mode off as the tuned plans have it, so that a burst above the forecast takes slots on
// booting instances instead of waiting in GitLab's queue.
func forecastPolicy() []config.AutoscalerPolicyConfig {
	p := tune.Upstream(forecastCap, tune.UpstreamIdleTime)
	off := false
	p[0].PreemptiveMode = &off
	return p
}

func summary(o tune.Outcome) string {
	n := len(o.Plan.Policies())
	s := fmt.Sprintf("%d blocks, idle_time %s", n, o.Plan.IdleTime)
	if o.Plan.ScaleFactor > 0 {
		s += fmt.Sprintf(", scale_factor %g", o.Plan.ScaleFactor)
	}
	if !o.Met {
		s += ", target not met on the fit"
	}
	return s
}

// shorten keeps the first two days and a bit of a trace, for the short profile: the least tune takes.
func shorten(jobs []sim.Job) []sim.Job {
	limit := tune.MinSpan + time.Hour
	for i, j := range jobs {
		if j.Arrival > limit {
			return jobs[:i]
		}
	}
	return jobs
}

// verdict applies the goal: the tuned or forecast row meets the target with at least Saving fewer
// instance-hours than the cheapest upstream-style row that meets it.
func verdict(rows []Row, target time.Duration) (string, bool) {
	var base *Row
	for i := range rows {
		r := &rows[i]
		if r.Kind == Upstream && r.P95 <= target && (base == nil || r.InstanceHours < base.InstanceHours) {
			base = r
		}
	}
	if base == nil {
		return fmt.Sprintf("no upstream-style single policy keeps p95 ≤ %s here: nothing to beat", target), false
	}
	var best *Row
	for i := range rows {
		r := &rows[i]
		if r.Kind != Upstream && (best == nil || better(r, best, target)) {
			best = r
		}
	}
	saving := 1 - best.InstanceHours/base.InstanceHours
	switch {
	case best.P95 > target:
		return fmt.Sprintf("NOT MET: cheapest upstream meeting p95 ≤ %s is %q (%.2f×); neither tuned nor forecast meets the target (best: %s, p95 %s, %+.0f%% instance-hours)",
			target, base.Policy, base.Ratio(), short(best.Policy), best.P95.Round(100*time.Millisecond), -100*saving), false
	case saving < Saving:
		return fmt.Sprintf("NOT MET: %s meets p95 ≤ %s with %+.0f%% instance-hours against %q (%.2f× vs %.2f× the bound); the goal is -%.0f%%, short by %.0f points",
			short(best.Policy), target, -100*saving, base.Policy, best.Ratio(), base.Ratio(), 100*Saving, 100*(Saving-saving)), false
	}
	return fmt.Sprintf("MET: %s meets p95 ≤ %s with %+.0f%% instance-hours against %q (%.2f× vs %.2f× the bound); the goal is -%.0f%%",
		short(best.Policy), target, -100*saving, base.Policy, best.Ratio(), base.Ratio(), 100*Saving), true
}

// better prefers a row that meets the target, then the cheaper one.
func better(a, b *Row, target time.Duration) bool {
	am, bm := a.P95 <= target, b.P95 <= target
	if am != bm {
		return am
	}
	if !am {
		return a.P95 < b.P95
	}
	return a.InstanceHours < b.InstanceHours
}

func short(policy string) string {
	name, _, _ := strings.Cut(policy, " (")
	return name
}

// Text is the table and the verdicts as plain text.
func Text(traces []Trace, s Setup) string {
	var b strings.Builder
	fmt.Fprintf(&b, "== scaling table: capacity %d, boot %s, target p95 ≤ %s (or the best an upstream-style policy reaches); every figure on the held-out days\n", s.Capacity, s.BootDelay, s.Target)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "TRACE\tPOLICY\tINST-H\tLOWER BOUND H\tINST-H / BOUND\tP95 WAIT\tP99 WAIT")
	for _, t := range traces {
		for _, r := range t.Rows {
			fmt.Fprintf(w, "%s\t%s\t%.1f\t%.1f\t%.2f\t%s\t%s\n", t.Name, r.Policy, r.InstanceHours, r.LowerBoundHours, r.Ratio(),
				r.P95.Round(100*time.Millisecond), r.P99.Round(100*time.Millisecond))
		}
	}
	_ = w.Flush()
	for _, t := range traces {
		fmt.Fprintf(&b, "%s (%s; target p95 ≤ %s): %s\n", t.Name, t.HeldDays, t.Target.Round(100*time.Millisecond), t.Verdict)
	}
	b.WriteString("== end of scaling table\n")
	return b.String()
}
