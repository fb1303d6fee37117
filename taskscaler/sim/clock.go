package sim

import (
	"container/heap"
	"sync"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
)

// simClock is the taskscaler's clock during a simulation. Unlike clock.Fake it keeps every timer's
// fate (pending, fired, stopped) and tells the two kinds of timer apart, because that is how the
// simulator knows, without sleeping, what the taskscaler's goroutines are doing:
//
//   - the reconcile loop always has exactly one timer: its update interval, or after a wake-up the
//     short gather timer that follows stopping the interval timer early. A fired timer not yet replaced
//     means a pass is running; a stopped interval timer means a wake-up was just taken.
//   - every Acquire that has to wait holds one timer of instance_acquire_timeout, recognised by its
//     duration (the simulator makes that duration unique).
type simClock struct {
	acquireTimeout time.Duration
	kick           func()

	mu     sync.Mutex
	now    time.Time
	timers timerHeap
	seq    uint64

	loop     *simTimer // the reconcile loop's current timer
	loopSeq  uint64    // loop timers created so far
	consumed uint64    // wake-ups the loop took: interval timers stopped before firing

	acquireCreated uint64 // waiting Acquire calls so far
	acquirePending int    // waiting Acquire calls whose timer neither fired nor was stopped
}

var _ clock.Clock = (*simClock)(nil)

type timerState int

const (
	timerPending timerState = iota
	timerFired
	timerStopped
)

type simTimer struct {
	c       *simClock
	at      time.Time
	seq     uint64
	ch      chan time.Time
	acquire bool
	gather  bool // a loop timer created right after the loop took a wake-up
	state   timerState
	index   int
}

func newSimClock(start time.Time, acquireTimeout time.Duration, kick func()) *simClock {
	return &simClock{now: start, acquireTimeout: acquireTimeout, kick: kick}
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	c.seq++
	t := &simTimer{c: c, at: c.now.Add(d), seq: c.seq, ch: make(chan time.Time, 1), acquire: d == c.acquireTimeout}
	if t.acquire {
		c.acquireCreated++
		c.acquirePending++
	} else {
		t.gather = c.loop != nil && c.loop.state == timerStopped
		c.loop = t
		c.loopSeq++
	}
	if d <= 0 {
		c.fireLocked(t)
	} else {
		heap.Push(&c.timers, t)
	}
	c.mu.Unlock()
	c.kick()
	return t
}

func (t *simTimer) C() <-chan time.Time { return t.ch }

func (t *simTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	if t.state != timerPending {
		c.mu.Unlock()
		return false
	}
	heap.Remove(&c.timers, t.index)
	t.state = timerStopped
	if t.acquire {
		c.acquirePending--
	} else if !t.gather {
		c.consumed++
	}
	c.mu.Unlock()
	c.kick()
	return true
}

func (c *simClock) fireLocked(t *simTimer) {
	t.state = timerFired
	if t.acquire {
		c.acquirePending--
	}
	t.ch <- t.at
}

// next returns the earliest pending deadline.
func (c *simClock) next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	return c.timers[0].at, true
}

// advance moves the clock to t (never backwards) and fires every timer due by then, earliest first.
// It reports whether the loop's timer was among them.
func (c *simClock) advance(t time.Time) (loopFired bool) {
	c.mu.Lock()
	if t.After(c.now) {
		c.now = t
	}
	for len(c.timers) > 0 && !c.timers[0].at.After(c.now) {
		tm := heap.Pop(&c.timers).(*simTimer)
		c.fireLocked(tm)
		loopFired = loopFired || tm == c.loop
	}
	c.mu.Unlock()
	return loopFired
}

// loopView is what the simulator needs to know about the reconcile loop and waiting Acquire calls.
type loopView struct {
	// parked: the loop waits on a timer that is still pending.
	parked bool
	// gathering: that timer is the short one after a wake-up (a further wake-up waits for the next pass).
	gathering      bool
	seq            uint64
	consumed       uint64
	acquireCreated uint64
	acquirePending int
}

func (c *simClock) view() loopView {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := loopView{seq: c.loopSeq, consumed: c.consumed, acquireCreated: c.acquireCreated, acquirePending: c.acquirePending}
	if c.loop != nil && c.loop.state == timerPending {
		v.parked, v.gathering = true, c.loop.gather
	}
	return v
}

// timerHeap orders pending timers by deadline, then by creation.
type timerHeap []*simTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*simTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return t
}
