package sim

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the period test reads Europe/Berlin whatever the machine has installed

	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// start is a Monday, midnight UTC.
var start = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)

// options are complete taskscaler options: upstream's values for an empty [runners.autoscaler] and
// fleetrunner's creation pacing. set, when not nil, changes them.
func options(set func(o *taskscaler.Options)) taskscaler.Options {
	o := taskscaler.Options{
		CapacityPerInstance:         1,
		UpdateInterval:              time.Minute,
		UpdateIntervalWhenExpecting: 2 * time.Second,
		DeletionRetryInterval:       time.Minute,
		FailureThreshold:            3,
		InstanceAcquireTimeout:      15 * time.Minute,
		CreationTimeout:             15 * time.Minute,
		CreateBackoff:               5 * time.Second,
		MaxCreateBackoff:            5 * time.Minute,
		ScaleThrottleLimit:          100,
		ScaleThrottleBurst:          100,
		ReservationThrottling:       true,
		ShutdownDeletionInterval:    10 * time.Second,
		ShutdownDeletionRetries:     3,
	}
	if set != nil {
		set(&o)
	}
	return o
}

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// allDay makes p active every minute, in the local zone.
func allDay(p taskscaler.Policy) taskscaler.Policy {
	p.Periods, p.Location = []string{"* * * * *"}, time.Local
	return p
}

func simulate(t *testing.T, jobs []Job, cfg Config) *Result {
	t.Helper()
	if cfg.Start.IsZero() {
		cfg.Start = start
	}
	res, err := Run(t.Context(), jobs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Jobs != len(jobs) {
		t.Fatalf("Jobs = %d, want %d", res.Jobs, len(jobs))
	}
	return res
}

// synthetic is a reproducible trace: pipelines of 1 to width jobs arriving together, durations of 5 s
// to 10 min.
func synthetic(seed uint64, pipelines, width int, meanGap time.Duration) []Job {
	rng := rand.New(rand.NewPCG(seed, 0))
	var jobs []Job
	var at time.Duration
	for p := range pipelines {
		at += time.Duration(rng.ExpFloat64() * float64(meanGap)).Round(100 * time.Millisecond)
		for range 1 + rng.IntN(width) {
			d := time.Duration(5+rng.IntN(595)) * time.Second
			jobs = append(jobs, Job{Arrival: at, Duration: d, Pipeline: strconv.Itoa(p + 1)})
		}
	}
	return jobs
}

// TestHandComputable checks four jobs far apart, each on a fresh instance (capacity 1, idle_count 0,
// idle_time 0), exactly. The wait is the taskscaler's 100 ms gather after the Acquire woke it, then the
// boot delay rounded up to update_interval_when_expecting (2 s), the pace at which it lists a booting
// group. The instance, created at arrival + 100 ms and ready at arrival + 100 ms + wait', runs its job
// for 100 s and is removed by the first pass after that: passes run at ready, ready + 2 s, then every
// update_interval (60 s), so at ready + 122 s.
func TestHandComputable(t *testing.T) {
	var jobs []Job
	for i := range 4 {
		jobs = append(jobs, Job{Arrival: time.Duration(i) * 1000 * time.Second, Duration: 100 * time.Second})
	}
	for _, tc := range []struct {
		boot     time.Duration
		wait     time.Duration
		lifetime time.Duration
	}{
		{boot: 10 * time.Second, wait: 10100 * time.Millisecond, lifetime: 10*time.Second + 122*time.Second},
		{boot: 45 * time.Second, wait: 46100 * time.Millisecond, lifetime: 46*time.Second + 122*time.Second},
	} {
		t.Run(tc.boot.String(), func(t *testing.T) {
			res := simulate(t, jobs, Config{
				BootDelay: tc.boot,
				Options:   options(func(o *taskscaler.Options) { o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{})} }),
			})
			for name, got := range map[string]time.Duration{"p50": res.WaitP50, "p95": res.WaitP95, "p99": res.WaitP99, "max": res.WaitMax, "mean": res.WaitMean} {
				if got != tc.wait {
					t.Errorf("%s wait = %s, want %s", name, got, tc.wait)
				}
			}
			if want := 4 * tc.lifetime.Minutes(); res.InstanceMinutes != want {
				t.Errorf("InstanceMinutes = %g, want %g", res.InstanceMinutes, want)
			}
			if res.Instances != 4 || res.PeakInstances != 1 || res.Failed != 0 || res.JobsPerInstance() != 1 {
				t.Errorf("instances %d, peak %d, failed %d, jobs per instance %g; want 4, 1, 0, 1", res.Instances, res.PeakInstances, res.Failed, res.JobsPerInstance())
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	jobs := synthetic(7, 120, 8, 90*time.Second)
	for _, tc := range []struct {
		name string
		opts taskscaler.Options
	}{
		// max_instances is low enough that Reserve fails and jobs wait in GitLab; max_use_count retires
		// instances; idle_count makes it preemptive.
		{"preemptive", options(func(o *taskscaler.Options) {
			o.CapacityPerInstance, o.MaxInstances, o.MaxUseCount, o.ScaleThrottleBurst = 2, 6, 3, 6
			o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{IdleCount: 2, IdleTime: 5 * time.Minute, Preemptive: true})}
		})},
		{"on demand", options(func(o *taskscaler.Options) {
			o.CapacityPerInstance, o.MaxInstances, o.ScaleThrottleBurst = 3, 5, 5
			o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{IdleTime: 2 * time.Minute, ScaleFactor: 0.5})}
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := simulate(t, jobs, Config{Options: tc.opts, DeleteDelay: 20 * time.Second})
			for i := range 2 {
				again := simulate(t, jobs, Config{Options: tc.opts, DeleteDelay: 20 * time.Second})
				if !reflect.DeepEqual(first, again) {
					t.Fatalf("run %d differs from the first:\n%+v\n%+v", i+2, summary(first), summary(again))
				}
			}
			if first.PeakInstances > tc.opts.MaxInstances {
				t.Errorf("peak %d instances, above max_instances %d", first.PeakInstances, tc.opts.MaxInstances)
			}
			t.Logf("%+v", summary(first))
		})
	}
}

func summary(r *Result) Result {
	s := *r
	s.Timeline = nil
	return s
}

// TestIdleCountTradesCostForWait: idle slots make jobs start at once and cost instance time. Pipelines
// are at most as wide as the idle slots: in preemptive mode (the default with idle_count > 0) a wider
// burst waits in GitLab until the next pass replenishes the idle slots, which can wait longer than
// booting on demand.
func TestIdleCountTradesCostForWait(t *testing.T) {
	jobs := synthetic(3, 60, 2, 4*time.Minute)
	cfg := func(idle int) Config {
		return Config{Options: options(func(o *taskscaler.Options) {
			o.CapacityPerInstance = 2
			o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{IdleCount: idle, IdleTime: 5 * time.Minute, Preemptive: idle > 0})}
		})}
	}
	none, some := simulate(t, jobs, cfg(0)), simulate(t, jobs, cfg(4))
	t.Logf("idle_count 0: %+v", summary(none))
	t.Logf("idle_count 4: %+v", summary(some))
	if some.WaitP95 >= none.WaitP95 {
		t.Errorf("p95 wait with idle_count 4 = %s, want below %s (idle_count 0)", some.WaitP95, none.WaitP95)
	}
	if some.InstanceMinutes <= none.InstanceMinutes {
		t.Errorf("cost with idle_count 4 = %.1f instance-minutes, want above %.1f (idle_count 0)", some.InstanceMinutes, none.InstanceMinutes)
	}
}

// TestPolicyPeriodSwitch: idle_count 2 from 08:00 to 17:59 Berlin time (07:00–16:59 UTC in November),
// none otherwise. Idle instances appear at the first pass after 07:00 UTC and go at the first pass
// after 17:00 UTC; a job at 10:00 UTC starts at once, jobs at night wait for a boot.
func TestPolicyPeriodSwitch(t *testing.T) {
	jobs := []Job{
		{Arrival: 3 * time.Hour, Duration: time.Minute},
		{Arrival: 10 * time.Hour, Duration: time.Minute},
		{Arrival: 20 * time.Hour, Duration: time.Minute},
	}
	res := simulate(t, jobs, Config{
		BootDelay: 30 * time.Second,
		Options: options(func(o *taskscaler.Options) {
			o.Policies = []taskscaler.Policy{
				allDay(taskscaler.Policy{IdleTime: 0}),
				{Periods: []string{"* 8-17 * * *"}, Location: berlin(t), IdleCount: 2, IdleTime: 10 * time.Minute, Preemptive: true},
			}
		}),
	})
	// Nights: 100 ms gather + 30 s boot polled every 2 s; the day job finds an idle slot.
	if res.WaitMax != 30100*time.Millisecond || res.WaitP50 != 30100*time.Millisecond {
		t.Errorf("waits p50 %s, max %s; want 30.1s for both night jobs", res.WaitP50, res.WaitMax)
	}
	var up, down time.Duration
	for _, s := range res.Timeline {
		if s.At > 4*time.Hour && up == 0 && s.Instances == 2 {
			up = s.At
		}
		if up != 0 && down == 0 && s.Instances == 0 {
			down = s.At
		}
	}
	within := func(got, from time.Duration) bool { return got >= from && got <= from+time.Minute+time.Second }
	if !within(up, 7*time.Hour) {
		t.Errorf("two idle instances at %s, want within a minute after 7h (08:00 Berlin)", up)
	}
	if !within(down, 17*time.Hour) {
		t.Errorf("idle instances gone at %s, want within a minute after 17h (18:00 Berlin)", down)
	}
	// idle_count counts idle slots beyond those in use: while the day job runs a third instance is
	// made, and when it ends the instance idle the longest goes.
	if res.Instances != 5 {
		t.Errorf("%d instances created, want 5 (one per night job, two idle for the day, one more during the day job)", res.Instances)
	}
}

func TestWriteSVG(t *testing.T) {
	jobs := synthetic(5, 30, 8, 2*time.Minute)
	a := simulate(t, jobs, Config{Options: options(func(o *taskscaler.Options) { o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{})} })})
	b := simulate(t, jobs, Config{Options: options(func(o *taskscaler.Options) {
		o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{IdleCount: 3, IdleTime: time.Hour, Preemptive: true})}
	})})
	var buf bytes.Buffer
	if err := WriteSVG(&buf, "synthetic", Series{"a", a}, Series{"b", b}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "instances", "jobs waiting", "hours since the start of the trace", "synthetic"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if err := WriteSVG(&buf, "none"); err == nil {
		t.Error("WriteSVG with no series succeeded")
	}
}

func TestRunRejectsUnorderedJobs(t *testing.T) {
	_, err := Run(t.Context(), []Job{{Arrival: time.Minute}, {Arrival: 0}}, Config{})
	if err == nil || !strings.Contains(err.Error(), "ordered by arrival") {
		t.Fatalf("Run = %v, want an error about the order", err)
	}
}

// TestAcquireTimeoutFailsJobs: a job that waits longer than instance_acquire_timeout for a slot fails
// and its wait counts; instances that never become ready are replaced, whichever stage they are in.
func TestAcquireTimeoutFailsJobs(t *testing.T) {
	jobs := []Job{{Arrival: 0, Duration: time.Minute}, {Arrival: time.Minute, Duration: time.Minute}}
	for _, tc := range []struct {
		name string
		boot time.Duration
		opts taskscaler.Options
		wait time.Duration
	}{
		{"booting longer than the timeout", 20 * time.Minute, options(nil), 15 * time.Minute},
		// The taskscaler dates an instance from the pass that first lists it (2.1 s): at 10.1 s it is
		// found running and removed as stuck in the same pass, with its ready-up hook pending.
		{"stuck while readying", 10 * time.Second, options(func(o *taskscaler.Options) {
			o.CreationTimeout, o.InstanceAcquireTimeout = 7*time.Second, 90*time.Second
		}), 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{})}
			res := simulate(t, jobs, Config{BootDelay: tc.boot, Options: tc.opts})
			if res.Failed != 2 || res.WaitP50 != tc.wait || res.WaitMax != tc.wait {
				t.Errorf("failed %d, waits p50 %s max %s; want 2 failed after %s", res.Failed, res.WaitP50, res.WaitMax, tc.wait)
			}
		})
	}
}

// TestWarmPool: with idle_count 0 a warm pool shortens the waits to its warm start instead of a boot;
// it costs its stopped time at the storage price, less than idle_count instances kept running. Prices
// are m5.large on demand and a stopped instance's 30 GiB gp3 volume, per hour. The jobs come far
// enough apart that each one's instance is gone (idle_time) before the next, and the first after the
// pool and the idle instances have booted.
func TestWarmPool(t *testing.T) {
	const perHour, warmPerHour = 0.096, 0.0033
	var jobs []Job
	for i := range 6 {
		jobs = append(jobs, Job{Arrival: time.Duration(i+1) * 15 * time.Minute, Duration: 3 * time.Minute})
	}
	run := func(idle, pool int) *Result {
		return simulate(t, jobs, Config{
			BootDelay: 2 * time.Minute, WarmPool: pool, WarmStartDelay: 20 * time.Second,
			Options: options(func(o *taskscaler.Options) {
				o.Policies = []taskscaler.Policy{allDay(taskscaler.Policy{IdleCount: idle, IdleTime: time.Minute, Preemptive: idle > 0})}
			}),
		})
	}
	cold, warm, idle := run(0, 0), run(0, 2), run(2, 0)
	for name, r := range map[string]*Result{"idle_count 0": cold, "idle_count 0, warm pool 2": warm, "idle_count 2": idle} {
		t.Logf("%s: p95 wait %s, %.1f running + %.1f warm instance-minutes, %d warm starts, cost %.4f",
			name, r.WaitP95, r.InstanceMinutes, r.WarmInstanceMinutes, r.WarmStarts, r.Cost(perHour, warmPerHour))
	}
	if warm.WarmStarts != len(jobs) || cold.WarmStarts != 0 || cold.WarmInstanceMinutes != 0 || idle.WarmInstanceMinutes != 0 {
		t.Errorf("warm starts %d (want %d, one per job), without a pool %d and %.1f warm minutes (want none)",
			warm.WarmStarts, len(jobs), cold.WarmStarts, cold.WarmInstanceMinutes+idle.WarmInstanceMinutes)
	}
	if warm.WarmInstanceMinutes <= 0 {
		t.Errorf("warm pool of 2 spent %.1f minutes stopped; want some", warm.WarmInstanceMinutes)
	}
	if warm.WaitP95 >= cold.WaitP95 {
		t.Errorf("p95 wait with a warm pool = %s, want below %s without one", warm.WaitP95, cold.WaitP95)
	}
	if idle.WaitP95 >= warm.WaitP95 {
		t.Errorf("p95 wait with idle_count 2 = %s, want below %s with a warm pool (running instances start jobs at once)", idle.WaitP95, warm.WaitP95)
	}
	if w, i := warm.Cost(perHour, warmPerHour), idle.Cost(perHour, warmPerHour); w >= i {
		t.Errorf("cost with a warm pool = %.4f, want below %.4f with idle_count 2", w, i)
	}
}
