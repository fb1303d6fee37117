// Package taskscaler hands out job slots on the instances of one fleeting.InstanceGroup and keeps the
// group sized to the active policy: Reserve before asking GitLab for a job, Acquire a slot on a ready
// instance for the job, Release it when the job ends. A reconcile loop lists the group, adopts or removes
// instances, and asks for or removes instances in one call each. It knows the cloud only through the
// fleeting contract; whatever needs the instance itself (ready command, heartbeat) is a callback.
package taskscaler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/forecast"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

var (
	// ErrNoCapacity is returned (wrapped, with the reason) by Reserve when no job should be requested now.
	ErrNoCapacity = errors.New("no capacity")
	// ErrShutdown is returned once Shutdown has begun.
	ErrShutdown = errors.New("taskscaler is shutting down")
	// ErrInstanceLost is the cause of an acquisition's context when its instance went away.
	ErrInstanceLost = errors.New("instance lost")
	// errReleased is the cause of an acquisition's context after Release.
	errReleased = errors.New("acquisition released")
)

// wakeGather is how long the loop waits after a wake-up before reconciling, so that a burst of Acquire
// calls arriving together is answered by one Increase for all of them.
const wakeGather = 100 * time.Millisecond

type instState int

const (
	stCreating instState = iota // listed by the plugin, not running yet
	stReadying                  // running; ReadyUp in progress
	stReady                     // serving slots
	stDraining                  // reached max_use_count or Drain; its jobs finish, no new ones
	stRemove                    // to be removed at the next pass
	stRemoving                  // Decrease issued
)

var stateNames = [...]string{"creating", "readying", "ready", "draining", "remove", "removing"}

func (s instState) String() string { return stateNames[s] }

func parseState(s string) instState {
	for i, n := range stateNames {
		if n == s {
			return instState(i)
		}
	}
	return stCreating
}

type instance struct {
	id             string
	state          instState
	reported       fleeting.State
	useCount       int
	slots          []bool
	acq            map[string]*Acquisition
	createdAt      time.Time
	askedAt        time.Time // the Increase that brought it, when this process asked for it
	runningAt      time.Time // when the plugin first reported it running, for the readiness time
	readyAt        time.Time
	idleSince      time.Time
	removeAt       time.Time
	deleteAskedAt  time.Time // the first Decrease for it (removeAt moves on retries), for the deletion time
	healthFailures int
	// removeReason says why the instance is being removed, for the scale decision that removes it.
	removeReason string
	connectInfo  *fleeting.ConnectInfo
	data         map[string][]byte

	// drainReason, once set by Drain, keeps the instance draining whatever its use count.
	drainReason string
}

// Acquisition is a slot on a ready instance held for one job.
type Acquisition struct {
	InstanceID string
	// Slot is the slot index on the instance, 0 ≤ Slot < capacity_per_instance.
	Slot int
	// UseCount is how many jobs the instance had finished when this one was given the slot.
	UseCount int

	key    string
	ts     *Taskscaler
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// Key is the key the acquisition was made under.
func (a *Acquisition) Key() string { return a.key }

// Context is done when the acquisition ends: released, or its instance was lost (removed outside the
// taskscaler, marked unhealthy, failed its health checks). context.Cause tells which; a lost instance's
// cause wraps ErrInstanceLost.
func (a *Acquisition) Context() context.Context { return a.ctx }

// ConnectInfo returns how to reach the acquisition's instance, asking the plugin when nothing is cached
// or the cached credentials expire within a minute.
func (a *Acquisition) ConnectInfo(ctx context.Context) (fleeting.ConnectInfo, error) {
	return a.ts.ConnectInfo(ctx, a.InstanceID)
}

// Data returns the caller data stored on the acquisition's instance under name.
func (a *Acquisition) Data(name string) ([]byte, bool) { return a.ts.InstanceData(a.InstanceID, name) }

// SetData stores caller data on the acquisition's instance under name and writes the state file.
func (a *Acquisition) SetData(name string, value []byte) error {
	return a.ts.SetInstanceData(a.InstanceID, name, value)
}

type waiter struct {
	key  string
	done chan struct{}
	acq  *Acquisition
	err  error
}

type jobRecord struct {
	jobID int64
	data  []byte
	since time.Time
}

type request struct {
	n  int
	at time.Time
}

// RecoveredJob is a job that was in flight when the previous process stopped. It never resumes: the
// caller reports it failed (runner_system_failure).
type RecoveredJob struct {
	Key   string
	JobID int64
	// InstanceID is the instance it ran on; empty if it was still waiting for a slot.
	InstanceID string
	Data       []byte
	Since      time.Time
}

// Taskscaler is safe for concurrent use.
type Taskscaler struct {
	group    fleeting.InstanceGroup
	opts     Options
	log      logrus.FieldLogger
	clock    clock.Clock
	throttle *rate.Limiter

	mu          sync.Mutex
	policies    []Policy
	forecast    *forecast.Forecaster // nil: off
	forecastN   int                  // the idle count it last gave, -1 for none, for the log
	instances   map[string]*instance
	requests    []request
	reserved    map[string]time.Time
	acquired    map[string]*Acquisition
	waiters     []*waiter
	jobs        map[string]*jobRecord
	restored    map[string]state.Instance // until the first successful Update
	restoredRan map[string]int            // in-flight jobs per restored instance
	recovered   []RecoveredJob
	counters    Counters
	decisions   []Decision
	accountedAt time.Time // instance time is summed up to here (accountLocked)
	failStreak  int
	blocked     time.Time // no Increase before this
	desired     int
	expecting   bool
	hbRunning   bool
	lastHB      time.Time
	started     bool
	closed      bool

	wake      chan struct{}
	persistCh chan struct{}
	saveMu    sync.Mutex
	saveSeq   uint64 // save calls so far (under mu)
	savedSeq  uint64 // the save calls the stored snapshot covers (under saveMu)

	baseCtx    context.Context
	cancelLoop context.CancelFunc
	loopDone   chan struct{}
	persistEnd chan struct{}
	wg         sync.WaitGroup
}

// Capacity is the fleet's size: slots per instance and the instance cap (0: none), the latter as the
// caller clamped it.
func (ts *Taskscaler) Capacity() (perInstance, maxInstances int) {
	return ts.opts.CapacityPerInstance, ts.opts.MaxInstances
}

// New builds a taskscaler over group and loads its saved state; it calls neither the group nor a hook
// until Start, so that what the hooks use may be built with the taskscaler at hand. The group must
// already be initialised (Init); the caller also shuts it down after Shutdown.
func New(group fleeting.InstanceGroup, opts Options) (*Taskscaler, error) {
	if group == nil {
		return nil, errors.New("taskscaler: no instance group")
	}
	policies, err := opts.check()
	if err != nil {
		return nil, fmt.Errorf("taskscaler options: %w", err)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	ts := &Taskscaler{
		group:       group,
		opts:        opts,
		log:         logging.Or(opts.Logger),
		clock:       opts.Clock,
		throttle:    capacity.NewThrottle(opts.ScaleThrottleLimit, opts.ScaleThrottleBurst),
		policies:    policies,
		instances:   map[string]*instance{},
		reserved:    map[string]time.Time{},
		acquired:    map[string]*Acquisition{},
		jobs:        map[string]*jobRecord{},
		wake:        make(chan struct{}, 1),
		persistCh:   make(chan struct{}, 1),
		loopDone:    make(chan struct{}),
		persistEnd:  make(chan struct{}),
		restored:    map[string]state.Instance{},
		restoredRan: map[string]int{},
		forecastN:   -1,
	}
	var saved *state.Forecast
	if opts.State != nil {
		snap, err := opts.State.Load()
		if err != nil {
			return nil, fmt.Errorf("taskscaler: %w", err)
		}
		if snap != nil {
			ts.restore(snap)
			saved = snap.Forecast
		}
	}
	if opts.Forecast != nil {
		ts.forecast = forecast.New(*opts.Forecast, saved)
	}
	ts.baseCtx, ts.cancelLoop = context.WithCancel(context.Background())
	return ts, nil
}

// Start lists the group once, adopting the instances the saved state knows and removing the others,
// and starts the reconcile loop; ctx bounds that first listing. Only the first call does anything.
func (ts *Taskscaler) Start(ctx context.Context) {
	ts.mu.Lock()
	if ts.started || ts.closed {
		ts.mu.Unlock()
		return
	}
	ts.started = true
	ts.mu.Unlock()

	ts.reconcile(ctx)
	if err := ts.save(); err != nil {
		ts.log.WithError(err).Warn("could not write taskscaler state; instances may be removed as unknown after a restart")
	}
	go ts.loop(ts.baseCtx)
	go ts.persister()
}

func (ts *Taskscaler) restore(snap *state.Snapshot) {
	for _, in := range snap.Instances {
		ts.restored[in.ID] = in
	}
	for _, j := range snap.Jobs {
		ts.recovered = append(ts.recovered, RecoveredJob{Key: j.Key, JobID: j.JobID, InstanceID: j.InstanceID, Data: j.Data, Since: j.Since})
		if j.InstanceID != "" {
			ts.restoredRan[j.InstanceID]++
		}
	}
	ts.log.WithFields(logrus.Fields{"instances": len(snap.Instances), "jobs_in_flight": len(snap.Jobs)}).Info("restored taskscaler state")
}

// RecoveredAcquisitions returns the jobs that were in flight when the previous process stopped, so the
// caller can report them failed at once instead of leaving them to GitLab's timeout.
func (ts *Taskscaler) RecoveredAcquisitions() []RecoveredJob {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.recovered)
}

// ForgetRecovered drops a recovered job from the state file once the caller has reported it; until then
// it is reported again after another restart.
func (ts *Taskscaler) ForgetRecovered(key string) {
	ts.mu.Lock()
	ts.recovered = slices.DeleteFunc(ts.recovered, func(r RecoveredJob) bool { return r.Key == key })
	ts.mu.Unlock()
	ts.markDirty()
}

// Reserve holds capacity for one job request under key. In preemptive mode it succeeds only while a slot
// on a ready instance is free; otherwise while the fleet could still grow to take the job. The error
// wraps ErrNoCapacity and says why.
func (ts *Taskscaler) Reserve(key string) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return fmt.Errorf("%w: %w", ErrNoCapacity, ErrShutdown)
	}
	if _, ok := ts.reserved[key]; ok {
		return fmt.Errorf("taskscaler: key %q is already reserved", key)
	}
	if _, ok := ts.acquired[key]; ok {
		return fmt.Errorf("taskscaler: key %q already holds a slot", key)
	}
	now := ts.clock.Now()
	p := ts.activeLocked(now)
	if p.Preemptive {
		free := ts.freeSlotsLocked() - len(ts.reserved) - len(ts.waiters)
		if free <= 0 {
			if ts.canGrowLocked() || ts.startingLocked() > 0 {
				return fmt.Errorf("%w: no idle slot on a ready instance (preemptive mode; %d instances starting)", ErrNoCapacity, ts.startingLocked())
			}
			return fmt.Errorf("%w: every slot is taken and max_instances (%d) is reached", ErrNoCapacity, ts.opts.MaxInstances)
		}
	} else if ts.opts.MaxInstances > 0 {
		used := len(ts.acquired) + len(ts.waiters) + len(ts.reserved) + ts.unavailableLocked()
		if used >= ts.opts.MaxInstances*ts.opts.CapacityPerInstance {
			return fmt.Errorf("%w: all %d slots of max_instances (%d) are in use or reserved", ErrNoCapacity, used, ts.opts.MaxInstances)
		}
	}
	ts.reserved[key] = now
	if !ts.opts.ReservationThrottling {
		ts.poke()
	}
	return nil
}

// Unreserve gives back a reservation that brought no job. Unknown keys are ignored.
func (ts *Taskscaler) Unreserve(key string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, ok := ts.reserved[key]; !ok {
		return
	}
	delete(ts.reserved, key)
	if _, ok := ts.jobs[key]; ok {
		delete(ts.jobs, key)
		ts.markDirty()
	}
}

// RecordJob remembers which job key is running and a caller blob (what it needs to report the job
// failed), and writes the state file before returning, so a crash after it is recoverable. The record
// ends with ForgetJob or Unreserve.
func (ts *Taskscaler) RecordJob(key string, jobID int64, data []byte) error {
	ts.mu.Lock()
	ts.jobs[key] = &jobRecord{jobID: jobID, data: slices.Clone(data), since: ts.clock.Now()}
	ts.mu.Unlock()
	return ts.save()
}

// Acquire gives key a slot on a ready instance, waiting (bounded by instance_acquire_timeout) while
// instances are created. A reservation under key is consumed; Acquire without one is allowed.
func (ts *Taskscaler) Acquire(ctx context.Context, key string) (*Acquisition, error) {
	ts.mu.Lock()
	if ts.closed {
		ts.mu.Unlock()
		return nil, fmt.Errorf("unable to acquire instance: %w", ErrShutdown)
	}
	if _, ok := ts.acquired[key]; ok {
		ts.mu.Unlock()
		return nil, fmt.Errorf("taskscaler: key %q already holds a slot", key)
	}
	delete(ts.reserved, key)
	w := &waiter{key: key, done: make(chan struct{})}
	ts.waiters = append(ts.waiters, w)
	if ts.forecast != nil {
		ts.forecast.Arrive(ts.clock.Now())
	}
	ts.assignLocked()
	ts.mu.Unlock()

	select {
	case <-w.done:
		// An idle slot was taken: the idle target may want another instance now rather than at the
		// next update_interval, or preemptive bursts wait a whole interval for capacity.
		ts.poke()
		return w.acq, w.err
	default:
	}
	ts.poke()
	timer := ts.clock.NewTimer(ts.opts.InstanceAcquireTimeout)
	defer timer.Stop()
	var cause error
	select {
	case <-w.done:
		return w.acq, w.err
	case <-ctx.Done():
		cause = ctx.Err()
	case <-timer.C():
		cause = context.DeadlineExceeded
	}

	ts.mu.Lock()
	defer ts.mu.Unlock()
	select {
	case <-w.done:
		if w.acq != nil {
			// Assigned while we gave up: hand the slot back without counting a use.
			ts.detachLocked(w.acq, false)
		}
	default:
		ts.waiters = slices.DeleteFunc(ts.waiters, func(o *waiter) bool { return o == w })
	}
	return nil, fmt.Errorf("unable to acquire instance: %w (%d instances starting, %d ready)", cause, ts.startingLocked(), ts.countLocked(stReady))
}

// Release ends key's acquisition: the instance's use count goes up, and an instance that reached
// max_use_count is removed once its last job ends. A key that only holds a reservation is unreserved;
// a key whose instance was lost is forgotten. A job record under key stays until ForgetJob.
func (ts *Taskscaler) Release(key string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.reserved, key)
	if a, ok := ts.acquired[key]; ok {
		ts.detachLocked(a, true)
		if ts.forecast != nil {
			ts.forecast.Freed(ts.clock.Now())
		}
		ts.assignLocked()
	}
	ts.markDirty()
}

// ForgetJob drops the job record under key (RecordJob), e.g. once GitLab has the job's final state.
// Unknown keys are ignored.
func (ts *Taskscaler) ForgetJob(key string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, ok := ts.jobs[key]; ok {
		delete(ts.jobs, key)
		ts.markDirty()
	}
}

// MarkUnhealthy removes an instance the caller could not use. Its acquisitions' contexts are cancelled
// and forgotten, so a job that had not started can Acquire again under the same key.
func (ts *Taskscaler) MarkUnhealthy(id string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	in, ok := ts.instances[id]
	if !ok || in.state >= stRemove {
		return
	}
	ts.counters.MarkedUnhealthy++
	ts.condemnLocked(in, "marked unhealthy by its user")
}

// SetPolicies replaces the policy list (config reload). A list with a bad policy is refused whole and
// the running one kept.
func (ts *Taskscaler) SetPolicies(policies []Policy) error {
	compiled, err := capacity.NewPolicies(policies)
	if err != nil {
		return err
	}
	ts.mu.Lock()
	ts.policies = compiled
	ts.mu.Unlock()
	ts.poke()
	return nil
}

// ConnectInfo returns how to reach instance id, from cache while its credentials have more than a
// minute left, otherwise from the plugin.
func (ts *Taskscaler) ConnectInfo(ctx context.Context, id string) (fleeting.ConnectInfo, error) {
	ts.mu.Lock()
	in, ok := ts.instances[id]
	if !ok {
		ts.mu.Unlock()
		return fleeting.ConnectInfo{}, fmt.Errorf("instance %s is no longer part of the group: %w", id, ErrInstanceLost)
	}
	if ci := in.connectInfo; ci != nil && (ci.Expires == nil || ts.clock.Now().Add(time.Minute).Before(*ci.Expires)) {
		ts.mu.Unlock()
		return *ci, nil
	}
	ts.mu.Unlock()
	ci, err := ts.group.ConnectInfo(ctx, id)
	if err != nil {
		return fleeting.ConnectInfo{}, fmt.Errorf("connection details of instance %s: %w", id, err)
	}
	ts.mu.Lock()
	if in, ok := ts.instances[id]; ok {
		in.connectInfo = &ci
		ts.markDirty()
	}
	ts.mu.Unlock()
	return ci, nil
}

// InstanceData returns the caller data stored on instance id under name (e.g. a pinned host key).
func (ts *Taskscaler) InstanceData(id, name string) ([]byte, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	in, ok := ts.instances[id]
	if !ok {
		return nil, false
	}
	v, ok := in.data[name]
	return slices.Clone(v), ok
}

// SetInstanceData stores caller data on instance id under name and writes the state file.
func (ts *Taskscaler) SetInstanceData(id, name string, value []byte) error {
	ts.mu.Lock()
	in, ok := ts.instances[id]
	if !ok {
		ts.mu.Unlock()
		return fmt.Errorf("instance %s is no longer part of the group: %w", id, ErrInstanceLost)
	}
	if in.data == nil {
		in.data = map[string][]byte{}
	}
	in.data[name] = slices.Clone(value)
	ts.mu.Unlock()
	return ts.save()
}

// Shutdown stops the loop and fails waiting Acquire calls. With delete_instances_on_shutdown it removes
// every instance, checking shutdown_deletion_retries times, shutdown_deletion_interval apart, that they
// are gone. The state file is written last. The group itself is left for the caller to shut down.
func (ts *Taskscaler) Shutdown(ctx context.Context) error {
	if !ts.stop() {
		return nil
	}
	var errs []error
	if ts.opts.DeleteInstancesOnShutdown {
		errs = append(errs, ts.deleteAll(ctx))
	}
	if err := ts.save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Abandon stops the taskscaler as Shutdown does but touches nothing it managed: no instance is
// deleted and no state is written. It is for a manager that lost the right to manage the group (its
// state lease): another manager now scales the group and owns its state.
func (ts *Taskscaler) Abandon() { ts.stop() }

// stop ends the loops and fails the waiting acquisitions; it reports false when already stopped.
func (ts *Taskscaler) stop() bool {
	ts.mu.Lock()
	if ts.closed {
		ts.mu.Unlock()
		return false
	}
	ts.closed = true
	for _, w := range ts.waiters {
		w.err = fmt.Errorf("unable to acquire instance: %w", ErrShutdown)
		close(w.done)
	}
	ts.waiters = nil
	started := ts.started
	ts.mu.Unlock()

	ts.cancelLoop()
	if started {
		<-ts.loopDone
	}
	ts.wg.Wait()
	if started {
		<-ts.persistEnd
	}
	return true
}

func (ts *Taskscaler) deleteAll(ctx context.Context) error {
	ts.mu.Lock()
	ids := slices.Sorted(maps.Keys(ts.instances))
	ts.mu.Unlock()
	for attempt := 0; len(ids) > 0; attempt++ {
		if attempt > 0 {
			if attempt > ts.opts.ShutdownDeletionRetries {
				break
			}
			t := ts.clock.NewTimer(ts.opts.ShutdownDeletionInterval)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("deleting instances on shutdown: %w; still present: %v", ctx.Err(), ids)
			case <-t.C():
			}
			remaining := map[string]bool{}
			if err := ts.group.Update(ctx, func(id string, st fleeting.State) {
				if st != fleeting.StateDeleted {
					remaining[id] = true
				}
			}); err != nil {
				ts.log.WithError(err).Warn("could not list instances while deleting them on shutdown")
				continue
			}
			var gone []string
			ts.mu.Lock()
			for id := range ts.instances {
				if !remaining[id] {
					delete(ts.instances, id)
					gone = append(gone, id)
				}
			}
			ts.mu.Unlock()
			ts.tellGone(gone)
			ids = slices.DeleteFunc(ids, func(id string) bool { return !remaining[id] })
			if len(ids) == 0 {
				break
			}
		}
		accepted, err := ts.group.Decrease(ctx, ids)
		if err != nil {
			ts.mu.Lock()
			ts.counters.DecreaseFailures++
			ts.mu.Unlock()
			ts.log.WithError(err).WithField("accepted", len(accepted)).Warn("could not delete every instance on shutdown; retrying")
		}
	}
	if len(ids) > 0 {
		return fmt.Errorf("instances still present after deleting them on shutdown (remove them by hand): %v", ids)
	}
	ts.log.Info("deleted all instances on shutdown")
	return nil
}

// poke wakes the loop for a prompt reconcile.
func (ts *Taskscaler) poke() {
	select {
	case ts.wake <- struct{}{}:
	default:
	}
}

// availLocked is the number of new jobs instance in can take now.
func (ts *Taskscaler) availLocked(in *instance) int {
	if in.state != stReady {
		return 0
	}
	free := ts.opts.CapacityPerInstance - len(in.acq)
	if ts.opts.MaxUseCount > 0 {
		free = min(free, ts.opts.MaxUseCount-in.useCount-len(in.acq))
	}
	return max(free, 0)
}

// unavailableOnLocked counts slots of a serving instance that will never take a job again.
func (ts *Taskscaler) unavailableOnLocked(in *instance) int {
	if in.state != stReady && in.state != stDraining {
		return 0
	}
	return ts.opts.CapacityPerInstance - len(in.acq) - ts.availLocked(in)
}

func (ts *Taskscaler) freeSlotsLocked() int {
	n := 0
	for _, in := range ts.instances {
		n += ts.availLocked(in)
	}
	return n
}

func (ts *Taskscaler) unavailableLocked() int {
	n := 0
	for _, in := range ts.instances {
		n += ts.unavailableOnLocked(in)
	}
	return n
}

func (ts *Taskscaler) requestedLocked() int {
	n := 0
	for _, r := range ts.requests {
		n += r.n
	}
	return n
}

func (ts *Taskscaler) countLocked(s instState) int {
	n := 0
	for _, in := range ts.instances {
		if in.state == s {
			n++
		}
	}
	return n
}

func (ts *Taskscaler) startingLocked() int {
	return ts.requestedLocked() + ts.countLocked(stCreating) + ts.countLocked(stReadying)
}

func (ts *Taskscaler) liveLocked() int {
	n := ts.requestedLocked()
	for _, in := range ts.instances {
		if in.state < stRemove {
			n++
		}
	}
	return n
}

func (ts *Taskscaler) canGrowLocked() bool {
	return ts.opts.MaxInstances == 0 || len(ts.instances)+ts.requestedLocked() < ts.opts.MaxInstances
}

// assignLocked gives free slots to waiting Acquire calls, first come first served. Jobs are packed onto
// the busiest instance so that the others go idle and can be removed.
func (ts *Taskscaler) assignLocked() {
	for len(ts.waiters) > 0 {
		var best *instance
		for _, in := range ts.instances {
			if ts.availLocked(in) == 0 {
				continue
			}
			if best == nil || cmp.Or(
				cmp.Compare(len(best.acq), len(in.acq)),
				in.readyAt.Compare(best.readyAt),
				cmp.Compare(in.id, best.id)) < 0 {
				best = in
			}
		}
		if best == nil {
			return
		}
		w := ts.waiters[0]
		ts.waiters = ts.waiters[1:]
		w.acq = ts.attachLocked(best, w.key)
		close(w.done)
	}
}

func (ts *Taskscaler) attachLocked(in *instance, key string) *Acquisition {
	ts.accountLocked()
	slot := slices.Index(in.slots, false)
	in.slots[slot] = true
	a := &Acquisition{InstanceID: in.id, Slot: slot, UseCount: in.useCount, key: key, ts: ts}
	a.ctx, a.cancel = context.WithCancelCause(ts.baseCtx)
	in.acq[key] = a
	ts.acquired[key] = a
	ts.refreshDrainLocked(in)
	ts.markDirty()
	return a
}

// detachLocked ends an acquisition; used counts it as a finished job.
func (ts *Taskscaler) detachLocked(a *Acquisition, used bool) {
	ts.accountLocked()
	delete(ts.acquired, a.key)
	a.cancel(errReleased)
	in, ok := ts.instances[a.InstanceID]
	if !ok || in.acq[a.key] != a {
		return
	}
	delete(in.acq, a.key)
	in.slots[a.Slot] = false
	if used {
		in.useCount++
	}
	if len(in.acq) == 0 {
		in.idleSince = ts.clock.Now()
	}
	ts.refreshDrainLocked(in)
	if in.state == stDraining && len(in.acq) == 0 {
		ts.condemnLocked(in, cmp.Or(in.drainReason, fmt.Sprintf("reached max_use_count (%d)", ts.opts.MaxUseCount)))
	}
	ts.markDirty()
}

func (ts *Taskscaler) refreshDrainLocked(in *instance) {
	if in.drainReason != "" || ts.opts.MaxUseCount == 0 || (in.state != stReady && in.state != stDraining) {
		return
	}
	if in.useCount+len(in.acq) >= ts.opts.MaxUseCount {
		in.state = stDraining
	} else {
		in.state = stReady
	}
}

// condemnLocked schedules an instance for removal at the next pass and cuts off its jobs.
func (ts *Taskscaler) condemnLocked(in *instance, reason string) {
	ts.accountLocked()
	ts.loseLocked(in, reason)
	in.state = stRemove
	in.removeReason = reason
	ts.log.WithFields(logrus.Fields{"instance": in.id, "reason": reason, "use_count": in.useCount}).Info("removing instance")
	ts.markDirty()
	ts.poke()
}

// loseLocked cancels and forgets the acquisitions on an instance that can no longer serve them.
func (ts *Taskscaler) loseLocked(in *instance, reason string) {
	for key, a := range in.acq {
		a.cancel(fmt.Errorf("instance %s: %s: %w", in.id, reason, ErrInstanceLost))
		delete(ts.acquired, key)
		ts.log.WithFields(logrus.Fields{"instance": in.id, "key": key, "reason": reason}).Warn("job lost its instance")
	}
	clear(in.acq)
	clear(in.slots)
}

func (ts *Taskscaler) newInstanceLocked(id string, now time.Time) *instance {
	in := &instance{
		id:        id,
		slots:     make([]bool, ts.opts.CapacityPerInstance),
		acq:       map[string]*Acquisition{},
		createdAt: now,
		idleSince: now,
	}
	ts.instances[id] = in
	return in
}
