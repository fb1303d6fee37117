// Package sim replays a CI job trace against the real taskscaler, so that an autoscaling policy can be
// judged on cost (instance-minutes) against waiting (queue wait percentiles) before it costs money.
//
// The taskscaler runs unchanged (taskscaler.New, its reconcile loop, the capacity package's policies
// and cron periods) over a simulated instance group with a boot delay, on a clock that only moves from
// one event to the next: a job arrives, a job ends, the runner polls again, an instance finishes
// deleting, or one of the taskscaler's own timers is due. Between two events the simulator waits until
// every taskscaler goroutine is parked (see Run), so a run never sleeps on simulated time and the same
// inputs always give the same figures.
//
// The runner in front of the taskscaler is modelled as fleetrunner's manager drives it: before asking
// GitLab for a job it holds a reservation (Reserve); while it holds one a new job is taken the moment
// it arrives and a slot is Acquired for it; after a job it reserves again at once; when Reserve fails
// (preemptive mode without an idle slot, or max_instances reached) jobs stay in GitLab's queue and the
// runner tries again at its next poll, every check_interval. Waiting in GitLab and waiting in Acquire
// both count as queue wait. A request to GitLab takes no time, so request_concurrency plays no part.
package sim

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// Defaults for a Config left at zero.
const (
	DefaultCheckInterval = 3 * time.Second
	DefaultBootDelay     = 45 * time.Second
	// DefaultWarmStartDelay is how long an instance taken from a warm pool takes to run: EC2 starts a
	// stopped instance whose first boot (user data, image pulls) is done, so only the OS boots again.
	DefaultWarmStartDelay = 15 * time.Second
)

// wakeGather mirrors the taskscaler's pause after a wake-up (100 ms); the simulator only needs it to keep
// the acquire timeout's duration distinct from every loop timer's.
const wakeGather = 100 * time.Millisecond

// stallTimeout bounds, in real time, how long the simulator waits for the taskscaler's goroutines to
// park. It is only reached if the taskscaler changed in a way the simulator does not model.
const stallTimeout = 30 * time.Second

// Config is one simulation run.
type Config struct {
	// Options configure the taskscaler as in production, every value set (capacity, max_instances,
	// max_use_count, policies, update intervals, scale_throttle, instance_acquire_timeout, …; the
	// docker-autoscaler executor builds them from config.toml). The simulator sets Clock, ReadyUp,
	// HealthCheck, State and DeleteInstancesOnShutdown itself, and a nil Logger discards the
	// taskscaler's log.
	Options taskscaler.Options
	// Start is the wall time of the trace's second 0; policy periods are matched against it.
	Start time.Time
	// BootDelay is how long an instance takes from Increase to running; 0 means DefaultBootDelay.
	BootDelay time.Duration
	// NoBootDelay makes instances run at once (BootDelay 0 would take the default).
	NoBootDelay bool
	// DeleteDelay is how long an instance still exists (and costs) after Decrease.
	DeleteDelay time.Duration
	// WarmPool is how many stopped, pre-initialised instances the cloud keeps beside the group (an
	// Auto Scaling warm pool with MinSize and MaxGroupPreparedCapacity both set to it). The group takes
	// them first when it grows; they run WarmStartDelay later (0 means DefaultWarmStartDelay), and the
	// pool is refilled with instances that boot for BootDelay and stop. The taskscaler does not see the
	// pool: AWS manages it. Result.WarmInstanceMinutes counts their stopped time.
	WarmPool       int
	WarmStartDelay time.Duration
	// CheckInterval is the runner's check_interval: how often it tries Reserve again after a failure.
	CheckInterval time.Duration
	// Limit caps the jobs the runner holds at once (the runner's limit, or concurrent); 0 means none.
	Limit int
	// MeasureFrom is the point of the trace from which the figures count: the waits of the jobs that
	// arrive from then, instance time from then, the instances created and the peak from then. The
	// time before it only warms the fleet (and the forecast, with Options.Forecast). 0: the whole run.
	MeasureFrom time.Duration
	// Tail is how long to keep simulating after the last job ends, so that idle instances are removed
	// and counted; 0 means the longest idle_time + 2 × update_interval + DeleteDelay. The run ends
	// earlier once no instance is left.
	Tail time.Duration
}

// Sample is the fleet at one moment of the run.
type Sample struct {
	// At is the time since the start of the trace.
	At time.Duration
	// Instances exist in the cloud (booting, running or being deleted).
	Instances int
	// Waiting jobs have arrived and have no slot yet.
	Waiting int
}

// Result is what a run measured.
type Result struct {
	Jobs int
	// Failed jobs gave up waiting for a slot (instance_acquire_timeout); their wait until then counts.
	Failed int
	// Span is the simulated time from the trace's start to the end of the run.
	Span time.Duration
	// InstanceMinutes sums every instance's running life from Increase to the end of its deletion; a
	// warm pool instance's first boot counts, its stopped time does not.
	InstanceMinutes float64
	// WarmInstanceMinutes sums the time warm pool instances spent stopped (billed for storage only).
	WarmInstanceMinutes float64
	// WarmStarts is how many instances the group took from the warm pool in the whole run.
	WarmStarts int
	// WaitMinutes sums every job's queue wait.
	WaitMinutes float64
	// Instances is how many instances were created (warm pool ones included); PeakInstances how many
	// were in the group at once.
	Instances     int
	PeakInstances int
	// Queue wait per job (arrival to slot acquired), by nearest rank.
	WaitP50, WaitP95, WaitP99, WaitMax, WaitMean time.Duration
	// Reconciles counts the taskscaler's listings of the group; Steps the simulator's events.
	Reconciles int
	Steps      int
	// Timeline has a sample at every change of the instance count or the waiting jobs.
	Timeline []Sample
}

// JobsPerInstance is the mean number of jobs an instance ran.
func (r *Result) JobsPerInstance() float64 {
	if r.Instances == 0 {
		return 0
	}
	return float64(r.Jobs-r.Failed) / float64(r.Instances)
}

// DefaultWarmPricePerHour is what a stopped warm pool instance costs per hour: its EBS root volume,
// 30 GiB of gp3 at $0.08 per GiB-month (AWS's gp3 storage price in us-east-1, Amazon EBS pricing page)
// over 730 hours a month. A stopped instance pays no instance-hours; a larger volume or another region
// changes the figure.
const DefaultWarmPricePerHour = 30 * 0.08 / 730

// Cost prices the run: running instance-hours at perHour, warm pool instances' stopped hours at
// warmPerHour (what their volumes cost while they are stopped).
func (r *Result) Cost(perHour, warmPerHour float64) float64 {
	return r.InstanceMinutes/60*perHour + r.WarmInstanceMinutes/60*warmPerHour
}

// WaitPerCost is minutes of queue wait per instance-minute paid: lower is better on both counts, and
// the two runs of a comparison show which way a policy moves it.
func (r *Result) WaitPerCost() float64 {
	if r.InstanceMinutes == 0 {
		return 0
	}
	return r.WaitMinutes / r.InstanceMinutes
}

type jobState struct {
	Job
	key    string // the reservation key the job was taken under
	failed bool
	wait   time.Duration // arrival to slot, or to giving up
}

type report struct {
	idx int
	at  time.Time
	err error
}

// pokeWatch is taken before an action that may wake the reconcile loop.
type pokeWatch struct {
	gathering bool
	consumed  uint64
}

type run struct {
	ctx    context.Context
	cfg    Config
	start  time.Time
	jobs   []jobState
	clk    *simClock
	cloud  *cloud
	ts     *taskscaler.Taskscaler
	wg     sync.WaitGroup
	kickCh chan struct{}
	poll   *time.Timer

	throttling  bool
	maxUseCount int

	mu       sync.Mutex // guards the fields the job and ready-up goroutines write
	launched int
	returned int
	holding  int // Acquire calls that returned a slot not yet released
	reports  []report
	readyUps map[string]chan struct{}

	// Owned by the main goroutine.
	nextArrival  int
	queue        []int
	ends         endHeap
	active       int // jobs taken from GitLab and not finished
	unfinished   int
	waiting      int
	reserved     bool
	resKey       string
	keys         int
	tickAt       time.Time
	tokenPending bool
	wantConsumed uint64
	lastEnd      time.Time
	timeline     []Sample
	steps        int
}

// Run replays jobs (ordered by arrival, as ReadTrace returns them) and returns the figures.
//
// Determinism: the simulator's clock records every timer the taskscaler makes, and the simulated
// cloud and the job goroutines report every call, so after each action the simulator waits until
// the reconcile loop waits on a pending timer, every Acquire has either returned or waits on its
// timeout, and each new instance's ready-up hook is blocked. Ready-up hooks are then released one at a
// time in instance order. A wake-up of the loop (from Acquire, or from removing an instance) is tracked
// explicitly, because the loop's reaction to it, a 100 ms gather before the next pass, must happen
// before the clock moves on. Real time is only spent yielding to those goroutines.
func Run(ctx context.Context, jobs []Job, cfg Config) (*Result, error) {
	if len(jobs) == 0 {
		return nil, errors.New("no jobs to simulate")
	}
	if !slices.IsSortedFunc(jobs, func(a, b Job) int { return cmp.Compare(a.Arrival, b.Arrival) }) {
		return nil, errors.New("jobs must be ordered by arrival")
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.BootDelay <= 0 && !cfg.NoBootDelay {
		cfg.BootDelay = DefaultBootDelay
	}
	if cfg.NoBootDelay {
		cfg.BootDelay = 0
	}
	if cfg.WarmPool < 0 {
		return nil, fmt.Errorf("warm pool size %d must not be negative", cfg.WarmPool)
	}
	if cfg.WarmStartDelay <= 0 {
		cfg.WarmStartDelay = DefaultWarmStartDelay
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	}
	opts := simOptions(cfg.Options)
	if cfg.Tail <= 0 {
		var idle time.Duration
		for _, p := range opts.Policies {
			idle = max(idle, p.IdleTime)
		}
		cfg.Tail = idle + 2*opts.UpdateInterval + cfg.DeleteDelay
	}

	r := &run{
		ctx:         ctx,
		cfg:         cfg,
		start:       cfg.Start,
		kickCh:      make(chan struct{}, 1),
		readyUps:    map[string]chan struct{}{},
		unfinished:  len(jobs),
		throttling:  opts.ReservationThrottling,
		maxUseCount: opts.MaxUseCount,
	}
	r.jobs = make([]jobState, len(jobs))
	for i, j := range jobs {
		r.jobs[i].Job = j
	}
	r.poll = time.NewTimer(time.Hour)
	r.poll.Stop()
	r.clk = newSimClock(cfg.Start, opts.InstanceAcquireTimeout, r.kick)
	r.cloud = &cloud{clock: r.clk, bootDelay: cfg.BootDelay, deleteDelay: cfg.DeleteDelay,
		warmPool: cfg.WarmPool, warmStartDelay: cfg.WarmStartDelay, kick: r.kick}
	r.cloud.mu.Lock()
	r.cloud.fillPoolLocked(cfg.Start)
	r.cloud.mu.Unlock()
	opts.Clock = r.clk
	opts.ReadyUp = r.readyUp

	ts, err := taskscaler.New(r.cloud, opts)
	if err != nil {
		return nil, fmt.Errorf("starting the taskscaler: %w", err)
	}
	r.ts = ts
	ts.Start(ctx)
	runErr := r.loop()
	shutdownErr := ts.Shutdown(context.WithoutCancel(ctx))
	r.wg.Wait()
	if err := errors.Join(runErr, shutdownErr); err != nil {
		return nil, err
	}
	return r.result(), nil
}

// simOptions takes over what the simulator owns.
func simOptions(o taskscaler.Options) taskscaler.Options {
	// The clock tells an Acquire's timer from the loop's by its duration; a millisecond more on the
	// acquire timeout is the price of an exact coincidence. An unset timeout is left for New to refuse.
	for o.InstanceAcquireTimeout > 0 && o.InstanceAcquireTimeout == o.UpdateInterval || o.InstanceAcquireTimeout == o.UpdateIntervalWhenExpecting ||
		o.InstanceAcquireTimeout == wakeGather {
		o.InstanceAcquireTimeout += time.Millisecond
	}
	o.HealthCheck = nil
	o.State = nil
	o.DeleteInstancesOnShutdown = false
	return o
}

func (r *run) kick() {
	select {
	case r.kickCh <- struct{}{}:
	default:
	}
}

// readyUp is the taskscaler's ReadyUp hook: it parks until the simulator lets this instance become
// ready, so that instances turn ready in a fixed order after the pass that found them.
func (r *run) readyUp(ctx context.Context, inst taskscaler.Instance) error {
	ch := make(chan struct{})
	r.mu.Lock()
	r.readyUps[inst.ID] = ch
	r.mu.Unlock()
	r.kick()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *run) now() time.Time { return r.clk.Now() }

func (r *run) loop() error {
	if err := r.settle(); err != nil {
		return err
	}
	if err := r.dispatch(true); err != nil {
		return err
	}
	for {
		if err := r.ctx.Err(); err != nil {
			return fmt.Errorf("simulation stopped at %s of simulated time: %w", r.now().Sub(r.start), err)
		}
		r.sample()
		next, ok := r.nextEvent()
		if !ok && r.unfinished > 0 {
			return fmt.Errorf("simulator bug: %d jobs unfinished at %s of simulated time and nothing left to wait for", r.unfinished, r.now().Sub(r.start))
		}
		if !ok {
			return nil
		}
		r.steps++
		if err := r.advance(next); err != nil {
			return err
		}
		now := r.now()
		for len(r.ends) > 0 && !r.ends[0].at.After(now) {
			e := heap.Pop(&r.ends).(endEvent)
			if err := r.release(e.idx); err != nil {
				return err
			}
		}
		for r.nextArrival < len(r.jobs) && !r.start.Add(r.jobs[r.nextArrival].Arrival).After(now) {
			r.queue = append(r.queue, r.nextArrival)
			r.waiting++
			r.nextArrival++
		}
		tick := !r.tickAt.IsZero() && !r.tickAt.After(now)
		if tick {
			r.tickAt = time.Time{}
		}
		if err := r.dispatch(tick); err != nil {
			return err
		}
		if !r.reserved && r.tickAt.IsZero() && !tick && r.unfinished > 0 {
			r.tickAt = r.nextPoll(now)
		}
	}
}

// nextEvent is the earliest thing that happens next, or false when the run is over.
func (r *run) nextEvent() (time.Time, bool) {
	now := r.now()
	if r.unfinished == 0 {
		if r.cloud.alive(now) == 0 || !now.Before(r.lastEnd.Add(r.cfg.Tail)) {
			return time.Time{}, false
		}
	}
	var next time.Time
	consider := func(t time.Time, ok bool) {
		if ok && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if r.nextArrival < len(r.jobs) {
		consider(r.start.Add(r.jobs[r.nextArrival].Arrival), true)
	}
	if len(r.ends) > 0 {
		consider(r.ends[0].at, true)
	}
	consider(r.tickAt, !r.tickAt.IsZero())
	consider(r.clk.next())
	consider(r.cloud.nextDeletion(now))
	if r.unfinished == 0 {
		end := r.lastEnd.Add(r.cfg.Tail)
		if next.IsZero() || end.Before(next) {
			next = end
		}
	}
	if next.IsZero() {
		return time.Time{}, false
	}
	if next.Before(now) {
		next = now
	}
	return next, true
}

// nextPoll is the runner's next poll after now, on a check_interval grid from the trace's start.
func (r *run) nextPoll(now time.Time) time.Time {
	k := now.Sub(r.start)/r.cfg.CheckInterval + 1
	return r.start.Add(k * r.cfg.CheckInterval)
}

// dispatch hands queued jobs to the taskscaler while the runner holds a reservation, reserving again
// after each job. mayReserve says the runner is polling now (start, a poll tick, or right after a job).
func (r *run) dispatch(mayReserve bool) error {
	for {
		if !r.reserved {
			if !mayReserve || r.unfinished == 0 || (r.cfg.Limit > 0 && r.active >= r.cfg.Limit) {
				return nil
			}
			ok, err := r.reserve()
			if err != nil || !ok {
				return err
			}
		}
		if len(r.queue) == 0 {
			return nil
		}
		idx := r.queue[0]
		r.queue = r.queue[1:]
		if err := r.acquire(idx, r.resKey); err != nil {
			return err
		}
		r.reserved = false
		mayReserve = true
	}
}

func (r *run) reserve() (bool, error) {
	r.keys++
	key := fmt.Sprintf("req-%d", r.keys)
	w := r.watch()
	if err := r.ts.Reserve(key); err != nil {
		if errors.Is(err, taskscaler.ErrNoCapacity) {
			return false, nil
		}
		return false, fmt.Errorf("reserve: %w", err)
	}
	r.reserved, r.resKey = true, key
	if !r.throttling {
		r.poked(w)
		return true, r.settle()
	}
	return true, nil
}

// acquire starts a job's Acquire in its own goroutine, as the executor would, and waits for it to
// either get a slot or wait on its timeout.
func (r *run) acquire(idx int, key string) error {
	w := r.watch()
	created := r.clk.view().acquireCreated
	r.mu.Lock()
	r.launched++
	r.mu.Unlock()
	r.jobs[idx].key = key
	r.active++
	r.wg.Add(1)
	returned := make(chan struct{})
	go func() {
		defer r.wg.Done()
		_, err := r.ts.Acquire(r.ctx, key)
		at := r.clk.Now()
		r.mu.Lock()
		r.returned++
		if err == nil {
			r.holding++
		}
		r.reports = append(r.reports, report{idx: idx, at: at, err: err})
		r.mu.Unlock()
		close(returned)
		r.kick()
	}()
	err := r.await("Acquire to return or wait", func() bool {
		select {
		case <-returned:
			return true
		default:
			return r.clk.view().acquireCreated > created
		}
	})
	if err != nil {
		return err
	}
	// Acquire always wakes the loop: a waiting one for capacity, one served at once because it took an
	// idle slot that the idle target may want replaced.
	r.poked(w)
	return r.settle()
}

func (r *run) release(idx int) error {
	// Only an instance that reached max_use_count is removed (and the loop woken) by a release.
	retires := r.maxUseCount > 0
	w, before := r.watch(), 0
	if retires {
		before = r.condemned()
	}
	r.ts.Release(r.jobs[idx].key)
	r.mu.Lock()
	r.holding--
	r.mu.Unlock()
	r.finish(idx, false)
	if retires && r.condemned() > before {
		r.poked(w)
	}
	return r.settle()
}

func (r *run) finish(idx int, failed bool) {
	r.jobs[idx].failed = failed
	r.active--
	r.unfinished--
	if now := r.now(); now.After(r.lastEnd) {
		r.lastEnd = now
	}
}

// condemned counts instances the taskscaler ever decided to remove; it grows exactly when the
// taskscaler condemns one, which is also when it wakes its loop.
func (r *run) condemned() int {
	st := r.ts.Stats()
	return st.Instances.Removing + int(st.Counters.InstancesRemoved)
}

func (r *run) watch() pokeWatch {
	v := r.clk.view()
	return pokeWatch{gathering: v.gathering, consumed: v.consumed}
}

// poked records that an action woke the loop: a loop waiting on its interval takes the wake-up at
// once; a loop in its gather pause takes it after its next pass.
func (r *run) poked(w pokeWatch) {
	if w.gathering {
		r.tokenPending = true
		return
	}
	r.wantConsumed = max(r.wantConsumed, w.consumed+1)
}

// advance moves the clock to t and lets whatever fired run to its end.
func (r *run) advance(t time.Time) error {
	v0 := r.clk.view()
	if next, ok := r.clk.next(); !ok || next.After(t) {
		// No timer fires: nothing in the taskscaler moves.
		r.clk.advance(t)
		return nil
	}
	before := r.condemned()
	if r.clk.advance(t) {
		if err := r.await("reconcile pass", func() bool { return r.clk.view().seq > v0.seq }); err != nil {
			return err
		}
		if r.tokenPending || r.condemned() > before {
			r.wantConsumed = max(r.wantConsumed, v0.consumed+1)
		}
		r.tokenPending = false
	}
	return r.settle()
}

// settle waits until every goroutine is parked, then lets blocked ready-up hooks finish one at a time
// in instance order, and records the Acquire calls that came back.
func (r *run) settle() error {
	for {
		if err := r.await("taskscaler to settle", r.quiet); err != nil {
			return err
		}
		r.collect()
		r.mu.Lock()
		ids := slices.Sorted(maps.Keys(r.readyUps))
		var ch chan struct{}
		if len(ids) > 0 {
			ch = r.readyUps[ids[0]]
			delete(r.readyUps, ids[0])
		}
		r.mu.Unlock()
		if ch == nil {
			return nil
		}
		close(ch)
	}
}

func (r *run) quiet() bool {
	v := r.clk.view()
	if !v.parked || v.consumed < r.wantConsumed {
		return false
	}
	r.mu.Lock()
	inAcquire, holding, blocked := r.launched-r.returned, r.holding, len(r.readyUps)
	r.mu.Unlock()
	if inAcquire != v.acquirePending {
		return false
	}
	st := r.ts.Stats()
	if st.Slots.Acquired != holding || st.Instances.Readying > blocked {
		return false
	}
	if st.Instances.Readying == blocked {
		return true
	}
	// Some blocked hooks belong to instances removed meanwhile (not ready within the creation
	// timeout); every instance still readying must have its hook blocked.
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, in := range r.ts.Instances() {
		if _, ok := r.readyUps[in.ID]; in.State == "readying" && !ok {
			return false
		}
	}
	return true
}

// await yields to the taskscaler's goroutines until cond holds.
func (r *run) await(what string, cond func() bool) error {
	if cond() {
		return nil
	}
	deadline := time.Now().Add(stallTimeout)
	for i := 0; ; i++ {
		if i < 32 {
			runtime.Gosched()
		} else {
			r.poll.Reset(50 * time.Microsecond)
			select {
			case <-r.kickCh:
			case <-r.poll.C:
			}
		}
		if cond() {
			return nil
		}
		if i%256 == 255 && time.Now().After(deadline) {
			v := r.clk.view()
			st := r.ts.Stats()
			return fmt.Errorf("simulator stalled waiting for %s at %s of simulated time (loop parked %v, gathering %v, wake-ups %d/%d; acquires pending %d; stats %+v); this is a simulator bug",
				what, r.now().Sub(r.start), v.parked, v.gathering, v.consumed, r.wantConsumed, v.acquirePending, st.Slots)
		}
	}
}

// collect books the Acquire calls that came back, in job order.
func (r *run) collect() {
	r.mu.Lock()
	reps := r.reports
	r.reports = nil
	r.mu.Unlock()
	slices.SortFunc(reps, func(a, b report) int { return cmp.Compare(a.idx, b.idx) })
	for _, rep := range reps {
		j := &r.jobs[rep.idx]
		j.wait = rep.at.Sub(r.start.Add(j.Arrival))
		r.waiting--
		if rep.err != nil {
			r.finish(rep.idx, true)
			continue
		}
		heap.Push(&r.ends, endEvent{at: rep.at.Add(j.Duration), idx: rep.idx})
	}
}

func (r *run) sample() {
	now := r.now()
	s := Sample{At: now.Sub(r.start), Instances: r.cloud.alive(now), Waiting: r.waiting}
	if n := len(r.timeline); n > 0 {
		last := r.timeline[n-1]
		if last.Instances == s.Instances && last.Waiting == s.Waiting {
			return
		}
		if last.At == s.At {
			r.timeline[n-1] = s
			return
		}
	}
	r.timeline = append(r.timeline, s)
}

func (r *run) result() *Result {
	end := r.now()
	from := r.start.Add(r.cfg.MeasureFrom)
	running, warm, created, peak := r.cloud.usage(from, end)
	if r.cfg.MeasureFrom > 0 {
		peak = peakFrom(r.timeline, r.cfg.MeasureFrom)
	}
	res := &Result{
		Jobs:                len(r.jobs),
		Span:                end.Sub(r.start),
		InstanceMinutes:     running.Minutes(),
		WarmInstanceMinutes: warm.Minutes(),
		Instances:           created,
		PeakInstances:       peak,
		Timeline:            r.timeline,
		Steps:               r.steps,
	}
	r.cloud.mu.Lock()
	res.Reconciles = r.cloud.updates
	res.WarmStarts = r.cloud.warmStarts
	r.cloud.mu.Unlock()
	waits := make([]time.Duration, 0, len(r.jobs))
	var sum time.Duration
	for _, j := range r.jobs {
		if j.Arrival < r.cfg.MeasureFrom {
			continue
		}
		waits = append(waits, j.wait)
		sum += j.wait
		if j.failed {
			res.Failed++
		}
	}
	res.Jobs = len(waits)
	if len(waits) == 0 {
		return res
	}
	slices.Sort(waits)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(waits)))) - 1
		return waits[min(max(i, 0), len(waits)-1)]
	}
	res.WaitP50, res.WaitP95, res.WaitP99, res.WaitMax = rank(0.50), rank(0.95), rank(0.99), waits[len(waits)-1]
	res.WaitMean = sum / time.Duration(len(waits))
	res.WaitMinutes = sum.Minutes()
	return res
}

// peakFrom is the most instances at once from the trace's point from on: the samples after it and the
// one in force at it.
func peakFrom(timeline []Sample, from time.Duration) int {
	peak := 0
	for i, s := range timeline {
		if s.At >= from || i+1 == len(timeline) || timeline[i+1].At > from {
			peak = max(peak, s.Instances)
		}
	}
	return peak
}

type endEvent struct {
	at  time.Time
	idx int
}

// endHeap orders running jobs by end time, then by trace order.
type endHeap []endEvent

func (h endHeap) Len() int { return len(h) }
func (h endHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].idx < h[j].idx
}
func (h endHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *endHeap) Push(x any)   { *h = append(*h, x.(endEvent)) }
func (h *endHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
