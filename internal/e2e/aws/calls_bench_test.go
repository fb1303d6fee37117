package e2eaws_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
)

// The 200-job run: waves of jobs separated by idle periods, so that the group scales out and back in
// once per wave, on a group of at most four instances with two slots each.
const (
	benchJobs     = 200
	benchWaves    = 4
	benchCapacity = 2
	benchMaxSize  = 4
	// benchJobHold is how long a job keeps its slot.
	benchJobHold = 50 * time.Millisecond
)

// callFigures is what one 200-job run cost in AWS API calls.
type callFigures struct {
	calls                map[string]int
	increases, decreases int
	updates              int
	keyedInstances       int
	took                 time.Duration
}

// BenchmarkAWSCallsPer200Jobs prints the AWS API calls a 200-job run makes, by action, per job and per
// scaling event. Each op is one run of the real taskscaler and aws plugin against awssim: a "job"
// acquires a slot, takes the instance's pooled SSH connection (one EC2 Instance Connect key per
// connection), makes one round trip on it, holds the slot briefly and releases it; no Docker is
// involved. `make bench` prints it.
func BenchmarkAWSCallsPer200Jobs(b *testing.B) {
	total := callFigures{calls: map[string]int{}}
	runs := 0
	for b.Loop() {
		f := run200Jobs(b)
		runs++
		for k, v := range f.calls {
			total.calls[k] += v
		}
		total.increases += f.increases
		total.decreases += f.decreases
		total.updates += f.updates
		total.keyedInstances += f.keyedInstances
		total.took += f.took
	}
	jobs := float64(runs * benchJobs)
	events := float64(total.increases + total.decreases)
	all := 0
	for _, n := range total.calls {
		all += n
	}
	b.Logf("%d runs of %d jobs in %d waves (capacity_per_instance %d, MaxSize %d, update_interval 1s), %.1fs per run; per run %.1f scaling events (%.1f Increase, %.1f Decrease), %.1f Update polls, %.1f instances got a key",
		runs, benchJobs, benchWaves, benchCapacity, benchMaxSize, total.took.Seconds()/float64(runs), events/float64(runs),
		float64(total.increases)/float64(runs), float64(total.decreases)/float64(runs), float64(total.updates)/float64(runs),
		float64(total.keyedInstances)/float64(runs))
	b.Logf("%-38s %9s %9s %14s", "AWS action", "per run", "per job", "per scaling ev")
	for _, action := range slices.Sorted(maps.Keys(total.calls)) {
		n := float64(total.calls[action])
		b.Logf("%-38s %9.1f %9.3f %14.2f", action, n/float64(runs), n/jobs, n/events)
	}
	// DescribeAutoScalingGroups follows the clock (one per Update poll, every update_interval or faster
	// while instances are expected), not jobs; the other actions follow scaling events. Go prints at
	// most ten lines of a benchmark's log, hence the long last line.
	other := all - total.calls["DescribeAutoScalingGroups"]
	b.Logf("%-38s %9.1f %9.3f %14.2f  (DescribeAutoScalingGroups per Update poll %.2f; all others %.3f per job, %.2f per scaling event)",
		"all", float64(all)/float64(runs), float64(all)/jobs, float64(all)/events,
		float64(total.calls["DescribeAutoScalingGroups"])/float64(max(total.updates, 1)), float64(other)/jobs, float64(other)/events)
	b.ReportMetric(float64(all)/jobs, "aws-calls/job")
	b.ReportMetric(float64(all)/events, "aws-calls/scaling-event")
	b.ReportMetric(float64(total.calls["SendSSHPublicKey"])/float64(max(total.keyedInstances, 1)), "key-pushes/instance")
	b.ReportMetric(0, "ns/op")
}

// run200Jobs runs benchJobs jobs through a fresh scaler on a fresh awssim group and returns the AWS
// calls it took.
func run200Jobs(b *testing.B) callFigures {
	spec := groupSpec(fmt.Sprintf("fleetrunner-bench-%d", time.Now().UnixNano()), benchMaxSize)
	w := newAWSWorld(b, spec, awssim.Options{})
	start := time.Now()
	s := w.startScaler(b, scalerFleet{capacity: benchCapacity, maxInstances: benchMaxSize, idleCount: 1, idleTime: time.Second}, nil)
	ctx := b.Context()

	waitIdle := func(what string) {
		deadline := time.Now().Add(time.Minute)
		for !s.settled(1) {
			if time.Now().After(deadline) {
				b.Fatalf("%s: the group did not settle at its idle instance: %+v", what, s.ts.Stats())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitIdle("start")
	for wave := range benchWaves {
		var g errgroup.Group
		for i := range benchJobs / benchWaves {
			key := fmt.Sprintf("wave%d-job%d", wave, i)
			g.Go(func() error {
				_, err := s.job(ctx, key, func() { time.Sleep(benchJobHold) })
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		waitIdle(fmt.Sprintf("after wave %d", wave+1))
	}
	s.shutdown(b)

	f := callFigures{calls: w.sim.Calls(), increases: int(s.plugin.increases.Load()), decreases: int(s.plugin.decreases.Load()),
		updates: int(s.plugin.updates.Load()), took: time.Since(start)}
	keyed := map[string]bool{}
	for _, p := range w.sim.KeyPushes() {
		if p.Err == "" {
			keyed[p.InstanceID] = true
		}
	}
	f.keyedInstances = len(keyed)
	return f
}
