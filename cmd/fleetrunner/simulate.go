package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler/tune"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
)

// defaultSimStart is a Monday at midnight UTC, so that weekday periods line up with a trace that
// starts on a Monday.
const defaultSimStart = "2026-11-23T00:00:00Z"

type simulateFlags struct {
	trace, runner, compare, svg, start, format, sweep string
	pricePerHour, warmPricePerHour                    float64
	warmPool                                          int
	warmStartDelay                                    time.Duration

	bootDelay, deleteDelay, checkInterval                       time.Duration
	updateInterval, updateIntervalWhenExpecting, acquireTimeout time.Duration
	capacity, maxInstances, maxUseCount, limit                  int
	idleCount, scaleFactorLimit                                 int
	idleTime                                                    time.Duration
	scaleFactor                                                 float64
	preemptive, forecast                                        bool
}

// policyFlags replace a config file's policy list with one all-day policy.
var policyFlags = []string{"idle-count", "idle-time", "scale-factor", "scale-factor-limit", "preemptive"}

// fleetFlags describe the fleet and the simulated cloud; with policyFlags they are what --sweep varies.
var fleetFlags = []string{"boot-delay", "delete-delay", "check-interval", "limit", "capacity-per-instance", "max-instances",
	"max-use-count", "update-interval", "update-interval-when-expecting", "instance-acquire-timeout", "forecast"}

func (a *app) simulateCommand() *cobra.Command {
	var f simulateFlags
	cmd := &cobra.Command{
		Use:   "simulate --trace FILE [-c config.toml [--runner NAME]] [--compare other.toml] [flags]",
		Short: "Replay a job trace against the taskscaler: instance-minutes against queue wait",
		Long: "simulate replays a CI job trace (CSV: arrival_s,duration_s,pipeline) through the real taskscaler\n" +
			"on a simulated cloud and a simulated clock, and prints what the policy costs (instance-minutes,\n" +
			"booting included) against how long jobs wait for a slot (p50/p95/p99/max, waiting in GitLab's\n" +
			"queue included), so a policy is tuned before it costs money.\n\n" +
			"The policy comes from a config file's [runners.autoscaler] (the runner named by --runner, or the\n" +
			"first runner that has one), with its cron periods and time zones; trace second 0 is --start.\n" +
			"Policies without a timezone use this machine's local zone, as the manager would use its own.\n" +
			"Without a config file the flags describe the fleet. Fleet flags override the config's keys;\n" +
			"any policy flag (--idle-count, --idle-time, --scale-factor, --scale-factor-limit, --preemptive)\n" +
			"replaces the config's policy list with one all-day policy. --compare runs a second config file\n" +
			"(same trace and flags) and prints both rows.\n\n" +
			"WAIT/COST is minutes of queue wait per instance-minute; LOWER-BOUND is the jobs' own run time\n" +
			"divided by capacity_per_instance, the instance-minutes no policy can go under. --sweep KEY=V1,V2,...\n" +
			"runs once per value of one policy or fleet flag (KEY is the flag's name without dashes), one row\n" +
			"each; --price-per-hour adds what the instance-minutes cost. The simulator models one kind of\n" +
			"instance, so there are no spot prices.\n\n" +
			"--warm-pool N adds an Auto Scaling warm pool of N stopped instances beside the group and prints\n" +
			"each run twice, without and with the pool: the group takes pooled instances first and they run\n" +
			"after --warm-start-delay instead of --boot-delay; WARM-MIN is their stopped time, which COST\n" +
			"prices at --warm-price-per-hour (their EBS volume). Compare a row with idle-count=N against the\n" +
			"pooled row with idle-count=0 to see what the pool saves against idle running instances.\n\n" +
			"--format json prints an array with one object per row instead of the table.\n\n" +
			"A trace whose arrivals are Unix seconds (the manager's job history, see docs/operations.md)\n" +
			"starts at the Monday 00:00 UTC before its first job; --start is not used for it.",
		Example: "  fleetrunner simulate --trace jobs.csv --capacity-per-instance 2 --max-instances 40 --idle-count 4 --idle-time 20m\n" +
			"  fleetrunner simulate --trace jobs.csv -c config.toml --compare candidate.toml --svg fleet.svg\n" +
			"  fleetrunner simulate --trace jobs.csv --sweep idle-count=0,2,5,10 --idle-time 20m --price-per-hour 0.0832 --format json\n" +
			"  fleetrunner simulate --trace jobs.csv --sweep idle-count=0,2 --warm-pool 2 --price-per-hour 0.0832",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.simulate(cmd, &f) },
	}
	fl := cmd.Flags()
	addTraceFlags(fl, &f)
	fl.StringVar(&f.compare, "compare", "", "a second config file to simulate on the same trace, printed as a second row")
	fl.StringVar(&f.svg, "svg", "", "write a picture of instances and waiting jobs over time to this SVG file")
	fl.StringVar(&f.format, "format", "table", "output: table or json")
	fl.StringVar(&f.sweep, "sweep", "", "KEY=V1,V2,...: one run per value of a policy or fleet flag, e.g. idle-count=0,2,5")
	fl.Float64Var(&f.pricePerHour, "price-per-hour", 0, "price of one instance-hour; rows then show the cost")
	fl.IntVar(&f.warmPool, "warm-pool", 0, "also simulate each run with an Auto Scaling warm pool of this many stopped instances (0 = none)")
	fl.DurationVar(&f.warmStartDelay, "warm-start-delay", sim.DefaultWarmStartDelay, "time from the group taking a warm pool instance to its running")
	fl.Float64Var(&f.warmPricePerHour, "warm-price-per-hour", sim.DefaultWarmPricePerHour, "price of one hour of a stopped warm pool instance, its EBS volume (default: 30 GiB of gp3 at $0.08 per GiB-month)")
	addFleetFlags(fl, &f)
	addPolicyFlags(fl, &f)
	_ = cmd.MarkFlagRequired("trace")
	return cmd
}

// addTraceFlags are the trace and the config's runner, shared by simulate and tune.
func addTraceFlags(fl *pflag.FlagSet, f *simulateFlags) {
	fl.StringVar(&f.trace, "trace", "", "job trace, CSV with the header arrival_s,duration_s,pipeline (required)")
	fl.StringVar(&f.runner, "runner", "", "[[runners]] name in the config files (default: the first runner with [runners.autoscaler])")
	fl.StringVar(&f.start, "start", defaultSimStart, "wall time of the trace's second 0 (RFC 3339); policy periods are matched against it")
}

// addFleetFlags describe the fleet and the simulated cloud (fleetFlags).
func addFleetFlags(fl *pflag.FlagSet, f *simulateFlags) {
	fl.DurationVar(&f.bootDelay, "boot-delay", sim.DefaultBootDelay, "time from asking for an instance to its running")
	fl.DurationVar(&f.deleteDelay, "delete-delay", 0, "time an instance still exists (and costs) after it is removed")
	fl.DurationVar(&f.checkInterval, "check-interval", 0, "how often the runner polls again after Reserve failed (default: check_interval, or 3s)")
	fl.IntVar(&f.limit, "limit", 0, "most jobs the runner takes at once (default: the runner's limit and concurrent from the config; 0 = none)")
	fl.IntVar(&f.capacity, "capacity-per-instance", 1, "jobs per instance (capacity_per_instance)")
	fl.IntVar(&f.maxInstances, "max-instances", 0, "cap on instances in any state, 0 = none (max_instances)")
	fl.IntVar(&f.maxUseCount, "max-use-count", 0, "jobs an instance runs before it is retired, 0 = unlimited (max_use_count)")
	fl.DurationVar(&f.updateInterval, "update-interval", config.DefaultUpdateInterval, "update_interval")
	fl.DurationVar(&f.updateIntervalWhenExpecting, "update-interval-when-expecting", config.DefaultUpdateIntervalWhenExpecting, "update_interval_when_expecting")
	fl.DurationVar(&f.acquireTimeout, "instance-acquire-timeout", config.DefaultInstanceAcquireTimeout, "instance_acquire_timeout: a job waiting longer for a slot fails")
	fl.BoolVar(&f.forecast, "forecast", false, "follow the online forecast ([runners.autoscaler.forecast] enabled): the idle count learnt from the trace's earlier days")
}

// addPolicyFlags describe one all-day policy (policyFlags).
func addPolicyFlags(fl *pflag.FlagSet, f *simulateFlags) {
	fl.IntVar(&f.idleCount, "idle-count", 0, "idle slots to keep (policy idle_count)")
	fl.DurationVar(&f.idleTime, "idle-time", 0, "how long an instance may sit idle before removal (policy idle_time)")
	fl.Float64Var(&f.scaleFactor, "scale-factor", 0, "extra idle slots as a multiple of the slots in use (policy scale_factor)")
	fl.IntVar(&f.scaleFactorLimit, "scale-factor-limit", 0, "cap on what scale-factor adds, 0 = none (policy scale_factor_limit)")
	fl.BoolVar(&f.preemptive, "preemptive", false, "preemptive_mode: take a job only when an idle slot is ready (default: idle-count > 0)")
}

// simRun is one row: a name and what to simulate.
type simRun struct {
	name string
	cfg  sim.Config
}

func (a *app) simulate(cmd *cobra.Command, f *simulateFlags) error {
	if f.format != "table" && f.format != "json" {
		return fmt.Errorf("--format %q: want table or json", f.format)
	}
	if f.pricePerHour < 0 || f.warmPricePerHour < 0 {
		return fmt.Errorf("--price-per-hour and --warm-price-per-hour must not be negative, got %g and %g", f.pricePerHour, f.warmPricePerHour)
	}
	if f.warmPool < 0 || f.warmStartDelay <= 0 {
		return fmt.Errorf("--warm-pool must not be negative and --warm-start-delay must be positive, got %d and %s", f.warmPool, f.warmStartDelay)
	}
	jobs, start, err := loadSimTrace(f.trace, f.start)
	if err != nil {
		return err
	}
	key, values, err := parseSweep(f.sweep)
	if err != nil {
		return err
	}
	var runs []simRun
	for _, v := range values {
		if key != "" {
			if err := cmd.Flags().Set(key, v); err != nil {
				return fmt.Errorf("--sweep %s=%s: %w", key, v, err)
			}
		}
		rs, err := a.simRuns(cmd, f, start)
		if err != nil {
			return err
		}
		for i := range rs {
			if key != "" {
				rs[i].name += " " + key + "=" + v
			}
			if a.log.IsLevelEnabled(logrus.DebugLevel) {
				rs[i].cfg.Options.Logger = a.log.WithField("run", rs[i].name)
			}
		}
		runs = append(runs, withWarmPool(rs, f.warmPool, f.warmStartDelay)...)
	}

	rows, results, err := a.runSims(cmd.Context(), jobs, runs)
	if err != nil {
		return err
	}
	for i := range rows {
		rows[i].setPrice(results[i], f.pricePerHour, f.warmPricePerHour)
	}
	out := cmd.OutOrStdout()
	if f.format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	span := jobs[len(jobs)-1].Arrival
	fmt.Fprintf(out, "trace %s: %d jobs over %s; boot delay %s; trace starts %s\n",
		f.trace, len(jobs), span.Round(time.Second), f.bootDelay, start.Format(time.RFC3339))
	if f.warmPool > 0 {
		fmt.Fprintf(out, "warm pool %d stopped instances, warm start %s, stopped instance-hour %.4f\n", f.warmPool, f.warmStartDelay, f.warmPricePerHour)
	}
	if err := writeSimTable(out, rows, f.pricePerHour > 0, f.warmPool > 0); err != nil {
		return err
	}
	if f.svg != "" {
		var series []sim.Series
		for i, r := range runs {
			series = append(series, sim.Series{Name: r.name, Result: results[i]})
		}
		if err := writeSimSVG(f.svg, filepath.Base(f.trace), series); err != nil {
			return err
		}
		fmt.Fprintf(out, "picture: %s\n", f.svg)
	}
	return nil
}

// simRuns are the runs of one set of flags: the config file's runner (or the flags alone) and --compare.
func (a *app) simRuns(cmd *cobra.Command, f *simulateFlags, start time.Time) ([]simRun, error) {
	var runs []simRun
	if cmd.Flags().Changed("config") || os.Getenv("CONFIG_FILE") != "" {
		r, err := a.simRunFromFile(cmd, f, a.configPath, start)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	} else {
		if f.runner != "" && f.compare == "" {
			return nil, errors.New("--runner names a runner of the config file: pass -c/--config too")
		}
		r, err := simRunFromFlags(cmd, f, start)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	if f.compare != "" {
		r, err := a.simRunFromFile(cmd, f, f.compare, start)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// withWarmPool follows each run with the same run beside a warm pool of n instances; n 0 adds none.
func withWarmPool(runs []simRun, n int, warmStart time.Duration) []simRun {
	if n == 0 {
		return runs
	}
	out := make([]simRun, 0, 2*len(runs))
	for _, r := range runs {
		pooled := r
		pooled.name += fmt.Sprintf(" warm-pool=%d", n)
		pooled.cfg.WarmPool, pooled.cfg.WarmStartDelay = n, warmStart
		out = append(out, r, pooled)
	}
	return out
}

// parseSweep splits KEY=V1,V2,...; without a sweep there is one run with no key.
func parseSweep(sweep string) (key string, values []string, err error) {
	if sweep == "" {
		return "", []string{""}, nil
	}
	key, list, ok := strings.Cut(sweep, "=")
	key = strings.TrimPrefix(strings.TrimSpace(key), "--")
	if !ok || list == "" {
		return "", nil, fmt.Errorf("--sweep %q: want KEY=V1,V2,... such as idle-count=0,2,5", sweep)
	}
	if !slices.Contains(policyFlags, key) && !slices.Contains(fleetFlags, key) {
		return "", nil, fmt.Errorf("--sweep: %q is not a policy or fleet flag; one of %s", key, strings.Join(append(slices.Clone(policyFlags), fleetFlags...), ", "))
	}
	for v := range strings.SplitSeq(list, ",") {
		values = append(values, strings.TrimSpace(v))
	}
	return key, values, nil
}

// simRow is one run's figures, as the table and --format json show them.
type simRow struct {
	Run               string  `json:"run"`
	Jobs              int     `json:"jobs"`
	Failed            int     `json:"failed"`
	InstanceMinutes   float64 `json:"instance_minutes"`
	LowerBoundMinutes float64 `json:"lower_bound_minutes"`
	P50WaitS          float64 `json:"p50_wait_s"`
	P95WaitS          float64 `json:"p95_wait_s"`
	P99WaitS          float64 `json:"p99_wait_s"`
	MaxWaitS          float64 `json:"max_wait_s"`
	PeakInstances     int     `json:"peak_instances"`
	Launches          int     `json:"launches"`
	JobsPerInstance   float64 `json:"jobs_per_instance"`
	WaitPerCost       float64 `json:"wait_per_cost"`
	// WarmPool is the warm pool's size; WarmInstanceMinutes its instances' stopped time, WarmStarts
	// how many instances the group took from it.
	WarmPool            int     `json:"warm_pool"`
	WarmInstanceMinutes float64 `json:"warm_instance_minutes"`
	WarmStarts          int     `json:"warm_starts"`
	Cost                float64 `json:"cost,omitempty"`
}

func newSimRow(name string, cfg sim.Config, res *sim.Result, lowerBound float64) simRow {
	return simRow{
		Run: name, Jobs: res.Jobs, Failed: res.Failed, InstanceMinutes: res.InstanceMinutes, LowerBoundMinutes: lowerBound,
		P50WaitS: res.WaitP50.Seconds(), P95WaitS: res.WaitP95.Seconds(), P99WaitS: res.WaitP99.Seconds(), MaxWaitS: res.WaitMax.Seconds(),
		PeakInstances: res.PeakInstances, Launches: res.Instances, JobsPerInstance: res.JobsPerInstance(), WaitPerCost: res.WaitPerCost(),
		WarmPool: cfg.WarmPool, WarmInstanceMinutes: res.WarmInstanceMinutes, WarmStarts: res.WarmStarts,
	}
}

func (r *simRow) setPrice(res *sim.Result, perHour, warmPerHour float64) {
	r.Cost = res.Cost(perHour, warmPerHour)
}

// runSims simulates every run on jobs, as many at once as there are CPUs, and returns the rows and
// results in the order of runs.
func (a *app) runSims(ctx context.Context, jobs []sim.Job, runs []simRun) ([]simRow, []*sim.Result, error) {
	cfgs := make([]sim.Config, len(runs))
	for i, r := range runs {
		cfgs[i] = r.cfg
	}
	began := time.Now()
	results, err := tune.RunAll(ctx, jobs, cfgs, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("simulating: %w", err)
	}
	rows := make([]simRow, len(runs))
	for i, r := range runs {
		res := results[i]
		a.log.WithFields(logrus.Fields{"run": r.name, "steps": res.Steps, "reconciles": res.Reconciles}).Info("simulated")
		rows[i] = newSimRow(r.name, r.cfg, res, tune.LowerBoundMinutes(jobs, r.cfg.Options.CapacityPerInstance))
	}
	a.log.WithFields(logrus.Fields{"runs": len(runs), "took": time.Since(began).Round(time.Millisecond)}).Debug("simulations done")
	return rows, results, nil
}

func writeSimTable(out io.Writer, rows []simRow, priced, warm bool) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := "RUN\tJOBS\tFAILED\tINSTANCE-MIN\tPEAK\tINSTANCES\tJOBS/INST\tP50 WAIT\tP95 WAIT\tP99 WAIT\tMAX WAIT\tWAIT/COST\tLOWER-BOUND\t"
	if warm {
		head += "WARM-MIN\tWARM-STARTS\t"
	}
	if priced {
		head += "COST\t"
	}
	fmt.Fprintln(tw, head)
	sec := func(s float64) string { return fmtWait(secs(s)) }
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t%.4f\t%.1f\t", r.Run, r.Jobs, r.Failed, r.InstanceMinutes,
			r.PeakInstances, r.Launches, r.JobsPerInstance, sec(r.P50WaitS), sec(r.P95WaitS), sec(r.P99WaitS), sec(r.MaxWaitS), r.WaitPerCost, r.LowerBoundMinutes)
		if warm {
			fmt.Fprintf(tw, "%.1f\t%d\t", r.WarmInstanceMinutes, r.WarmStarts)
		}
		if priced {
			fmt.Fprintf(tw, "%.2f\t", r.Cost)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// loadSimTrace reads a trace that starts at --start; one in Unix seconds (the manager's job history)
// starts at the Monday before its first job instead, so that policy periods meet its jobs at their real
// hours.
func loadSimTrace(path, startFlag string) ([]sim.Job, time.Time, error) {
	start, err := time.Parse(time.RFC3339, startFlag)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("--start %q: want an RFC 3339 time such as %s", startFlag, defaultSimStart)
	}
	jobs, err := sim.LoadTrace(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	if rebased, monday, ok := sim.Rebase(jobs); ok {
		return rebased, monday, nil
	}
	return jobs, start, nil
}

func fmtWait(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

func writeSimSVG(path, title string, series []sim.Series) (err error) {
	file, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--svg: %w", err)
	}
	defer func() {
		if cerr := file.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("--svg: %w", cerr)
		}
	}()
	return sim.WriteSVG(file, title, series...)
}

// simRunFromFlags describes the fleet from the command line alone.
func simRunFromFlags(cmd *cobra.Command, f *simulateFlags, start time.Time) (simRun, error) {
	name, fleet, err := simFleetFromFlags(cmd, f)
	if err != nil {
		return simRun{}, err
	}
	return simRunOf(name, fleet, start)
}

// simRunFromFile takes the fleet from a config file's runner, with the command line's overrides.
func (a *app) simRunFromFile(cmd *cobra.Command, f *simulateFlags, path string, start time.Time) (simRun, error) {
	name, fleet, err := a.simFleetFromFile(cmd, f, path)
	if err != nil {
		return simRun{}, err
	}
	return simRunOf(name, fleet, start)
}

func simRunOf(name string, fleet tune.Fleet, start time.Time) (simRun, error) {
	cfg, err := fleet.Config(fleet.Autoscaler.Policy, start)
	if err != nil {
		return simRun{}, fmt.Errorf("%s: %w", name, err)
	}
	return simRun{name: name, cfg: cfg}, nil
}

func simFleetFromFlags(cmd *cobra.Command, f *simulateFlags) (string, tune.Fleet, error) {
	ac := &config.AutoscalerConfig{}
	if err := applySimFlags(cmd, f, ac, true); err != nil {
		return "", tune.Fleet{}, err
	}
	fleet, err := simFleet(cmd, f, ac, 0, 0)
	return "flags", fleet, err
}

// simFleetFromFile is a config file's runner with the command line's overrides; its policy list is
// the file's unless a policy flag replaced it.
func (a *app) simFleetFromFile(cmd *cobra.Command, f *simulateFlags, path string) (string, tune.Fleet, error) {
	cfg, warnings, err := config.Load(path)
	a.logWarnings(warnings)
	if err != nil {
		return "", tune.Fleet{}, err
	}
	rc, err := pickSimRunner(cfg, f.runner, path)
	if err != nil {
		return "", tune.Fleet{}, err
	}
	ac := *rc.Autoscaler
	ac.Policy = slices.Clone(ac.Policy)
	if err := applySimFlags(cmd, f, &ac, false); err != nil {
		return "", tune.Fleet{}, err
	}
	limit := rc.Limit
	if cfg.Concurrent > 0 && (limit <= 0 || cfg.Concurrent < limit) {
		limit = cfg.Concurrent
	}
	fleet, err := simFleet(cmd, f, &ac, limit, cfg.GetCheckInterval())
	return fmt.Sprintf("%s/%s", filepath.Base(path), rc.Name), fleet, err
}

func pickSimRunner(cfg *config.Config, name, path string) (*config.RunnerConfig, error) {
	var names []string
	for _, r := range cfg.Runners {
		names = append(names, r.Name)
		if r.Autoscaler == nil {
			continue
		}
		if name == "" || r.Name == name {
			return r, nil
		}
	}
	if name != "" {
		return nil, fmt.Errorf("%s has no [[runners]] entry named %q with [runners.autoscaler] (runners: %q)", path, name, names)
	}
	return nil, fmt.Errorf("%s has no [[runners]] entry with [runners.autoscaler]; add one, or describe the fleet with flags instead of --config", path)
}

// applySimFlags writes the flags the user set (all of them when fromFlags) into ac.
func applySimFlags(cmd *cobra.Command, f *simulateFlags, ac *config.AutoscalerConfig, fromFlags bool) error {
	set := func(name string) bool { return fromFlags || cmd.Flags().Changed(name) }
	if set("capacity-per-instance") {
		ac.CapacityPerInstance = f.capacity
	}
	if set("max-instances") {
		ac.MaxInstances = f.maxInstances
	}
	if set("max-use-count") {
		ac.MaxUseCount = f.maxUseCount
	}
	if set("update-interval") {
		ac.UpdateInterval = f.updateInterval
	}
	if set("update-interval-when-expecting") {
		ac.UpdateIntervalWhenExpecting = f.updateIntervalWhenExpecting
	}
	if set("instance-acquire-timeout") {
		ac.InstanceAcquireTimeout = f.acquireTimeout
	}
	if fromFlags || slices.ContainsFunc(policyFlags, cmd.Flags().Changed) {
		p := config.AutoscalerPolicyConfig{Timezone: "UTC", IdleCount: f.idleCount, IdleTime: f.idleTime, ScaleFactor: f.scaleFactor, ScaleFactorLimit: f.scaleFactorLimit}
		if cmd.Flags().Changed("preemptive") {
			p.PreemptiveMode = &f.preemptive
		}
		ac.Policy = []config.AutoscalerPolicyConfig{p}
	}
	if cmd.Flags().Changed("forecast") {
		if ac.Forecast == nil {
			ac.Forecast = &config.AutoscalerForecastConfig{}
		}
		ac.Forecast.Enabled = f.forecast
	}
	for _, n := range []string{"capacity-per-instance", "max-instances", "max-use-count"} {
		if v, _ := cmd.Flags().GetInt(n); v < 0 {
			return fmt.Errorf("--%s must not be negative, got %d", n, v)
		}
	}
	return nil
}

func simFleet(cmd *cobra.Command, f *simulateFlags, ac *config.AutoscalerConfig, limit int, checkInterval time.Duration) (tune.Fleet, error) {
	if cmd.Flags().Changed("limit") {
		limit = f.limit
	}
	if cmd.Flags().Changed("check-interval") {
		checkInterval = f.checkInterval
	}
	if f.bootDelay < 0 || f.deleteDelay < 0 {
		return tune.Fleet{}, errors.New("--boot-delay and --delete-delay must not be negative")
	}
	return tune.Fleet{
		Autoscaler:    *ac,
		BootDelay:     f.bootDelay,
		DeleteDelay:   f.deleteDelay,
		CheckInterval: checkInterval,
		Limit:         limit,
	}, nil
}
