package clock

import (
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	late, early, stopped := f.NewTimer(2*time.Second), f.NewTimer(time.Second), f.NewTimer(time.Second)
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop must report true once, then false")
	}
	if n := f.Timers(); n != 2 {
		t.Fatalf("Timers = %d, want 2", n)
	}
	if at, ok := f.NextDeadline(); !ok || !at.Equal(start.Add(time.Second)) {
		t.Fatalf("NextDeadline = %s, %v", at, ok)
	}
	f.Advance(1500 * time.Millisecond)
	select {
	case got := <-early.C():
		if !got.Equal(start.Add(time.Second)) {
			t.Errorf("early fired with %s", got)
		}
	default:
		t.Fatal("early timer did not fire")
	}
	select {
	case <-late.C():
		t.Fatal("late timer fired early")
	case <-stopped.C():
		t.Fatal("stopped timer fired")
	default:
	}
	f.Set(start) // never backwards
	if !f.Now().Equal(start.Add(1500 * time.Millisecond)) {
		t.Fatalf("Set moved the clock backwards to %s", f.Now())
	}
	f.Set(start.Add(time.Hour))
	<-late.C()
	if _, ok := f.NextDeadline(); ok {
		t.Error("no timer should be pending")
	}
	select {
	case <-f.NewTimer(0).C():
	default:
		t.Error("a zero timer must fire at once")
	}
}
