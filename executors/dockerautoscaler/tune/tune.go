// Package tune searches, offline, for the cheapest docker-autoscaler policy that keeps the 95th
// percentile of queue wait at or under a target on a job trace. The answer is written only in
// upstream's keys ([[runners.autoscaler.policy]] blocks with cron periods, timezone, idle_count,
// idle_time, preemptive_mode), so a config.toml that uses it still loads in upstream gitlab-runner.
//
// Every candidate is judged by the real taskscaler on the simulator (taskscaler/sim). The search is
// small on purpose, because one simulated week of 25k jobs takes seconds:
//
//  1. demand per hour of day: for each job, the jobs that arrive within one boot (the slots that must
//     be idle already for none of them to wait), and its 95th percentile over the jobs of that hour;
//  2. a family of plans scaling that demand (idle_count per hour = ⌈m × demand / capacity⌉), searched
//     for the smallest m that meets the target, then the idle_time that is cheapest at about that m;
//  3. part of the idle_count traded for scale_factor, and upstream's default preemptive_mode instead
//     of off;
//  4. coordinate descent: lower each run of equal hours and keep what still meets the target.
//
// The search stops refining when its time budget is spent; the scale probes of step 2 always finish.
// Every candidate must also meet the target on the fitted days thinned to one pipeline in eight, so
// that a plan that only works at full traffic is not chosen for quieter days.
//
// Hours with the same idle_count share one policy block, so a plan has as many blocks as distinct
// values.
package tune

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
)

// DefaultBudget leaves a week of 25k jobs room for the held-out runs within a minute on 2 cores.
const DefaultBudget = 30 * time.Second

// MinSpan is the shortest trace tune accepts: one day to fit and one held out.
const MinSpan = 48 * time.Hour

// UpstreamIdleCounts and UpstreamIdleTime are the upstream-style single policies a tuned plan is
// compared with.
var UpstreamIdleCounts = []int{0, 2, 5, 10}

const UpstreamIdleTime = 20 * time.Minute

// idleTimes are the idle_time values the search tries; scales the multiples of demand.
var (
	idleTimes = []time.Duration{2 * time.Minute, 10 * time.Minute}
	scales    = []float64{0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3}
	// scaleFactors replace part of the hourly idle_count by idle slots in proportion to the slots in
	// use, which follows a quieter day (a weekend) that the fitted days did not show.
	scaleFactors = []struct {
		share  float64 // of the hourly idle_count kept
		factor float64
	}{{0.5, 0.5}, {0.25, 1}}
)

// startIdleTime is the idle_time of step 2's search for the scale.
const startIdleTime = 5 * time.Minute

// Fleet is everything about a run but the policies: the runner's [runners.autoscaler] section (its
// policy list is replaced) and the simulated cloud.
type Fleet struct {
	Autoscaler    config.AutoscalerConfig
	BootDelay     time.Duration // 0 means the instances run at once
	DeleteDelay   time.Duration
	CheckInterval time.Duration
	Limit         int
	// WarmPool and WarmStartDelay are sim.Config's: an Auto Scaling warm pool beside the group.
	WarmPool       int
	WarmStartDelay time.Duration
}

// Config is the simulator's run of this fleet under policies, with the trace's second 0 at start.
func (f Fleet) Config(policies []config.AutoscalerPolicyConfig, start time.Time) (sim.Config, error) {
	ac := f.Autoscaler
	ac.Policy = policies
	opts, err := dockerautoscaler.TaskscalerOptions(&ac, 0)
	if err != nil {
		return sim.Config{}, err
	}
	return sim.Config{
		Options:        opts,
		Start:          start,
		BootDelay:      f.BootDelay,
		NoBootDelay:    f.BootDelay == 0,
		DeleteDelay:    f.DeleteDelay,
		CheckInterval:  f.CheckInterval,
		Limit:          f.Limit,
		WarmPool:       f.WarmPool,
		WarmStartDelay: f.WarmStartDelay,
	}, nil
}

// Upstream is the single all-day policy an operator would write by hand: idle slots, idle_time.
func Upstream(idleCount int, idleTime time.Duration) []config.AutoscalerPolicyConfig {
	return []config.AutoscalerPolicyConfig{{Timezone: "UTC", IdleCount: idleCount, IdleTime: idleTime}}
}

// Split holds out the newest days of a trace that starts at start: the last 2 days of a trace of 6 days
// or more, else the last day (and whatever comes after it). fit keeps its times; held is counted from heldStart. A trace
// shorter than MinSpan is refused.
func Split(jobs []sim.Job, start time.Time) (fit, held []sim.Job, heldStart time.Time, err error) {
	if len(jobs) == 0 {
		return nil, nil, time.Time{}, errors.New("the trace has no jobs")
	}
	span := jobs[len(jobs)-1].Arrival
	if span < MinSpan {
		return nil, nil, time.Time{}, fmt.Errorf("the trace covers %s; tune needs at least 2 days: it fits the policy on the older days and reports it on the newest day, which the fit never sees", span.Round(time.Minute))
	}
	// Whole days, rounded: a last job just before midnight ends the last day, a few jobs just after it
	// do not make a day of their own.
	days := max(int(math.Round(float64(span)/float64(24*time.Hour))), 2)
	heldDays := 1
	if days >= 6 {
		heldDays = 2
	}
	cut := time.Duration(days-heldDays) * 24 * time.Hour
	i, _ := slices.BinarySearchFunc(jobs, cut, func(j sim.Job, t time.Duration) int { return cmp.Compare(j.Arrival, t) })
	fit = jobs[:i]
	for _, j := range jobs[i:] {
		j.Arrival -= cut
		held = append(held, j)
	}
	if len(fit) == 0 || len(held) == 0 {
		return nil, nil, time.Time{}, fmt.Errorf("the trace has no jobs before or after %s; tune needs jobs on at least 2 days", start.Add(cut).Format(time.RFC3339))
	}
	return fit, held, start.Add(cut), nil
}

// Plan is a candidate: idle_count for each hour of the day (UTC), one idle_time and scale_factor, and
// preemptive_mode (nil: upstream's default, on where idle_count > 0).
type Plan struct {
	Idle        [24]int
	IdleTime    time.Duration
	ScaleFactor float64
	Preemptive  *bool
}

// Policies writes the plan as policy blocks: an all-day block with the most common idle_count, then
// one block per other value with the hour ranges where it applies (the last matching block wins).
func (p Plan) Policies() []config.AutoscalerPolicyConfig {
	count := map[int]int{}
	for _, v := range p.Idle {
		count[v]++
	}
	base := p.Idle[0]
	for v, n := range count {
		if n > count[base] || n == count[base] && v < base {
			base = v
		}
	}
	block := func(v int, periods []string) config.AutoscalerPolicyConfig {
		return config.AutoscalerPolicyConfig{Periods: periods, Timezone: "UTC", IdleCount: v, IdleTime: p.IdleTime, ScaleFactor: p.ScaleFactor, PreemptiveMode: p.Preemptive}
	}
	out := []config.AutoscalerPolicyConfig{block(base, nil)}
	values := slices.Sorted(func(yield func(int) bool) {
		for v := range count {
			if v != base && !yield(v) {
				return
			}
		}
	})
	for _, v := range values {
		var periods []string
		for _, r := range p.runs() {
			if r.value == v {
				periods = append(periods, r.cron())
			}
		}
		out = append(out, block(v, periods))
	}
	return out
}

// hourRun is a maximal range of consecutive hours with one idle_count.
type hourRun struct{ from, to, value int }

func (r hourRun) cron() string {
	if r.from == r.to {
		return fmt.Sprintf("* %d * * *", r.from)
	}
	return fmt.Sprintf("* %d-%d * * *", r.from, r.to)
}

func (p Plan) runs() []hourRun {
	var out []hourRun
	for h := range 24 {
		if n := len(out); n > 0 && out[n-1].value == p.Idle[h] {
			out[n-1].to = h
			continue
		}
		out = append(out, hourRun{from: h, to: h, value: p.Idle[h]})
	}
	return out
}

// TOML is the plan as [[runners.autoscaler.policy]] blocks, ready to paste under [runners.autoscaler].
func TOML(policies []config.AutoscalerPolicyConfig) string {
	var b strings.Builder
	for i, p := range policies {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString("  [[runners.autoscaler.policy]]\n")
		if len(p.Periods) > 0 {
			quoted := make([]string, len(p.Periods))
			for i, s := range p.Periods {
				quoted[i] = fmt.Sprintf("%q", s)
			}
			fmt.Fprintf(&b, "    periods = [%s]\n", strings.Join(quoted, ", "))
		}
		if p.Timezone != "" {
			fmt.Fprintf(&b, "    timezone = %q\n", p.Timezone)
		}
		fmt.Fprintf(&b, "    idle_count = %d\n", p.IdleCount)
		fmt.Fprintf(&b, "    idle_time = %q\n", p.IdleTime.String())
		if p.ScaleFactor != 0 {
			fmt.Fprintf(&b, "    scale_factor = %g\n", p.ScaleFactor)
		}
		if p.ScaleFactorLimit != 0 {
			fmt.Fprintf(&b, "    scale_factor_limit = %d\n", p.ScaleFactorLimit)
		}
		if p.PreemptiveMode != nil {
			fmt.Fprintf(&b, "    preemptive_mode = %t\n", *p.PreemptiveMode)
		}
	}
	return b.String()
}

// Input is one search.
type Input struct {
	Jobs  []sim.Job // the part to fit on
	Start time.Time // wall time of the jobs' second 0
	Fleet Fleet
	// Target is the highest 95th percentile of queue wait a plan may have.
	Target time.Duration
	// Budget bounds the search's wall time; refining stops when it is spent. 0 means DefaultBudget.
	Budget time.Duration
	// Parallel simulations; 0 means GOMAXPROCS.
	Parallel int
	Log      logrus.FieldLogger
}

// Outcome is the search's answer on the part it fitted.
type Outcome struct {
	Plan Plan
	Fit  *sim.Result
	// Met says the plan meets the target on the fitted part; when no candidate did, Plan is the one
	// with the lowest p95 wait.
	Met         bool
	Evaluations int
}

type candidate struct {
	plan Plan
	res  *sim.Result
	// quiet is the run on the thinned trace (see Thin).
	quiet *sim.Result
}

// meets: the plan keeps the target on the fitted days and on the same days thinned, so that a plan
// that only works at full traffic (a short idle_time that a busy hour keeps warm) is not chosen for
// the quieter days it will also meet (a weekend, a holiday).
func (c candidate) meets(target time.Duration) bool {
	return c.res.WaitP95 <= target && c.quiet.WaitP95 <= target
}

// worstP95 is the higher p95 of the two runs.
func (c candidate) worstP95() time.Duration { return max(c.res.WaitP95, c.quiet.WaitP95) }

type searcher struct {
	in       Input
	quiet    []sim.Job // in.Jobs thinned
	deadline time.Time
	evals    int
	// best is the cheapest candidate that met the target; closest the lowest p95 seen.
	best, closest *candidate
}

// Search finds the cheapest plan (instance-minutes) whose p95 wait on in.Jobs is at most in.Target.
func Search(ctx context.Context, in Input) (Outcome, error) {
	if in.Budget <= 0 {
		in.Budget = DefaultBudget
	}
	if in.Parallel <= 0 {
		in.Parallel = runtime.GOMAXPROCS(0)
	}
	if in.Log == nil {
		l := logrus.New()
		l.Out = discard{}
		in.Log = l
	}
	if len(in.Jobs) == 0 {
		return Outcome{}, errors.New("no jobs to fit on")
	}
	s := &searcher{in: in, quiet: Thin(in.Jobs, thinning), deadline: time.Now().Add(in.Budget)}
	demand := Demand(in.Jobs, in.Start, in.Fleet.BootDelay+2*cmp.Or(in.Fleet.CheckInterval, sim.DefaultCheckInterval))
	capacity := max(in.Fleet.Autoscaler.GetCapacityPerInstance(), 1)
	off := false
	scaled := func(k int, idleTime time.Duration) Plan {
		// preemptive_mode off: a job takes a slot on a booting instance at once instead of waiting in
		// GitLab's queue for an idle one, which a burst larger than the idle slots needs (step 3 tries
		// upstream's default too).
		p := Plan{IdleTime: idleTime, Preemptive: &off}
		for h, d := range demand {
			p.Idle[h] = int(math.Ceil(scales[k] * d / float64(capacity)))
		}
		return p
	}

	// Step 2: the smallest scale that meets the target, probing two scales at a time (one per core)
	// from the cheap end, so that the costly plans are only simulated when the cheap ones fail.
	hi := -1
	for k := 0; k < len(scales) && hi < 0; k += 2 {
		plans := []Plan{scaled(k, startIdleTime)}
		if k+1 < len(scales) {
			plans = append(plans, scaled(k+1, startIdleTime))
		}
		cs, err := s.eval(ctx, plans)
		if err != nil {
			return Outcome{}, err
		}
		for i := len(cs) - 1; i >= 0; i-- {
			if cs[i].meets(in.Target) {
				hi = k + i
			}
		}
	}
	if hi < 0 {
		return s.outcome(), nil
	}
	// The idle_time: a shorter one may need one scale step more, a longer one one less.
	var plans []Plan
	for _, it := range idleTimes {
		k := max(hi-1, 0)
		if it < startIdleTime {
			k = min(hi+1, len(scales)-1)
		}
		plans = append(plans, scaled(hi, it))
		if k != hi {
			plans = append(plans, scaled(k, it))
		}
	}
	if err := s.evalInBudget(ctx, plans); err != nil {
		return Outcome{}, err
	}

	// Step 3: part of the idle_count as scale_factor, and upstream's default preemptive_mode.
	if s.best != nil {
		var plans []Plan
		for _, sf := range scaleFactors {
			p := s.best.plan
			for h := range p.Idle {
				p.Idle[h] = int(math.Ceil(sf.share * float64(p.Idle[h])))
			}
			p.ScaleFactor = sf.factor
			plans = append(plans, p)
		}
		p := s.best.plan
		p.Preemptive = nil
		if err := s.evalInBudget(ctx, append(plans, p)); err != nil {
			return Outcome{}, err
		}
	}
	// Step 4: coordinate descent over runs of equal hours, while the budget lasts.
	for round := 0; round < 2 && s.best != nil && time.Now().Before(s.deadline); round++ {
		improved, err := s.descend(ctx)
		if err != nil {
			return Outcome{}, err
		}
		if !improved {
			break
		}
	}
	return s.outcome(), nil
}

// descend tries lowering each run of hours with idle slots; it keeps the cheapest of those that meet the
// target, and all of them together when that meets it too.
func (s *searcher) descend(ctx context.Context) (bool, error) {
	base := s.best.plan
	var plans []Plan
	for _, r := range base.runs() {
		if r.value == 0 {
			continue
		}
		p := base
		step := max(1, r.value/4)
		for h := r.from; h <= r.to; h++ {
			p.Idle[h] = r.value - step
		}
		plans = append(plans, p)
	}
	if len(plans) == 0 {
		return false, nil
	}
	before := s.best
	cands, err := s.eval(ctx, plans)
	if err != nil {
		return false, err
	}
	var good []Plan
	for _, c := range cands {
		if c.meets(s.in.Target) {
			good = append(good, c.plan)
		}
	}
	if len(good) > 1 && time.Now().Before(s.deadline) {
		all := base
		for _, g := range good {
			for h := range all.Idle {
				all.Idle[h] = min(all.Idle[h], g.Idle[h])
			}
		}
		if _, err := s.eval(ctx, []Plan{all}); err != nil {
			return false, err
		}
	}
	return s.best != before, nil
}

// evalInBudget evaluates plans unless the budget is spent.
func (s *searcher) evalInBudget(ctx context.Context, plans []Plan) error {
	if time.Now().After(s.deadline) {
		s.in.Log.WithField("skipped", len(plans)).Info("tune: time budget spent; keeping the best policy so far")
		return nil
	}
	_, err := s.eval(ctx, plans)
	return err
}

// eval simulates plans at once (up to Parallel at a time) and books them.
func (s *searcher) eval(ctx context.Context, plans []Plan) ([]candidate, error) {
	cfgs := make([]sim.Config, len(plans))
	for i, p := range plans {
		cfg, err := s.in.Fleet.Config(p.Policies(), s.in.Start)
		if err != nil {
			return nil, err
		}
		cfgs[i] = cfg
	}
	results, err := RunAll(ctx, s.in.Jobs, cfgs, s.in.Parallel)
	if err != nil {
		return nil, fmt.Errorf("simulating a candidate policy: %w", err)
	}
	quiet, err := RunAll(ctx, s.quiet, cfgs, s.in.Parallel)
	if err != nil {
		return nil, fmt.Errorf("simulating a candidate policy on the thinned trace: %w", err)
	}
	out := make([]candidate, len(plans))
	for i := range out {
		out[i] = candidate{plan: plans[i], res: results[i], quiet: quiet[i]}
	}
	for i := range out {
		c := &out[i]
		s.evals++
		s.in.Log.WithFields(logrus.Fields{"idle": fmt.Sprint(c.plan.Idle), "idle_time": c.plan.IdleTime, "scale_factor": c.plan.ScaleFactor, "preemptive": c.plan.Preemptive != nil,
			"instance_minutes": math.Round(c.res.InstanceMinutes), "p95_wait": c.res.WaitP95, "p95_wait_thinned": c.quiet.WaitP95}).Debug("candidate")
		if c.meets(s.in.Target) && (s.best == nil || c.res.InstanceMinutes < s.best.res.InstanceMinutes) {
			s.best = c
		}
		if s.closest == nil || c.worstP95() < s.closest.worstP95() ||
			c.worstP95() == s.closest.worstP95() && c.res.InstanceMinutes < s.closest.res.InstanceMinutes {
			s.closest = c
		}
	}
	return out, nil
}

// RunAll simulates jobs under every config, parallel at a time (0: GOMAXPROCS), and returns the
// results in the order of cfgs.
func RunAll(ctx context.Context, jobs []sim.Job, cfgs []sim.Config, parallel int) ([]*sim.Result, error) {
	if parallel <= 0 {
		parallel = runtime.GOMAXPROCS(0)
	}
	results := make([]*sim.Result, len(cfgs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, cfg := range cfgs {
		g.Go(func() error {
			res, err := sim.Run(gctx, jobs, cfg)
			results[i] = res
			return err
		})
	}
	return results, g.Wait()
}

// LowerBoundMinutes is the jobs' own run time over the capacity per instance: the instance-minutes no
// policy can go under.
func LowerBoundMinutes(jobs []sim.Job, capacity int) float64 {
	var busy time.Duration
	for _, j := range jobs {
		busy += j.Duration
	}
	return busy.Minutes() / float64(max(capacity, 1))
}

func (s *searcher) outcome() Outcome {
	if s.best != nil {
		return Outcome{Plan: s.best.plan, Fit: s.best.res, Met: true, Evaluations: s.evals}
	}
	return Outcome{Plan: s.closest.plan, Fit: s.closest.res, Evaluations: s.evals}
}

// Demand is, for each hour of the day (UTC), the 95th percentile over the jobs arriving in that hour of
// how many jobs arrive within window from each one's arrival: the slots that must already be idle for
// none of them to wait, when window is one boot.
func Demand(jobs []sim.Job, start time.Time, window time.Duration) [24]float64 {
	var per [24][]int
	j := 0
	for i, job := range jobs {
		for j < len(jobs) && jobs[j].Arrival < job.Arrival+window {
			j++
		}
		h := start.Add(job.Arrival).UTC().Hour()
		per[h] = append(per[h], j-i)
	}
	var out [24]float64
	for h, ns := range per {
		if len(ns) == 0 {
			continue
		}
		slices.Sort(ns)
		out[h] = float64(ns[int(math.Ceil(0.95*float64(len(ns))))-1])
	}
	return out
}

// thinning keeps one pipeline in this many for the quieter copy of the fitted days.
const thinning = 8

// Thin keeps the jobs of one pipeline in every `every` (by pipeline name, so a pipeline's burst stays
// whole; a job without a pipeline is its own), as a quieter day with the same hours would bring.
func Thin(jobs []sim.Job, every int) []sim.Job {
	var out []sim.Job
	for i, j := range jobs {
		key := j.Pipeline
		if key == "" {
			key = strconv.Itoa(i)
		}
		h := fnv.New32a()
		_, _ = h.Write([]byte(key))
		if h.Sum32()%uint32(every) == 0 {
			out = append(out, j)
		}
	}
	if len(out) == 0 && len(jobs) > 0 {
		out = jobs[:1]
	}
	return out
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
