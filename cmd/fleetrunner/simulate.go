package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
)

// defaultSimStart is a Monday at midnight UTC, so that weekday periods line up with a trace that
// starts on a Monday.
const defaultSimStart = "2026-11-23T00:00:00Z"

type simulateFlags struct {
	trace, runner, compare, svg, start string

	bootDelay, deleteDelay, checkInterval                       time.Duration
	updateInterval, updateIntervalWhenExpecting, acquireTimeout time.Duration
	capacity, maxInstances, maxUseCount, limit                  int
	idleCount, scaleFactorLimit                                 int
	idleTime                                                    time.Duration
	scaleFactor                                                 float64
	preemptive                                                  bool
	forecast                                                    bool
}

// policyFlags replace a config file's policy list with one all-day policy.
var policyFlags = []string{"idle-count", "idle-time", "scale-factor", "scale-factor-limit", "preemptive"}

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
			"WAIT/COST is minutes of queue wait per instance-minute.",
		Example: "  fleetrunner simulate --trace jobs.csv --capacity-per-instance 2 --max-instances 40 --idle-count 4 --idle-time 20m\n" +
			"  fleetrunner simulate --trace jobs.csv -c config.toml --compare candidate.toml --svg fleet.svg",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.simulate(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.trace, "trace", "", "job trace, CSV with the header arrival_s,duration_s,pipeline (required)")
	fl.StringVar(&f.runner, "runner", "", "[[runners]] name in the config files (default: the first runner with [runners.autoscaler])")
	fl.StringVar(&f.compare, "compare", "", "a second config file to simulate on the same trace, printed as a second row")
	fl.StringVar(&f.svg, "svg", "", "write a picture of instances and waiting jobs over time to this SVG file")
	fl.StringVar(&f.start, "start", defaultSimStart, "wall time of the trace's second 0 (RFC 3339); policy periods are matched against it")
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
	fl.IntVar(&f.idleCount, "idle-count", 0, "idle slots to keep (policy idle_count)")
	fl.DurationVar(&f.idleTime, "idle-time", 0, "how long an instance may sit idle before removal (policy idle_time)")
	fl.Float64Var(&f.scaleFactor, "scale-factor", 0, "extra idle slots as a multiple of the slots in use (policy scale_factor)")
	fl.IntVar(&f.scaleFactorLimit, "scale-factor-limit", 0, "cap on what scale-factor adds, 0 = none (policy scale_factor_limit)")
	fl.BoolVar(&f.preemptive, "preemptive", false, "preemptive_mode: take a job only when an idle slot is ready (default: idle-count > 0)")
	fl.BoolVar(&f.forecast, "forecast", false, "follow the online forecast ([runners.autoscaler.forecast] enabled): the idle count learnt from the trace's earlier days")
	_ = cmd.MarkFlagRequired("trace")
	return cmd
}

// simRun is one row: a name and what to simulate.
type simRun struct {
	name string
	cfg  sim.Config
}

func (a *app) simulate(cmd *cobra.Command, f *simulateFlags) error {
	start, err := time.Parse(time.RFC3339, f.start)
	if err != nil {
		return fmt.Errorf("--start %q: want an RFC 3339 time such as %s", f.start, defaultSimStart)
	}
	jobs, err := sim.LoadTrace(f.trace)
	if err != nil {
		return err
	}
	var runs []simRun
	if cmd.Flags().Changed("config") || os.Getenv("CONFIG_FILE") != "" {
		r, err := a.simRunFromFile(cmd, f, a.configPath, start)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	} else {
		if f.runner != "" && f.compare == "" {
			return errors.New("--runner names a runner of the config file: pass -c/--config too")
		}
		r, err := simRunFromFlags(cmd, f, start)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	if f.compare != "" {
		r, err := a.simRunFromFile(cmd, f, f.compare, start)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}

	out := cmd.OutOrStdout()
	span := jobs[len(jobs)-1].Arrival
	fmt.Fprintf(out, "trace %s: %d jobs over %s; boot delay %s; trace starts %s\n",
		f.trace, len(jobs), span.Round(time.Second), f.bootDelay, start.Format(time.RFC3339))
	for i := range runs {
		if a.log.IsLevelEnabled(logrus.DebugLevel) {
			runs[i].cfg.Options.Logger = a.log.WithField("run", runs[i].name)
		}
	}
	var series []sim.Series
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RUN\tJOBS\tFAILED\tINSTANCE-MIN\tPEAK\tINSTANCES\tJOBS/INST\tP50 WAIT\tP95 WAIT\tP99 WAIT\tMAX WAIT\tWAIT/COST\t")
	for _, r := range runs {
		began := time.Now()
		res, err := sim.Run(cmd.Context(), jobs, r.cfg)
		if err != nil {
			return fmt.Errorf("simulating %s: %w", r.name, err)
		}
		a.log.WithFields(logrus.Fields{"run": r.name, "took": time.Since(began).Round(time.Millisecond), "steps": res.Steps, "reconciles": res.Reconciles}).Info("simulated")
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t%.4f\t\n", r.name, res.Jobs, res.Failed, res.InstanceMinutes,
			res.PeakInstances, res.Instances, res.JobsPerInstance(), fmtWait(res.WaitP50), fmtWait(res.WaitP95),
			fmtWait(res.WaitP99), fmtWait(res.WaitMax), res.WaitPerCost())
		series = append(series, sim.Series{Name: r.name, Result: res})
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if f.svg != "" {
		if err := writeSimSVG(f.svg, filepath.Base(f.trace), series); err != nil {
			return err
		}
		fmt.Fprintf(out, "picture: %s\n", f.svg)
	}
	return nil
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
	ac := &config.AutoscalerConfig{}
	if err := applySimFlags(cmd, f, ac, true); err != nil {
		return simRun{}, err
	}
	return simRunFor("flags", f, ac, 0, 0, start, cmd)
}

// simRunFromFile takes the fleet from a config file's runner, with the command line's overrides.
func (a *app) simRunFromFile(cmd *cobra.Command, f *simulateFlags, path string, start time.Time) (simRun, error) {
	cfg, warnings, err := config.Load(path)
	a.logWarnings(warnings)
	if err != nil {
		return simRun{}, err
	}
	rc, err := pickSimRunner(cfg, f.runner, path)
	if err != nil {
		return simRun{}, err
	}
	ac := *rc.Autoscaler
	ac.Policy = slices.Clone(ac.Policy)
	if err := applySimFlags(cmd, f, &ac, false); err != nil {
		return simRun{}, err
	}
	limit := rc.Limit
	if cfg.Concurrent > 0 && (limit <= 0 || cfg.Concurrent < limit) {
		limit = cfg.Concurrent
	}
	return simRunFor(fmt.Sprintf("%s/%s", filepath.Base(path), rc.Name), f, &ac, limit, cfg.GetCheckInterval(), start, cmd)
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

func simRunFor(name string, f *simulateFlags, ac *config.AutoscalerConfig, limit int, checkInterval time.Duration, start time.Time, cmd *cobra.Command) (simRun, error) {
	opts, err := dockerautoscaler.TaskscalerOptions(ac, 0)
	if err != nil {
		return simRun{}, fmt.Errorf("%s: %w", name, err)
	}
	if cmd.Flags().Changed("limit") {
		limit = f.limit
	}
	if cmd.Flags().Changed("check-interval") {
		checkInterval = f.checkInterval
	}
	if f.bootDelay < 0 || f.deleteDelay < 0 {
		return simRun{}, errors.New("--boot-delay and --delete-delay must not be negative")
	}
	return simRun{name: name, cfg: sim.Config{
		Options:       opts,
		Start:         start,
		BootDelay:     f.bootDelay,
		NoBootDelay:   f.bootDelay == 0,
		DeleteDelay:   f.deleteDelay,
		CheckInterval: checkInterval,
		Limit:         limit,
	}}, nil
}
