package capacity

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDesired(t *testing.T) {
	tests := []struct {
		name   string
		fleet  Fleet
		policy Policy
		demand Demand
		want   int
	}{
		{name: "zero idle, no demand: scale to zero", fleet: Fleet{CapacityPerInstance: 1}, want: 0},
		{name: "zero idle, one job", fleet: Fleet{CapacityPerInstance: 1}, demand: Demand{Acquired: 1}, want: 1},
		{name: "idle_count 5 capacity 1 → 5 instances", fleet: Fleet{CapacityPerInstance: 1},
			policy: Policy{IdleCount: 5}, want: 5},
		{name: "idle_count 5 capacity 4 → 2 instances", fleet: Fleet{CapacityPerInstance: 4},
			policy: Policy{IdleCount: 5}, want: 2},
		{name: "idle_count 2 capacity 4 with 3 jobs → 2 instances", fleet: Fleet{CapacityPerInstance: 4},
			policy: Policy{IdleCount: 2}, demand: Demand{Acquired: 3}, want: 2},
		{name: "scale_factor without limit", fleet: Fleet{CapacityPerInstance: 1},
			policy: Policy{IdleCount: 1, ScaleFactor: 0.5}, demand: Demand{Acquired: 10}, want: 15},
		{name: "scale_factor rounds up", fleet: Fleet{CapacityPerInstance: 1},
			policy: Policy{ScaleFactor: 0.5}, demand: Demand{Acquired: 3}, want: 5},
		{name: "scale_factor with limit", fleet: Fleet{CapacityPerInstance: 1},
			policy: Policy{IdleCount: 1, ScaleFactor: 2, ScaleFactorLimit: 4}, demand: Demand{Acquired: 10}, want: 14},
		{name: "idle_count above scale_factor_limit is the minimum", fleet: Fleet{CapacityPerInstance: 1},
			policy: Policy{IdleCount: 6, ScaleFactor: 2, ScaleFactorLimit: 4}, demand: Demand{Acquired: 10}, want: 16},
		{name: "max_instances clamps", fleet: Fleet{CapacityPerInstance: 2, MaxInstances: 4},
			policy: Policy{IdleCount: 2}, demand: Demand{Acquired: 5, Pending: 9}, want: 4},
		{name: "capacity>1 scales to zero (upstream 37643)", fleet: Fleet{CapacityPerInstance: 4}, want: 0},
		{name: "capacity>1 one job needs one instance", fleet: Fleet{CapacityPerInstance: 4}, demand: Demand{Acquired: 1}, want: 1},
		{name: "pending and unavailable are demand", fleet: Fleet{CapacityPerInstance: 2},
			demand: Demand{Acquired: 1, Pending: 4, Unavailable: 1}, want: 3},
		{name: "burst of 8 with capacity 2 → 4", fleet: Fleet{CapacityPerInstance: 2}, demand: Demand{Pending: 8}, want: 4},
		{name: "reservation throttling: reservations are no demand", fleet: Fleet{CapacityPerInstance: 1, ReservationThrottling: true},
			demand: Demand{Reserved: 10}, want: 0},
		{name: "without reservation throttling reservations are demand", fleet: Fleet{CapacityPerInstance: 1},
			demand: Demand{Reserved: 10}, want: 10},
		{name: "capacity 0 means 1", fleet: Fleet{}, demand: Demand{Acquired: 3}, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Desired(tt.fleet, tt.policy, tt.demand)
			if got != tt.want {
				t.Fatalf("Desired = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestToCreate(t *testing.T) {
	tests := []struct {
		name                 string
		fleet                Fleet
		desired, live, total int
		want                 int
	}{
		{name: "shortfall", fleet: Fleet{CapacityPerInstance: 2}, desired: 4, want: 4},
		{name: "booting instances count: no runaway", fleet: Fleet{}, desired: 4, live: 4, total: 4, want: 0},
		{name: "surplus never negative", desired: 1, live: 3, total: 3, want: 0},
		{name: "deleting instances count against max", fleet: Fleet{MaxInstances: 4}, desired: 4, live: 2, total: 3, want: 1},
		{name: "at max", fleet: Fleet{MaxInstances: 4}, desired: 4, live: 2, total: 4, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ToCreate(tt.fleet, tt.desired, tt.live, tt.total); got != tt.want {
				t.Fatalf("ToCreate = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPolicySelection(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no tzdata for Europe/Berlin: %v", err)
	}
	ps, err := NewPolicies([]Policy{
		{Periods: []string{"* * * * *"}, Location: time.Local, IdleCount: 0},
		{Periods: []string{"* 8-15 * * mon-fri"}, Location: berlin, IdleCount: 1, IdleTime: 30 * time.Minute, Preemptive: true},
		{Periods: []string{"0-29 12 * * *"}, Location: berlin, IdleCount: 7, Preemptive: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	// 2024-03-04 is a Monday.
	at := func(day, h, m, s int) time.Time { return time.Date(2024, 3, day, h, m, s, 0, berlin) }
	tests := []struct {
		name string
		now  time.Time
		want int // index of the active policy
	}{
		{name: "before the weekday period", now: at(4, 7, 59, 59), want: 0},
		{name: "first second of the period", now: at(4, 8, 0, 0), want: 1},
		{name: "last minute of the period", now: at(4, 15, 59, 30), want: 1},
		{name: "just after the period", now: at(4, 16, 0, 0), want: 0},
		{name: "saturday", now: at(9, 10, 0, 0), want: 0},
		{name: "last match wins over an earlier match", now: at(4, 12, 15, 0), want: 2},
		{name: "later policy outside its minutes", now: at(4, 12, 30, 0), want: 1},
		{name: "same instant seen from UTC", now: at(4, 8, 0, 0).UTC(), want: 1},
		{name: "UTC 07:30 is Berlin 08:30", now: time.Date(2024, 3, 4, 7, 30, 0, 0, time.UTC), want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ActiveIndex(ps, tt.now); got != tt.want {
				t.Fatalf("ActiveIndex(%s) = %d, want %d", tt.now, got, tt.want)
			}
		})
	}
	if got := Active(nil, time.Now()); got.IdleCount != 0 || got.Preemptive {
		t.Fatalf("no policies: got %+v, want the zero policy", got)
	}
}

func TestNewPolicyErrors(t *testing.T) {
	always := []string{"* * * * *"}
	_, err := NewPolicies([]Policy{
		{Periods: []string{"* * * *"}, Location: time.UTC},
		{Periods: always},
		{Periods: always, Location: time.UTC, IdleCount: -1},
		{Location: time.UTC},
	})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"policy 1", "5-field cron", "policy 2", "time zone", "policy 3", "idle_count", "policy 4", "no period"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSelectRemovals(t *testing.T) {
	now := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	one := Fleet{CapacityPerInstance: 1}
	two := Fleet{CapacityPerInstance: 2}
	tests := []struct {
		name      string
		fleet     Fleet
		idleCount int
		demand    Demand
		requested int
		instances []InstanceView
		want      []string
	}{
		{name: "idle over idle_time and surplus", fleet: one, instances: []InstanceView{
			{ID: "a", Ready: true, IdleSince: ago(11 * time.Minute)},
		}, want: []string{"a"}},
		{name: "idle under idle_time stays", fleet: one, instances: []InstanceView{
			{ID: "a", Ready: true, IdleSince: ago(9 * time.Minute)},
		}},
		{name: "needed for the idle target stays", fleet: one, idleCount: 1, instances: []InstanceView{
			{ID: "a", Ready: true, IdleSince: ago(time.Hour)},
		}},
		{name: "longest idle goes first", fleet: one, idleCount: 1, instances: []InstanceView{
			{ID: "a", Ready: true, IdleSince: ago(20 * time.Minute)},
			{ID: "b", Ready: true, IdleSince: ago(time.Hour)},
			{ID: "c", Ready: true, IdleSince: ago(30 * time.Minute)},
		}, want: []string{"b", "c"}},
		{name: "busy and booting are never chosen", fleet: one, demand: Demand{Acquired: 1}, instances: []InstanceView{
			{ID: "busy", Ready: true, Acquired: 1, IdleSince: ago(time.Hour)},
			{ID: "boot", IdleSince: ago(time.Hour)},
		}},
		{name: "drained retired goes at once, retired with jobs stays", fleet: one,
			demand: Demand{Acquired: 1, Unavailable: 1}, instances: []InstanceView{
				{ID: "old", Ready: true, Retired: true, Unavailable: 1, IdleSince: now},
				{ID: "draining", Ready: true, Retired: true, Acquired: 1},
			}, want: []string{"old"}},
		{name: "requested instances count toward the surplus", fleet: one, idleCount: 1, demand: Demand{Acquired: 1},
			requested: 1, instances: []InstanceView{
				{ID: "a", Ready: true, IdleSince: ago(time.Hour)},
				{ID: "b", Ready: true, Acquired: 1},
			}, want: []string{"a"}},
		{name: "capacity>1 scales to zero after the last job (37643)", fleet: two, instances: []InstanceView{
			{ID: "a", Ready: true, IdleSince: ago(10 * time.Minute)},
			{ID: "b", Ready: true, IdleSince: ago(10 * time.Minute)},
		}, want: []string{"a", "b"}},
		// a has one use left of max_use_count and b two free slots: either alone is one instance, but
		// only b alone holds the two idle slots, so a goes although b has been idle longer.
		{name: "a partly used-up instance goes before a fresh one", fleet: two, idleCount: 2,
			demand: Demand{Unavailable: 1}, instances: []InstanceView{
				{ID: "a", Ready: true, Unavailable: 1, IdleSince: ago(20 * time.Minute)},
				{ID: "b", Ready: true, IdleSince: ago(time.Hour)},
			}, want: []string{"a"}},
		{name: "a partly used-up instance needed for the idle target stays", fleet: two, idleCount: 3,
			demand: Demand{Unavailable: 1}, instances: []InstanceView{
				{ID: "a", Ready: true, Unavailable: 1, IdleSince: ago(20 * time.Minute)},
				{ID: "b", Ready: true, IdleSince: ago(time.Hour)},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Policy{IdleCount: tt.idleCount, IdleTime: 10 * time.Minute}
			got := SelectRemovals(now, tt.fleet, p, tt.demand, tt.requested, tt.instances)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("SelectRemovals = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestThrottle(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name                string
		limit, burst        int
		ask                 int
		wantFirst, wantNext int // tokens got at now, then again one second later
	}{
		{name: "unlimited", limit: -1, ask: 50, wantFirst: 50, wantNext: 50},
		{name: "limit 100 burst 4", limit: 100, burst: 4, ask: 10, wantFirst: 4, wantNext: 4},
		{name: "limit 1 burst 3", limit: 1, burst: 3, ask: 10, wantFirst: 3, wantNext: 1},
		{name: "limit 2 burst 2", limit: 2, burst: 2, ask: 10, wantFirst: 2, wantNext: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewThrottle(tt.limit, tt.burst)
			if got := Throttled(l, now, tt.ask); got != tt.wantFirst {
				t.Fatalf("first Throttled = %d, want %d", got, tt.wantFirst)
			}
			if got := Throttled(l, now.Add(time.Second), tt.ask); got != tt.wantNext {
				t.Fatalf("Throttled a second later = %d, want %d", got, tt.wantNext)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	base, ceiling := 5*time.Second, time.Minute
	for _, tt := range []struct {
		failures int
		want     time.Duration
	}{{0, 0}, {1, 5 * time.Second}, {2, 10 * time.Second}, {3, 20 * time.Second}, {4, 40 * time.Second}, {5, time.Minute}, {50, time.Minute}} {
		if got := Backoff(tt.failures, base, ceiling); got != tt.want {
			t.Errorf("Backoff(%d) = %s, want %s", tt.failures, got, tt.want)
		}
	}
}
