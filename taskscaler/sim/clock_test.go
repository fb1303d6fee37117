package sim

import (
	"testing"
	"time"
)

// TestSimClockTellsTimersApart walks the reconcile loop's timer pattern: interval, wake-up (stop,
// gather), fire, and an Acquire's timeout alongside.
func TestSimClockTellsTimersApart(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newSimClock(t0, 15*time.Minute, func() {})
	check := func(step string, parked, gathering bool, consumed uint64, acquires int) {
		t.Helper()
		v := c.view()
		if v.parked != parked || v.gathering != gathering || v.consumed != consumed || v.acquirePending != acquires {
			t.Fatalf("%s: view %+v, want parked %v, gathering %v, consumed %d, acquires pending %d", step, v, parked, gathering, consumed, acquires)
		}
	}
	interval := c.NewTimer(time.Minute)
	check("interval", true, false, 0, 0)
	acq := c.NewTimer(15 * time.Minute)
	check("acquire waits", true, false, 0, 1)
	if !interval.Stop() || interval.Stop() {
		t.Fatal("Stop must report true once, then false")
	}
	check("wake-up taken", false, false, 1, 1)
	gather := c.NewTimer(100 * time.Millisecond)
	check("gather", true, true, 1, 1)
	if at, ok := c.next(); !ok || !at.Equal(t0.Add(100*time.Millisecond)) {
		t.Fatalf("next = %s, %v; want the gather deadline", at, ok)
	}
	if !c.advance(t0.Add(100 * time.Millisecond)) {
		t.Fatal("advance did not report the loop's timer firing")
	}
	select {
	case <-gather.C():
	default:
		t.Fatal("gather timer did not fire")
	}
	check("pass running", false, false, 1, 1)
	c.NewTimer(time.Minute)
	check("next interval", true, false, 1, 1)
	if c.advance(t0.Add(30 * time.Second)) {
		t.Fatal("advance reported a loop timer that was not due")
	}
	if !acq.Stop() {
		t.Fatal("pending acquire timer could not be stopped")
	}
	check("acquire served", true, false, 1, 0)
}
