package taskscaler

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the policy test reads Europe/Berlin whatever the machine has installed

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// 2024-03-04 is a Monday.
var t0 = time.Date(2024, 3, 4, 9, 0, 0, 0, time.UTC)

// allDay makes p active every minute, in the local zone.
func allDay(p Policy) Policy {
	p.Periods, p.Location = []string{"* * * * *"}, time.Local
	return p
}

// options are complete options on g's fake clock: upstream's values for an empty [runners.autoscaler],
// fleetrunner's creation pacing, and a day to acquire a slot. set, when not nil, changes them.
func options(g *fakeGroup, set func(o *Options)) Options {
	o := Options{
		CapacityPerInstance:         1,
		UpdateInterval:              time.Minute,
		UpdateIntervalWhenExpecting: 2 * time.Second,
		DeletionRetryInterval:       time.Minute,
		FailureThreshold:            3,
		InstanceAcquireTimeout:      24 * time.Hour,
		CreationTimeout:             15 * time.Minute,
		CreateBackoff:               5 * time.Second,
		MaxCreateBackoff:            5 * time.Minute,
		ScaleThrottleLimit:          100,
		ScaleThrottleBurst:          100,
		ReservationThrottling:       true,
		ShutdownDeletionInterval:    10 * time.Second,
		ShutdownDeletionRetries:     3,
		Clock:                       g.clock,
	}
	if set != nil {
		set(&o)
	}
	return o
}

// start builds a taskscaler with options(g, set); the test's cleanup stops it like a crash would.
func start(t *testing.T, g *fakeGroup, set func(o *Options)) *Taskscaler {
	t.Helper()
	ts, err := New(g, options(g, set))
	if err != nil {
		t.Fatal(err)
	}
	ts.Start(t.Context())
	t.Cleanup(ts.kill)
	return ts
}

// kill stops every goroutine without deleting or saving anything, as kill -9 would.
func (ts *Taskscaler) kill() {
	ts.mu.Lock()
	ts.closed = true
	ts.mu.Unlock()
	ts.cancelLoop()
	<-ts.loopDone
	ts.wg.Wait()
	<-ts.persistEnd
}

// eventually advances the fake clock in small steps, letting the goroutines run in between, until cond
// holds.
func eventually(t *testing.T, c *clock.Fake, what string, cond func() bool) {
	t.Helper()
	eventuallyStep(t, c, 250*time.Millisecond, what, cond)
}

func eventuallyStep(t *testing.T, c *clock.Fake, step time.Duration, what string, cond func() bool) {
	t.Helper()
	for range 40000 {
		if cond() {
			return
		}
		c.Advance(step)
		time.Sleep(20 * time.Microsecond)
	}
	t.Fatalf("never happened (fake time %s): %s", c.Now().Sub(t0), what)
}

// waitReal waits without moving the fake clock, for goroutines to reach a state.
func waitReal(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func ready(ts *Taskscaler) int { return ts.Stats().Instances.Ready }

// observer checks the slot discipline from the jobs' side.
type observer struct {
	mu      sync.Mutex
	running map[string]int
	total   map[string]int
	peak    int
}

func (o *observer) begin(a *Acquisition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.running[a.InstanceID]++
	o.total[a.InstanceID]++
	o.peak = max(o.peak, o.running[a.InstanceID])
}

func (o *observer) end(a *Acquisition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.running[a.InstanceID]--
}

// runJob reserves (retrying while there is no capacity), acquires, holds the slot for d of fake time and
// releases.
func runJob(ctx context.Context, ts *Taskscaler, c *clock.Fake, key string, d time.Duration, o *observer) error {
	for {
		err := ts.Reserve(key)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNoCapacity) {
			return err
		}
		time.Sleep(100 * time.Microsecond)
	}
	a, err := ts.Acquire(ctx, key)
	if err != nil {
		return err
	}
	if a.Slot < 0 || a.Slot >= ts.opts.CapacityPerInstance {
		return fmt.Errorf("slot %d out of range", a.Slot)
	}
	o.begin(a)
	tm := c.NewTimer(d)
	<-tm.C()
	o.end(a)
	ts.Release(key)
	return nil
}

func TestThirtyJobsCapacityTwoMaxFour(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.CapacityPerInstance = 2
		o.MaxInstances = 4
		o.ScaleThrottleBurst = 4 // scale_throttle.burst is max_instances unless set
		o.MaxUseCount = 4
	})
	o := &observer{running: map[string]int{}, total: map[string]int{}}
	errs := make(chan error, 30)
	var done sync.WaitGroup
	for i := range 30 {
		done.Go(func() { errs <- runJob(t.Context(), ts, c, fmt.Sprintf("job-%d", i), 30*time.Second, o) })
	}
	finished := make(chan struct{})
	go func() { done.Wait(); close(finished) }()
	eventually(t, c, "all 30 jobs finished", func() bool {
		select {
		case <-finished:
			return true
		default:
			return false
		}
	})
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("job failed: %v", err)
		}
	}
	if o.peak > 2 {
		t.Errorf("an instance ran %d jobs at once, capacity is 2", o.peak)
	}
	for id, n := range o.total {
		if n > 4 {
			t.Errorf("instance %s ran %d jobs, max_use_count is 4", id, n)
		}
	}
	if len(o.total) < 8 {
		t.Errorf("30 jobs at max_use_count 4 need at least 8 instances, used %d", len(o.total))
	}
	if g.maxAlive > 4 {
		t.Errorf("the group held %d instances at once, max_instances is 4", g.maxAlive)
	}
	eventually(t, c, "retired instances removed and the fleet back to zero", func() bool { return len(g.ids()) == 0 })
}

func TestMaxUseCountRetires(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.MaxUseCount = 2
		o.Policies = []Policy{allDay(Policy{IdleCount: 1, IdleTime: time.Hour, Preemptive: true})}
	})
	eventually(t, c, "one idle instance", func() bool { return ready(ts) == 1 })
	first := ts.Instances()[0].ID
	for i := range 2 {
		key := fmt.Sprintf("k%d", i)
		a, err := ts.Acquire(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if a.InstanceID != first || a.UseCount != i {
			t.Fatalf("job %d got %s use count %d, want %s use count %d", i, a.InstanceID, a.UseCount, first, i)
		}
		if i == 1 && ts.Stats().Instances.Draining != 1 {
			t.Fatalf("instance taking its last job should drain: %+v", ts.Stats().Instances)
		}
		ts.Release(key)
	}
	eventually(t, c, "retired instance removed", func() bool { return g.decreased(first) && !slices.Contains(g.ids(), first) })
	eventually(t, c, "a fresh instance replaces it for the idle target", func() bool { return ready(ts) == 1 })
	if got := ts.Instances()[0]; got.ID == first || got.UseCount != 0 {
		t.Fatalf("after retirement got %+v", got)
	}
}

func TestIdleCountAndIdleTime(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.Policies = []Policy{allDay(Policy{IdleCount: 2, IdleTime: 5 * time.Minute, Preemptive: true})}
	})
	eventually(t, c, "two idle slots", func() bool { return ts.Stats().Slots.Idle == 2 })

	var acqs []*Acquisition
	for i := range 4 {
		a, err := ts.Acquire(t.Context(), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		acqs = append(acqs, a)
		eventually(t, c, "idle slots refilled", func() bool { return ts.Stats().Slots.Idle == 2 })
	}
	if s := ts.Stats(); s.Instances.Ready != 6 || s.Slots.Acquired != 4 {
		t.Fatalf("4 jobs + 2 idle: %+v", s)
	}
	for _, a := range acqs {
		ts.Release(a.Key())
	}
	releasedAt := c.Now()
	eventuallyStep(t, c, time.Second, "scaled in to the idle target", func() bool { return len(g.ids()) == 2 && ready(ts) == 2 })
	if waited := c.Now().Sub(releasedAt); waited < 5*time.Minute {
		t.Errorf("idle instances removed after %s, before idle_time", waited)
	}
	if s := ts.Stats(); s.Slots.Idle != 2 || s.IdleTarget != 2 {
		t.Errorf("after scale-in: %+v", s)
	}
	c.Advance(time.Hour)
	settle(t, c, g, ts)
	if n := len(g.ids()); n != 2 {
		t.Errorf("instances needed for the idle target were removed: %d left", n)
	}
}

// settle lets at least three more reconcile passes run, then waits for the fleet to stop moving.
func settle(t *testing.T, c *clock.Fake, g *fakeGroup, ts *Taskscaler) {
	t.Helper()
	n := g.updateCount() + 3
	eventuallyStep(t, c, time.Second, "three more reconcile passes", func() bool { return g.updateCount() >= n })
	eventually(t, c, "settled", func() bool { return !ts.Stats().hasMotion() })
}

func (s Stats) hasMotion() bool {
	return s.Instances.Creating+s.Instances.Readying+s.Instances.Removing+s.Instances.Requested > 0
}

func TestPolicyPeriodSwitch(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	c := clock.NewFake(time.Date(2024, 3, 4, 7, 50, 0, 0, berlin))
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.UpdateInterval = 30 * time.Second
		o.Policies = []Policy{
			allDay(Policy{}),
			{Periods: []string{"* 8-15 * * mon-fri"}, Location: berlin, IdleCount: 3, IdleTime: 10 * time.Minute, Preemptive: true},
		}
	})
	if ts.Stats().Policy != 0 || len(g.ids()) != 0 {
		t.Fatalf("before 08:00 Berlin: %+v, instances %v", ts.Stats(), g.ids())
	}
	eventuallyStep(t, c, time.Second, "working-hours policy active with 3 idle slots", func() bool { return ts.Stats().Slots.Idle == 3 })
	inc, _ := g.calls()
	if opened := time.Date(2024, 3, 4, 8, 0, 0, 0, berlin); g.increaseAt[0].Before(opened) {
		t.Errorf("instances asked for at %s, before the period opened at %s", g.increaseAt[0], opened)
	}
	if !slices.Equal(inc, []int{3}) {
		t.Errorf("Increase calls = %v, want one call for 3", inc)
	}
	c.Set(time.Date(2024, 3, 4, 15, 59, 0, 0, berlin))
	eventually(t, c, "back to the default policy", func() bool { return ts.Stats().Policy == 0 })
	if now := c.Now().In(berlin); now.Hour() != 16 {
		t.Errorf("policy switched at %s, want 16:00", now)
	}
	eventuallyStep(t, c, 2*time.Second, "scaled to zero after the period", func() bool { return len(g.ids()) == 0 })
}

func TestBurstOfEightAsksOnce(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) { o.CapacityPerInstance = 2 })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			key := fmt.Sprint(i)
			if err := ts.Reserve(key); err != nil {
				errs <- err
				return
			}
			_, err := ts.Acquire(t.Context(), key)
			errs <- err
		})
	}
	waitReal(t, "8 pending acquisitions", func() bool { return ts.Stats().Slots.Pending == 8 })
	eventually(t, c, "all 8 acquired", func() bool { return ts.Stats().Slots.Acquired == 8 })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if inc, _ := g.calls(); !slices.Equal(inc, []int{4}) {
		t.Fatalf("Increase calls = %v, want a single Increase(4)", inc)
	}
	for _, in := range ts.Instances() {
		if in.Acquired != 2 {
			t.Errorf("instance %s holds %d jobs, want 2", in.ID, in.Acquired)
		}
	}
}

func TestReadyFailureRemovesAndBacksOff(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	var mu sync.Mutex
	var failedAt []time.Time
	ts := start(t, g, func(o *Options) {
		o.Policies = []Policy{allDay(Policy{IdleCount: 1, Preemptive: true})}
		o.CreateBackoff = 5 * time.Second
		o.ReadyUp = func(_ context.Context, inst Instance) error {
			mu.Lock()
			defer mu.Unlock()
			if inst.ConnectInfo.ID != inst.ID {
				return fmt.Errorf("ReadyUp got connect info for %q", inst.ConnectInfo.ID)
			}
			if err := inst.SetData("hostkey", []byte(inst.ID)); err != nil {
				return err
			}
			if len(failedAt) < 3 {
				failedAt = append(failedAt, c.Now())
				return errors.New("exit status 1")
			}
			return nil
		}
	})
	eventually(t, c, "an instance passes its ready command", func() bool { return ready(ts) == 1 })
	s := ts.Stats()
	if s.Counters.ReadyFailures != 3 {
		t.Errorf("ReadyFailures = %d, want 3", s.Counters.ReadyFailures)
	}
	g.mu.Lock()
	increaseAt := slices.Clone(g.increaseAt)
	g.mu.Unlock()
	if len(increaseAt) != 4 {
		t.Fatalf("Increase called at %v, want 4 calls", increaseAt)
	}
	for i, f := range failedAt {
		want := capacity.Backoff(i+1, 5*time.Second, 5*time.Minute)
		if gap := increaseAt[i+1].Sub(f); gap < want {
			t.Errorf("after failure %d a new instance was asked for %s later, want at least %s", i+1, gap, want)
		}
	}
	eventually(t, c, "failed instances deleted", func() bool { return len(g.ids()) == 1 })
	in := ts.Instances()[0]
	if v, ok := ts.InstanceData(in.ID, "hostkey"); !ok || string(v) != in.ID {
		t.Errorf("data stored by ReadyUp = %q, %v", v, ok)
	}
}

func TestHealthFailuresReplaceInstance(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	var sick sync.Map
	ts := start(t, g, func(o *Options) {
		o.UpdateInterval = time.Minute
		o.FailureThreshold = 3
		o.Policies = []Policy{allDay(Policy{IdleCount: 1, IdleTime: time.Hour, Preemptive: true})}
		o.HealthCheck = func(_ context.Context, inst Instance) error {
			if inst.ConnectInfo.ID != inst.ID {
				return fmt.Errorf("health check got connect info for %q", inst.ConnectInfo.ID)
			}
			if _, bad := sick.Load(inst.ID); bad {
				return errors.New("ssh: handshake failed")
			}
			return nil
		}
	})
	eventually(t, c, "one ready instance", func() bool { return ready(ts) == 1 })
	a, err := ts.Acquire(t.Context(), "job")
	if err != nil {
		t.Fatal(err)
	}
	sick.Store(a.InstanceID, true)
	eventually(t, c, "the job's context is cancelled", func() bool { return a.Context().Err() != nil })
	if cause := context.Cause(a.Context()); !errors.Is(cause, ErrInstanceLost) {
		t.Errorf("cause = %v, want ErrInstanceLost", cause)
	}
	s := ts.Stats()
	if s.Counters.UnhealthyRemoved != 1 || s.Counters.HealthCheckFailures != 3 {
		t.Errorf("counters = %+v, want 1 removal after 3 failures", s.Counters)
	}
	eventually(t, c, "replacement ready", func() bool {
		return ready(ts) == 1 && !slices.Contains(g.ids(), a.InstanceID)
	})
	ts.Release("job") // the lost acquisition is gone: a no-op
	if s := ts.Stats(); s.Slots.Acquired != 0 {
		t.Errorf("slots after release of a lost job: %+v", s.Slots)
	}
}

func TestMarkUnhealthyReacquiresElsewhere(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.Policies = []Policy{allDay(Policy{IdleCount: 2, IdleTime: time.Hour, Preemptive: true})}
	})
	eventually(t, c, "two ready", func() bool { return ready(ts) == 2 })
	a, err := ts.Acquire(t.Context(), "job")
	if err != nil {
		t.Fatal(err)
	}
	ts.MarkUnhealthy(a.InstanceID)
	if a.Context().Err() == nil {
		t.Fatal("acquisition on an unhealthy instance still live")
	}
	b, err := ts.Acquire(t.Context(), "job")
	if err != nil {
		t.Fatal(err)
	}
	if b.InstanceID == a.InstanceID {
		t.Fatalf("re-acquired the unhealthy instance %s", a.InstanceID)
	}
	eventually(t, c, "unhealthy instance deleted", func() bool { return !slices.Contains(g.ids(), a.InstanceID) })
}

// TestGoneTellsTheCaller: every instance that leaves the group, removed by the taskscaler or vanished,
// reaches the Gone hook once, after the taskscaler forgot it and outside its lock.
func TestGoneTellsTheCaller(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	var mu sync.Mutex
	var gone []string
	var ts *Taskscaler
	// The hook uses the taskscaler: it exists before Start runs any hook.
	ts, err := New(g, options(g, func(o *Options) {
		o.Policies = []Policy{allDay(Policy{IdleCount: 2, IdleTime: time.Hour, Preemptive: true})}
		o.Gone = func(id string) {
			for _, in := range ts.Instances() {
				if in.ID == id {
					t.Errorf("Gone(%s) while the taskscaler still lists it", id)
				}
			}
			mu.Lock()
			gone = append(gone, id)
			mu.Unlock()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.kill)
	ts.Start(t.Context())
	eventually(t, c, "two ready", func() bool { return ready(ts) == 2 })
	ids := g.ids()
	ts.MarkUnhealthy(ids[0])
	g.vanish(ids[1])
	eventually(t, c, "both gone", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(gone) == 2
	})
	eventually(t, c, "replaced", func() bool { return ready(ts) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if slices.Sort(gone); !slices.Equal(gone, ids) {
		t.Errorf("Gone got %v, want %v once each", gone, ids)
	}
}

// TestShutdownBeforeStart: a taskscaler that never started shuts down at once and keeps its state.
func TestShutdownBeforeStart(t *testing.T) {
	g := newFakeGroup(clock.NewFake(t0))
	ts, err := New(g, options(g, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := g.updateCount(); n != 0 {
		t.Errorf("the group was listed %d times without Start", n)
	}
}

func TestVanishedInstanceCancelsJobs(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, nil)
	acqCh := make(chan *Acquisition, 1)
	go func() {
		a, _ := ts.Acquire(t.Context(), "job")
		acqCh <- a
	}()
	var a *Acquisition
	eventually(t, c, "acquired", func() bool {
		select {
		case a = <-acqCh:
			return true
		default:
			return false
		}
	})
	if a == nil {
		t.Fatal("Acquire failed")
	}
	g.vanish(a.InstanceID)
	eventually(t, c, "acquisition cancelled", func() bool { return a.Context().Err() != nil })
	if !strings.Contains(context.Cause(a.Context()).Error(), "unexpectedly removed") {
		t.Errorf("cause = %v", context.Cause(a.Context()))
	}
	if n := ts.Stats().Counters.UnexpectedRemovals; n != 1 {
		t.Errorf("UnexpectedRemovals = %d, want 1", n)
	}
}

func TestPartialIncrease(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	g.increaseLimit = 1
	ts := start(t, g, func(o *Options) { o.Policies = []Policy{allDay(Policy{IdleCount: 3, Preemptive: true})} })
	eventually(t, c, "three ready despite a quota of one per call", func() bool { return ready(ts) == 3 })
	inc, _ := g.calls()
	if inc[0] != 3 || ts.Stats().Counters.IncreaseFailures == 0 {
		t.Errorf("Increase calls %v, failures %d: want a first call for 3 reported as partly failed", inc, ts.Stats().Counters.IncreaseFailures)
	}
	if g.maxAlive != 3 {
		t.Errorf("group peaked at %d instances, want 3 (accepted instances must count)", g.maxAlive)
	}
}

func TestReservePreemptive(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.MaxInstances = 1
		o.ScaleThrottleBurst = 1 // scale_throttle.burst is max_instances unless set
		o.Policies = []Policy{allDay(Policy{IdleCount: 1, IdleTime: time.Hour, Preemptive: true})}
	})
	err := ts.Reserve("a")
	if !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "preemptive") {
		t.Fatalf("Reserve before any instance is ready = %v, want ErrNoCapacity (preemptive)", err)
	}
	eventually(t, c, "ready", func() bool { return ready(ts) == 1 })
	if err := ts.Reserve("a"); err != nil {
		t.Fatal(err)
	}
	if err := ts.Reserve("b"); !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "max_instances") {
		t.Fatalf("second Reserve at max = %v", err)
	}
	ts.Unreserve("a")
	if err := ts.Reserve("b"); err != nil {
		t.Fatalf("Reserve after Unreserve: %v", err)
	}
}

func TestReserveNonPreemptiveBoundedByMax(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.CapacityPerInstance = 2
		o.MaxInstances = 2
		o.ScaleThrottleBurst = 2 // scale_throttle.burst is max_instances unless set
	})
	for i := range 4 {
		if err := ts.Reserve(fmt.Sprint(i)); err != nil {
			t.Fatalf("Reserve %d with room to grow: %v", i, err)
		}
	}
	if err := ts.Reserve("5"); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("Reserve beyond max_instances*capacity = %v", err)
	}
	c.Advance(time.Hour)
	settle(t, c, g, ts)
	if n := len(g.ids()); n != 0 {
		t.Errorf("reservations alone created %d instances (reservation throttling is on)", n)
	}
}

func TestAcquireTimeout(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	g.increaseErr = errors.New("InsufficientInstanceCapacity")
	ts := start(t, g, func(o *Options) { o.InstanceAcquireTimeout = time.Minute })
	errCh := make(chan error, 1)
	go func() {
		_, err := ts.Acquire(t.Context(), "job")
		errCh <- err
	}()
	var err error
	eventually(t, c, "Acquire gives up", func() bool {
		select {
		case err = <-errCh:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "unable to acquire instance") {
		t.Fatalf("err = %v", err)
	}
	if s := ts.Stats(); s.Slots.Pending != 0 || s.Counters.IncreaseFailures == 0 {
		t.Errorf("after timeout: %+v", s)
	}
}

// TestReleaseKeepsTheJobRecord: Release gives the slot back; the job's record stays in the state file
// until ForgetJob.
func TestReleaseKeepsTheJobRecord(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	store := state.NewFile(filepath.Join(t.TempDir(), "state.json"))
	ts := start(t, g, func(o *Options) {
		o.State = store
		o.Policies = []Policy{allDay(Policy{IdleCount: 1, IdleTime: time.Hour, Preemptive: true})}
	})
	eventually(t, c, "one idle", func() bool { return ready(ts) == 1 })
	if _, err := ts.Acquire(t.Context(), "job"); err != nil {
		t.Fatal(err)
	}
	if err := ts.RecordJob("job", 7, []byte("blob")); err != nil {
		t.Fatal(err)
	}
	saved := func() []state.Job {
		t.Helper()
		if err := ts.save(); err != nil {
			t.Fatal(err)
		}
		snap, err := store.Load()
		if err != nil {
			t.Fatal(err)
		}
		return snap.Jobs
	}
	ts.Release("job")
	if s := ts.Stats(); s.Slots.Acquired != 0 {
		t.Errorf("slot still held after Release: %+v", s.Slots)
	}
	if jobs := saved(); len(jobs) != 1 || jobs[0].JobID != 7 || jobs[0].InstanceID != "" {
		t.Fatalf("after Release the state holds %+v, want the record of job 7 without its slot", jobs)
	}
	ts.ForgetJob("job")
	if jobs := saved(); len(jobs) != 0 {
		t.Errorf("after ForgetJob the state holds %+v, want no job", jobs)
	}
}

func TestRestart(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep_instance_with_acquisitions=%v", keep), func(t *testing.T) {
			c := clock.NewFake(t0)
			g := newFakeGroup(c)
			store := state.NewFile(filepath.Join(t.TempDir(), "state.json"))
			opts := func(o *Options) {
				o.State = store
				o.KeepInstanceWithAcquisitions = keep
				o.Policies = []Policy{allDay(Policy{IdleCount: 1, IdleTime: time.Hour, Preemptive: true})}
			}
			ts1 := start(t, g, opts)
			eventually(t, c, "one idle", func() bool { return ready(ts1) == 1 })
			for i := range 3 { // give the first instance a use count
				if _, err := ts1.Acquire(t.Context(), fmt.Sprint(i)); err != nil {
					t.Fatal(err)
				}
				ts1.Release(fmt.Sprint(i))
			}
			busy, err := ts1.Acquire(t.Context(), "running")
			if err != nil {
				t.Fatal(err)
			}
			if err := ts1.RecordJob("running", 101, []byte("job-token-blob")); err != nil {
				t.Fatal(err)
			}
			if err := ts1.SetInstanceData(busy.InstanceID, "hostkey", []byte{1, 2}); err != nil {
				t.Fatal(err)
			}
			eventually(t, c, "idle target restored", func() bool { return ready(ts1) == 2 && ts1.Stats().Slots.Idle == 1 })
			var idle string
			for _, in := range ts1.Instances() {
				if in.Acquired == 0 {
					idle = in.ID
				}
			}
			if err := ts1.save(); err != nil {
				t.Fatal(err)
			}
			ts1.kill()
			stranger := g.addRunning()

			ts2 := start(t, g, opts)
			rec := ts2.RecoveredAcquisitions()
			want := []RecoveredJob{{Key: "running", JobID: 101, InstanceID: busy.InstanceID, Data: []byte("job-token-blob"), Since: rec[0].Since}}
			if len(rec) != 1 || rec[0].Key != want[0].Key || rec[0].JobID != 101 || rec[0].InstanceID != busy.InstanceID || string(rec[0].Data) != "job-token-blob" {
				t.Fatalf("RecoveredAcquisitions = %+v, want %+v", rec, want)
			}
			if !g.decreased(stranger) {
				t.Errorf("unknown instance %s was not removed", stranger)
			}
			if g.decreased(idle) {
				t.Errorf("idle instance %s from state was removed instead of adopted", idle)
			}
			if g.decreased(busy.InstanceID) == keep {
				t.Errorf("instance with an in-flight job: removed=%v, want %v", g.decreased(busy.InstanceID), !keep)
			}
			byID := map[string]InstanceInfo{}
			for _, in := range ts2.Instances() {
				byID[in.ID] = in
			}
			if in := byID[idle]; in.State != "ready" {
				t.Errorf("adopted idle instance: %+v", in)
			}
			if keep {
				if in := byID[busy.InstanceID]; in.State != "ready" || in.UseCount != 4 {
					t.Errorf("kept instance = %+v, want ready with use count 3+1", in)
				}
				if v, _ := ts2.InstanceData(busy.InstanceID, "hostkey"); !slices.Equal(v, []byte{1, 2}) {
					t.Errorf("pinned data lost: %v", v)
				}
			}
			if s := ts2.Stats().Counters; s.UnknownRemoved != 1 || s.InstancesAdopted != uint64(1+btoi(keep)) {
				t.Errorf("counters = %+v", s)
			}
			// Still reported after another crash until the caller says it reported it.
			if err := ts2.save(); err != nil {
				t.Fatal(err)
			}
			snap, err := store.Load()
			if err != nil || len(snap.Jobs) != 1 {
				t.Fatalf("state jobs = %+v, %v", snap, err)
			}
			ts2.ForgetRecovered("running")
			if err := ts2.save(); err != nil {
				t.Fatal(err)
			}
			if snap, _ := store.Load(); len(snap.Jobs) != 0 {
				t.Errorf("forgotten job still in state: %+v", snap.Jobs)
			}
			eventually(t, c, "only the idle target remains", func() bool { return len(g.ids()) == 1+btoi(keep) })
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestRestartWithoutState(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	a, b := g.addRunning(), g.addRunning()
	ts := start(t, g, nil)
	if !g.decreased(a) || !g.decreased(b) {
		t.Fatalf("without state every pre-existing instance is removed; decreases = %v", g.decreaseCalls)
	}
	eventually(t, c, "gone", func() bool { return len(g.ids()) == 0 })
	if n := ts.Stats().Counters.UnknownRemoved; n != 2 {
		t.Errorf("UnknownRemoved = %d", n)
	}
}

func TestShutdown(t *testing.T) {
	for _, del := range []bool{false, true} {
		t.Run(fmt.Sprintf("delete_instances_on_shutdown=%v", del), func(t *testing.T) {
			c := clock.NewFake(t0)
			g := newFakeGroup(c)
			store := state.NewFile(filepath.Join(t.TempDir(), "state.json"))
			ts := start(t, g, func(o *Options) {
				o.State = store
				o.DeleteInstancesOnShutdown = del
				o.Policies = []Policy{allDay(Policy{IdleCount: 2, Preemptive: true})}
			})
			eventually(t, c, "two ready", func() bool { return ready(ts) == 2 })
			errCh := make(chan error, 1)
			go func() { errCh <- ts.Shutdown(t.Context()) }()
			var err error
			eventually(t, c, "Shutdown returns", func() bool {
				select {
				case err = <-errCh:
					return true
				default:
					return false
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ts.Acquire(t.Context(), "late"); !errors.Is(err, ErrShutdown) {
				t.Errorf("Acquire after Shutdown = %v", err)
			}
			snap, err := store.Load()
			if err != nil {
				t.Fatal(err)
			}
			if del {
				if n := len(g.ids()); n != 0 {
					t.Errorf("%d instances left after delete_instances_on_shutdown", n)
				}
				if len(snap.Instances) != 0 {
					t.Errorf("state still lists deleted instances: %+v", snap.Instances)
				}
				return
			}
			if n := len(g.ids()); n != 2 || len(snap.Instances) != 2 {
				t.Errorf("instances left %d, in state %d; want both 2", n, len(snap.Instances))
			}
		})
	}
}

// TestNewRefusesBadOptions: the taskscaler picks no value itself; what is missing or out of range is
// refused, every problem at once.
func TestNewRefusesBadOptions(t *testing.T) {
	g := newFakeGroup(clock.NewFake(t0))
	if _, err := New(g, options(g, func(o *Options) { o.MaxInstances = -1 })); err == nil {
		t.Fatal("negative max_instances must be an error")
	}
	_, err := New(g, Options{Policies: []Policy{{Periods: []string{"bad"}, Location: time.UTC}}})
	if err == nil {
		t.Fatal("empty options must be an error")
	}
	for _, want := range []string{"capacity per instance", "update interval", "instance acquire timeout", "scale throttle", "policy 1", `"bad"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSetPoliciesReload(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) { o.CapacityPerInstance = 2 })
	if len(g.ids()) != 0 {
		t.Fatalf("no policy: instances %v", g.ids())
	}
	if err := ts.SetPolicies([]Policy{{Periods: []string{"* * * * *"}}}); err == nil {
		t.Fatal("a policy without a time zone was accepted")
	}
	if err := ts.SetPolicies([]Policy{allDay(Policy{IdleCount: 3, IdleTime: time.Hour, Preemptive: true})}); err != nil {
		t.Fatal(err)
	}
	eventually(t, c, "reloaded idle target reached", func() bool { return ts.Stats().Slots.Idle == 4 })
	if s := ts.Stats(); s.Instances.Ready != 2 || !s.Preemptive || s.Policy != 0 {
		t.Fatalf("after reload: %+v", s)
	}
}

func TestReservationsAreDemandWithoutThrottling(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) { o.ReservationThrottling = false })
	for i := range 3 {
		if err := ts.Reserve(fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, c, "an instance per reservation", func() bool { return ready(ts) == 3 })
}

// TestHealthChecksReuseConnectInfo: a health round must not fetch connection details again; with EC2
// Instance Connect every fetch is a key push.
func TestHealthChecksReuseConnectInfo(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	g.connectTTL = time.Minute
	var checks atomic.Int64
	ts := start(t, g, func(o *Options) {
		o.UpdateInterval = time.Minute
		o.Policies = []Policy{allDay(Policy{IdleCount: 2, IdleTime: time.Hour, Preemptive: true})}
		o.HealthCheck = func(_ context.Context, inst Instance) error {
			if inst.ConnectInfo.ID != inst.ID {
				return fmt.Errorf("health check got connect info for %q", inst.ConnectInfo.ID)
			}
			checks.Add(1)
			return nil
		}
	})
	eventually(t, c, "two ready instances", func() bool { return ready(ts) == 2 })
	g.mu.Lock()
	before := g.connectInfos
	g.mu.Unlock()
	eventually(t, c, "five health rounds", func() bool { return checks.Load() >= 10 })
	g.mu.Lock()
	after := g.connectInfos
	g.mu.Unlock()
	if after != before {
		t.Errorf("health checks fetched connection details %d times; want none", after-before)
	}
	if s := ts.Stats(); s.Counters.HealthCheckFailures != 0 {
		t.Errorf("health check failures: %d", s.Counters.HealthCheckFailures)
	}
}

// TestTakingIdleSlotsReplenishesAtOnce: in preemptive mode jobs only come when idle slots exist, so
// once they are taken the idle target must be restored by the next pass, not an update_interval later.
func TestTakingIdleSlotsReplenishesAtOnce(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.UpdateInterval = time.Hour
		o.Policies = []Policy{allDay(Policy{IdleCount: 2, IdleTime: time.Hour, Preemptive: true})}
	})
	eventually(t, c, "two idle instances", func() bool { return ready(ts) == 2 })
	// Let the loop settle on its 1h interval: nothing is expected any more.
	settled := c.Now().Add(30 * time.Second)
	eventually(t, c, "a quiet half minute", func() bool { return !c.Now().Before(settled) })
	before := len(func() []int { calls, _ := g.calls(); return calls }())
	for _, key := range []string{"a", "b"} {
		if err := ts.Reserve(key); err != nil {
			t.Fatalf("Reserve(%s): %v", key, err)
		}
		if _, err := ts.Acquire(t.Context(), key); err != nil {
			t.Fatalf("Acquire(%s): %v", key, err)
		}
	}
	start := c.Now()
	eventually(t, c, "two more instances requested", func() bool {
		calls, _ := g.calls()
		asked := 0
		for _, n := range calls[before:] {
			asked += n
		}
		return asked >= 2
	})
	if waited := c.Now().Sub(start); waited > time.Minute {
		t.Errorf("idle slots were replenished after %s of fake time; want well before the 1h update_interval", waited)
	}
}

// An instance that max_use_count has left with one job to run is idle beside a fresh one. Only the fresh
// one holds the two idle slots alone, so after idle_time the used-up one goes and the fleet stays at one
// instance, though the fresh one has been idle longer.
func TestPartlyUsedUpInstanceGoesFirst(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.CapacityPerInstance = 2
		o.MaxUseCount = 4
		o.Policies = []Policy{allDay(Policy{IdleCount: 2, IdleTime: 5 * time.Minute, Preemptive: true})}
	})
	eventually(t, c, "two idle slots", func() bool { return ts.Stats().Slots.Idle == 2 })
	used := ts.Instances()[0].ID
	acquire := func(key string) {
		t.Helper()
		a, err := ts.Acquire(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if a.InstanceID != used {
			t.Fatalf("job %s went to %s, want the oldest instance %s", key, a.InstanceID, used)
		}
	}
	acquire("k0")
	acquire("k1")
	eventually(t, c, "a second instance for the idle target", func() bool { return ready(ts) == 2 })
	ts.Release("k0")
	ts.Release("k1")
	acquire("k2")
	ts.Release("k2")
	var fresh string
	for _, in := range ts.Instances() {
		if in.ID != used {
			fresh = in.ID
		} else if in.UseCount != 3 {
			t.Fatalf("instance %s has use count %d, want 3", in.ID, in.UseCount)
		}
	}

	eventuallyStep(t, c, time.Second, "scaled in to one instance", func() bool { return len(g.ids()) == 1 })
	if got := g.ids(); got[0] != fresh {
		t.Fatalf("kept %s, want the fresh instance %s", got[0], fresh)
	}
	c.Advance(time.Hour)
	settle(t, c, g, ts)
	if s := ts.Stats(); len(g.ids()) != 1 || s.Slots.Idle != 2 {
		t.Errorf("an hour later: %d instances, %d idle slots; want 1 and 2", len(g.ids()), s.Slots.Idle)
	}
}

func TestInstancesNameTheirRecordedJobs(t *testing.T) {
	c := clock.NewFake(t0)
	g := newFakeGroup(c)
	ts := start(t, g, func(o *Options) {
		o.CapacityPerInstance = 3
		o.Policies = []Policy{allDay(Policy{IdleCount: 1, IdleTime: time.Hour, Preemptive: true})}
	})
	eventually(t, c, "one idle instance", func() bool { return ready(ts) == 1 })
	for _, j := range []struct {
		key    string
		id     int64
		record bool
	}{{"b", 20, true}, {"a", 10, true}, {"unrecorded", 30, false}} {
		if j.record {
			if err := ts.RecordJob(j.key, j.id, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ts.Acquire(t.Context(), j.key); err != nil {
			t.Fatal(err)
		}
	}
	in := ts.Instances()[0]
	if !slices.Equal(in.Jobs, []int64{10, 20}) || in.Acquired != 3 {
		t.Errorf("instance jobs %v with %d acquired, want the two recorded jobs [10 20] of 3", in.Jobs, in.Acquired)
	}
	if in.CreatedAt.IsZero() || in.CreatedAt.After(c.Now()) {
		t.Errorf("instance created at %s, want when the group first listed it, before %s", in.CreatedAt, c.Now())
	}
	ts.Release("a")
	if got := ts.Instances()[0].Jobs; !slices.Equal(got, []int64{20}) {
		t.Errorf("after job 10 released its slot the instance names jobs %v, want [20]", got)
	}
}
