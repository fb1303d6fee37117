package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler/tune"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
)

type tuneFlags struct {
	simulateFlags
	target time.Duration
	out    string
	budget time.Duration
}

func (a *app) tuneCommand() *cobra.Command {
	var f tuneFlags
	cmd := &cobra.Command{
		Use:   "tune --trace FILE --target-p95 DURATION [-c config.toml [--runner NAME]] [fleet flags] [--out FILE]",
		Short: "Search the cheapest autoscaler policy that keeps the p95 queue wait under a target",
		Long: "tune searches [[runners.autoscaler.policy]] blocks written only in upstream's keys (cron periods by\n" +
			"hour of day, timezone, idle_count, idle_time, preemptive_mode) for the one with the fewest\n" +
			"instance-minutes whose 95th percentile of queue wait stays at or under --target-p95, judging every\n" +
			"candidate with the real taskscaler on the simulator (see `fleetrunner simulate`).\n\n" +
			"It fits on the older days of the trace and reports on the newest ones, held out (the last 2 days\n" +
			"of a trace of 6 days or more, else the last day), so the figures are for days the search never\n" +
			"saw. It prints the blocks, ready to paste under [runners.autoscaler] (--out also writes them to a\n" +
			"file), and a table on the held-out days: the tuned policy, the config's current policy (with -c)\n" +
			"and upstream-style single policies (idle_count 0, 2, 5, 10; idle_time 20m).\n\n" +
			"The fleet (capacity, max_instances, ...) comes from the config's runner or the fleet flags, as in\n" +
			"simulate; --forecast (or the config's [runners.autoscaler.forecast]) adds a row for the forecast\n" +
			"mode (on the config's policy, else idle_count 10 and idle_time 20m), which the search leaves out;\n" +
			"it learns online, so it runs on the whole trace and is measured on the held-out days. A trace\n" +
			"shorter than 2 days is refused. When no policy meets the target on the fitted days, tune says so,\n" +
			"prints the closest and exits non-zero.",
		Example: "  fleetrunner tune --trace job-history-runner-7.csv --target-p95 10s -c /etc/fleetrunner/config.toml --out policy.toml",
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return a.tune(cmd, &f) },
	}
	fl := cmd.Flags()
	addTraceFlags(fl, &f.simulateFlags)
	addFleetFlags(fl, &f.simulateFlags)
	fl.DurationVar(&f.target, "target-p95", 0, "highest 95th percentile of queue wait the policy may have (required)")
	fl.StringVar(&f.out, "out", "", "also write the policy blocks to this file")
	fl.DurationVar(&f.budget, "budget", tune.DefaultBudget, "wall time the search may spend; it stops refining when spent")
	_ = cmd.MarkFlagRequired("trace")
	_ = cmd.MarkFlagRequired("target-p95")
	return cmd
}

func (a *app) tune(cmd *cobra.Command, f *tuneFlags) error {
	if f.target < 0 {
		return fmt.Errorf("--target-p95 must not be negative, got %s", f.target)
	}
	jobs, start, err := loadSimTrace(f.trace, f.start)
	if err != nil {
		return err
	}
	fit, held, heldStart, err := tune.Split(jobs, start)
	if err != nil {
		return fmt.Errorf("trace %s: %w", f.trace, err)
	}
	var (
		name  string
		fleet tune.Fleet
	)
	fromFile := cmd.Flags().Changed("config") || os.Getenv("CONFIG_FILE") != ""
	if fromFile {
		name, fleet, err = a.simFleetFromFile(cmd, &f.simulateFlags, a.configPath)
	} else {
		if f.runner != "" {
			return errors.New("--runner names a runner of the config file: pass -c/--config too")
		}
		_, fleet, err = simFleetFromFlags(cmd, &f.simulateFlags)
	}
	if err != nil {
		return err
	}

	// The search is over upstream's keys; the forecast mode is a row of its own.
	searchFleet := fleet
	searchFleet.Autoscaler.Forecast = nil

	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "trace %s: %d jobs; fitting on %s to %s (%d jobs), holding out %s to %s (%d jobs); target p95 wait ≤ %s\n",
		f.trace, len(jobs), start.Format(time.DateTime), heldStart.Format(time.DateTime), len(fit),
		heldStart.Format(time.DateTime), heldStart.Add(held[len(held)-1].Arrival).Format(time.DateTime), len(held), f.target)
	began := time.Now()
	res, err := tune.Search(cmd.Context(), tune.Input{Jobs: fit, Start: start, Fleet: searchFleet, Target: f.target, Budget: f.budget, Log: a.log})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "searched %d candidate policies in %s\n\n", res.Evaluations, time.Since(began).Round(100*time.Millisecond))
	policies := res.Plan.Policies()
	blocks := tune.TOML(policies)
	if res.Met {
		fmt.Fprintf(out, "# tuned: cheapest policy with p95 wait ≤ %s on the fitted days (%s); paste under [runners.autoscaler]\n", f.target, fmtWait(res.Fit.WaitP95))
	} else {
		fmt.Fprintf(out, "# no policy tried keeps p95 wait ≤ %s on the fitted days; the closest (p95 %s):\n", f.target, fmtWait(res.Fit.WaitP95))
	}
	fmt.Fprint(out, blocks)
	if f.out != "" {
		if err := os.WriteFile(f.out, []byte(blocks), 0o600); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		fmt.Fprintf(out, "# written to %s\n", f.out)
	}

	type row struct {
		name     string
		fleet    tune.Fleet
		policies []config.AutoscalerPolicyConfig
	}
	table := []row{{"tuned", searchFleet, policies}}
	if fromFile {
		table = append(table, row{"current " + name, fleet, fleet.Autoscaler.Policy})
	}
	for _, n := range tune.UpstreamIdleCounts {
		table = append(table, row{fmt.Sprintf("idle_count=%d idle_time=%s", n, tune.UpstreamIdleTime), searchFleet, tune.Upstream(n, tune.UpstreamIdleTime)})
	}
	runs := make([]simRun, len(table))
	for i, r := range table {
		runs[i].name = r.name
		if runs[i].cfg, err = r.fleet.Config(r.policies, heldStart); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	rows, _, err := a.runSims(cmd.Context(), held, runs)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\non the held-out days (%d jobs the search never saw):\n", len(held))
	if err := writeSimTable(out, rows, false, false); err != nil {
		return err
	}
	fmt.Fprintln(out, verdict(rows, f.target))
	if fc := fleet.Autoscaler.Forecast; fc != nil && fc.Enabled {
		if err := a.tuneForecast(cmd, fleet, fromFile, jobs, start, heldStart, rows[0].LowerBoundMinutes); err != nil {
			return err
		}
	}
	if !res.Met {
		return fmt.Errorf("no policy tried keeps the p95 wait at or under %s on the fitted days (closest: %s); raise --target-p95, or raise max_instances or lower the boot delay if they bind",
			f.target, fmtWait(res.Fit.WaitP95))
	}
	return nil
}

// tuneForecast prints the forecast mode on the held-out days: it learns online, so it runs on the whole
// trace (on the config's policy, else the largest upstream-style one) and is measured from heldStart on.
func (a *app) tuneForecast(cmd *cobra.Command, fleet tune.Fleet, fromFile bool, jobs []sim.Job, start, heldStart time.Time, lowerBound float64) error {
	base := fleet.Autoscaler.Policy
	if !fromFile {
		base = tune.Upstream(slices.Max(tune.UpstreamIdleCounts), tune.UpstreamIdleTime)
	}
	cfg, err := fleet.Config(base, start)
	if err != nil {
		return fmt.Errorf("forecast: %w", err)
	}
	cfg.MeasureFrom = heldStart.Sub(start)
	p, err := sim.Run(cmd.Context(), jobs, cfg)
	if err != nil {
		return fmt.Errorf("simulating the forecast mode: %w", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "forecast mode (run on the whole trace, measured on the held-out days): %.1f instance-minutes (%.2f× the lower bound), p95 wait %s, p99 %s\n",
		p.InstanceMinutes, p.InstanceMinutes/lowerBound, fmtWait(p.WaitP95), fmtWait(p.WaitP99))
	return nil
}

// verdict compares the tuned row (the first) with the cheapest upstream-style row that meets the
// target on the held-out days.
func verdict(rows []simRow, target time.Duration) string {
	tuned := rows[0]
	var best *simRow
	for i := range rows {
		r := &rows[i]
		if strings.HasPrefix(r.Run, "idle_count=") && r.P95WaitS <= target.Seconds() && (best == nil || r.InstanceMinutes < best.InstanceMinutes) {
			best = r
		}
	}
	meets := "meets"
	if tuned.P95WaitS > target.Seconds() {
		meets = "misses"
	}
	line := fmt.Sprintf("tuned %s the target on the held-out days (p95 %s), at %.2f× the lower bound", meets, fmtWait(secs(tuned.P95WaitS)), tuned.InstanceMinutes/tuned.LowerBoundMinutes)
	if best == nil {
		return line + "; no upstream-style single policy meets it there"
	}
	return line + fmt.Sprintf("; the cheapest upstream-style policy that meets it there (%s) costs %.2f×: tuned uses %+.0f%% instance-minutes",
		best.Run, best.InstanceMinutes/best.LowerBoundMinutes, 100*(tuned.InstanceMinutes/best.InstanceMinutes-1))
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
