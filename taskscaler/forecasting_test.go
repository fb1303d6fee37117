package taskscaler

import (
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/forecast"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// TestForecastIdleCount: with history the forecast replaces the policy's idle count and caps its
// idle_time at the lead; without, the policy is in force as configured; arrivals reach the state file.
func TestForecastIdleCount(t *testing.T) {
	hour := func(t time.Time) int64 { return t.Unix() / 3600 }
	yesterday := t0.Add(-24 * time.Hour)
	for _, tt := range []struct {
		name         string
		saved        *state.Forecast
		wantIdle     int
		wantIdleTime time.Duration
	}{
		{name: "no history: the policy", saved: nil, wantIdle: 1, wantIdleTime: time.Hour},
		{name: "yesterday at this hour", saved: &state.Forecast{
			Hours:      []state.ForecastHour{{Hour: hour(yesterday), Peak: 3}, {Hour: hour(yesterday) + 1, Peak: 0}},
			BootDelays: []time.Duration{time.Minute},
		}, wantIdle: 3}, // idle_time: the lead, from the saved and the observed boot delays
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := clock.NewFake(t0)
			g := newFakeGroup(c)
			store := state.NewFile(filepath.Join(t.TempDir(), "state.json"))
			if err := store.Save(&state.Snapshot{Forecast: tt.saved}); err != nil {
				t.Fatal(err)
			}
			ts := start(t, g, func(o *Options) {
				o.State = store
				o.Policies = []Policy{allDay(Policy{IdleCount: 1, IdleTime: time.Hour})}
				o.Forecast = &forecast.Options{History: 48 * time.Hour, Quantile: 0.9, Location: time.UTC}
			})
			ts.mu.Lock()
			p := ts.activeLocked(c.Now())
			if tt.wantIdleTime == 0 {
				tt.wantIdleTime = ts.forecast.Lead()
			}
			ts.mu.Unlock()
			if tt.saved != nil && tt.wantIdleTime >= time.Hour {
				t.Fatalf("lead %s: the test needs one below the policy's idle_time", tt.wantIdleTime)
			}
			if p.IdleCount != tt.wantIdle || p.IdleTime != tt.wantIdleTime {
				t.Fatalf("active policy idle_count %d, idle_time %s; want %d, %s", p.IdleCount, p.IdleTime, tt.wantIdle, tt.wantIdleTime)
			}
			eventually(t, c, "idle slots at the target", func() bool { return ts.Stats().Slots.Idle == tt.wantIdle })

			if _, err := ts.Acquire(t.Context(), "job"); err != nil {
				t.Fatal(err)
			}
			if err := ts.save(); err != nil {
				t.Fatal(err)
			}
			snap, err := store.Load()
			if err != nil {
				t.Fatal(err)
			}
			if snap.Forecast == nil {
				t.Fatal("the state file has no forecast history")
			}
			got := map[int64]int{}
			for _, h := range snap.Forecast.Hours {
				got[h.Hour] = h.Peak
			}
			if got[hour(c.Now())] != 1 {
				t.Errorf("saved hours %+v: want this hour with the one arrival", snap.Forecast.Hours)
			}
			if tt.saved != nil && got[hour(yesterday)] != 3 {
				t.Errorf("saved hours %+v: yesterday's hour was lost", snap.Forecast.Hours)
			}
		})
	}
}
