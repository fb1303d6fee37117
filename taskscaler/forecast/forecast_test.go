package forecast

import (
	"reflect"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// monday is 2026-11-30 00:00 UTC, a Monday.
var monday = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

func opts() Options {
	return Options{History: 14 * 24 * time.Hour, Quantile: 0.9, Lead: time.Minute, Location: time.UTC}
}

// at is day d (0: monday), hour h, minute m.
func at(d, h, m int) time.Time {
	return monday.Add(time.Duration(d)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
}

func TestQuantile(t *testing.T) {
	for _, tt := range []struct {
		s    []int
		q    float64
		want int
	}{
		{[]int{5}, 0.9, 5},
		{[]int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9, 9},
		{[]int{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}, 0.5, 5},
		{[]int{0, 4}, 0.9, 4},
		{[]int{0, 4}, 0.5, 0},
		{[]int{3, 1, 2}, 1, 3},
	} {
		if got := quantile(append([]int(nil), tt.s...), tt.q); got != tt.want {
			t.Errorf("quantile(%v, %v) = %d, want %d", tt.s, tt.q, got, tt.want)
		}
	}
}

// TestPeak: an hour's figure is the Quantile, over its jobs, of the arrivals within one lead before
// each, not the hour's count.
func TestPeak(t *testing.T) {
	f := New(opts(), nil)
	base := at(0, 9, 0)
	for _, s := range []int{0, 10, 30, 50, 130, 140, 300} {
		f.Arrive(base.Add(time.Duration(s) * time.Second))
	}
	if got := f.peaks[unixHour(base)]; got != 4 {
		t.Fatalf("figure = %d, want 4 (counts 1 2 3 4 1 2 1: the 50 s job had 4 within a minute; its 0.9 quantile)", got)
	}
}

// TestFreedSlotsCount: a job that ended within one lead before an arrival left an idle slot for it,
// so that arrival needs one idle slot fewer.
func TestFreedSlotsCount(t *testing.T) {
	f := New(opts(), nil)
	base := at(0, 9, 0)
	f.Freed(base)
	f.Freed(base.Add(5 * time.Second))
	for _, s := range []int{10, 20, 30} {
		f.Arrive(base.Add(time.Duration(s) * time.Second))
	}
	f.Freed(base.Add(time.Duration(40) * time.Second))
	f.Arrive(base.Add(85 * time.Second)) // 30 s and 85 s arrived, and 40 s ended, within a minute of it
	if got := f.peaks[unixHour(base)]; got != 1 {
		t.Fatalf("figure = %d, want 1 (counts 0 0 1 1: arrivals within a minute less the ends within it)", got)
	}
	f.Arrive(base.Add(86 * time.Second))
	if got := f.peaks[unixHour(base)]; got != 2 {
		t.Fatalf("figure = %d, want 2 after a third arrival within the minute", got)
	}
}

// TestIdle: which past hours the idle count comes from, and that without any it falls back.
func TestIdle(t *testing.T) {
	// peak puts n arrivals at once at 9:00 of the given day: that hour's figure is n.
	type peak struct{ day, n int }
	tests := []struct {
		name   string
		peaks  []peak
		now    time.Time
		slack  time.Duration
		want   int
		wantOK bool
	}{
		{name: "no history", now: at(1, 9, 30), wantOK: false},
		{name: "yesterday", peaks: []peak{{0, 5}}, now: at(1, 9, 30), want: 5, wantOK: true},
		{name: "median over earlier weekdays", peaks: []peak{{0, 1}, {1, 2}, {2, 3}, {3, 8}}, now: at(4, 9, 30), want: 2, wantOK: true},
		{name: "another hour has no past", peaks: []peak{{0, 5}}, now: at(1, 11, 30), wantOK: false},
		{name: "weekend without a weekend past takes weekdays", peaks: []peak{{3, 4}, {4, 6}}, now: at(5, 9, 30), want: 4, wantOK: true},
		{name: "weekend with a weekend past", peaks: []peak{{3, 4}, {4, 6}, {5, 1}}, now: at(6, 9, 30), want: 1, wantOK: true},
		{name: "monday after a weekend takes weekdays", peaks: []peak{{4, 6}, {5, 0}, {6, 0}}, now: at(7, 9, 30), want: 6, wantOK: true},
		{name: "two weeks of the same hour win over days", peaks: []peak{{0, 2}, {1, 9}, {7, 3}, {8, 9}, {13, 9}}, now: at(14, 9, 30), want: 2, wantOK: true},
		{name: "warm before the rush: the coming hour within lead counts", peaks: []peak{{0, 7}}, now: at(1, 8, 59), want: 7, wantOK: true},
		{name: "slack reaches the coming hour", peaks: []peak{{0, 7}}, now: at(1, 8, 58), slack: time.Minute, want: 7, wantOK: true},
		{name: "without slack it does not", peaks: []peak{{0, 7}}, now: at(1, 8, 58), wantOK: false},
		{name: "beyond the history", peaks: []peak{{0, 7}}, now: at(15, 9, 30), wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(opts(), nil)
			for _, p := range tt.peaks {
				f.Watch(at(p.day, 9, 0))
				for range p.n {
					f.Arrive(at(p.day, 9, 0))
				}
			}
			n, ok := f.Idle(tt.now, tt.slack)
			if n != tt.want || ok != tt.wantOK {
				t.Fatalf("Idle = %d, %v; want %d, %v", n, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestWatchedHourWithoutArrivals: a watched hour without jobs is a demand of 0, so a quiet night
// needs no idle instance.
func TestWatchedHourWithoutArrivals(t *testing.T) {
	f := New(opts(), nil)
	f.Watch(at(0, 3, 10))
	if n, ok := f.Idle(at(1, 3, 10), 0); n != 0 || !ok {
		t.Fatalf("Idle = %d, %v; want 0, true", n, ok)
	}
}

func TestWatchForgetsBeyondHistory(t *testing.T) {
	f := New(Options{History: 24 * time.Hour, Quantile: 0.9, Lead: time.Minute}, nil)
	f.Arrive(at(0, 9, 0))
	f.Watch(at(1, 9, 0))
	f.Watch(at(1, 10, 0))
	if _, ok := f.peaks[unixHour(at(0, 9, 0))]; ok {
		t.Fatalf("hours = %v: the hour 25 h back is kept beyond a 24 h history", f.peaks)
	}
}

func TestHistQuantile(t *testing.T) {
	if got := histQuantile(map[int]int{1: 5, 3: 4, 9: 1}, 0.9); got != 3 {
		t.Fatalf("0.9 quantile of five 1s, four 3s and a 9 = %d, want 3", got)
	}
	if got := histQuantile(map[int]int{1: 5, 3: 4, 9: 1}, 1); got != 9 {
		t.Fatalf("1.0 quantile = %d, want 9", got)
	}
}

func TestLead(t *testing.T) {
	for _, tt := range []struct {
		name  string
		lead  time.Duration
		boots []time.Duration
		want  time.Duration
	}{
		{name: "none observed", want: DefaultBootDelay},
		{name: "median", boots: []time.Duration{time.Minute, 3 * time.Minute, 40 * time.Second}, want: time.Minute},
		{name: "the last nine only", boots: []time.Duration{
			time.Hour, time.Hour, time.Hour, time.Hour, time.Hour,
			time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second,
		}, want: time.Second},
		{name: "set", lead: 2 * time.Minute, boots: []time.Duration{time.Second}, want: 2 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := opts()
			o.Lead = tt.lead
			f := New(o, nil)
			for _, b := range tt.boots {
				f.Booted(b)
			}
			if got := f.Lead(); got != tt.want {
				t.Fatalf("Lead = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestSnapshotRoundTrip: what a restarted taskscaler loads forecasts as before.
func TestSnapshotRoundTrip(t *testing.T) {
	f := New(opts(), nil)
	f.Booted(90 * time.Second)
	for d := range 3 {
		f.Watch(at(d, 2, 0))
		for range d + 2 {
			f.Arrive(at(d, 9, 0))
		}
	}
	snap := f.Snapshot()
	if len(snap.Hours) != 6 || snap.Hours[0].Hour >= snap.Hours[1].Hour {
		t.Fatalf("snapshot hours = %+v, want 6 hours oldest first", snap.Hours)
	}
	g := New(opts(), snap)
	if !reflect.DeepEqual(g.Snapshot(), snap) {
		t.Fatalf("reloaded snapshot = %+v, want %+v", g.Snapshot(), snap)
	}
	n1, ok1 := f.Idle(at(3, 9, 0), 0)
	n2, ok2 := g.Idle(at(3, 9, 0), 0)
	if n1 != 3 || !ok1 || n2 != n1 || ok2 != ok1 {
		t.Fatalf("Idle before and after reload = %d, %v and %d, %v; want 3 (median of 2, 3, 4), true both times", n1, ok1, n2, ok2)
	}
	if got := New(Options{History: time.Hour * 48, Quantile: 1}, &state.Forecast{BootDelays: []time.Duration{time.Minute}}).Lead(); got != time.Minute {
		t.Fatalf("Lead after reload = %s, want the saved boot delay 1m", got)
	}
}
