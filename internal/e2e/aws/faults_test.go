package e2eaws_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig/awsrig"
)

// The taskscaler and the connector on a cloud having a bad day: instances that boot as EC2's do and
// show up late in eventually consistent listings, launches EC2 refuses for lack of capacity, instances
// the group replaces by itself, and EC2 Instance Connect keys that expire.

// TestScalerReachesCapacityOnABadDay: with EC2 refusing launches (every one at first, then half) and
// listings lagging up to three seconds (a new instance drops in and out of them for a while), the fleet still grows to the capacity it asked for: all slots of MaxSize
// instances are held at once. No just-launched instance is taken for lost, each is counted once, and
// the group ends empty with nothing left behind.
func TestScalerReachesCapacityOnABadDay(t *testing.T) {
	t.Parallel()
	const capacity, maxSize = 2, 4
	w := newAWSWorld(t, groupSpec("fleetrunner-scaler-capacity", maxSize), awssim.Options{ListingDelay: 3 * time.Second, LaunchRetryDelay: 300 * time.Millisecond})
	w.Sim.SetFaults(awssim.Faults{InsufficientCapacityRate: 1})
	s := w.StartScaler(t, awsrig.Fleet{Capacity: capacity, MaxInstances: maxSize, IdleTime: time.Second}, nil)
	start := time.Now()

	// Every job holds its slot until all have one: only a full fleet lets them through.
	const jobs = capacity * maxSize
	var held sync.WaitGroup
	held.Add(jobs)
	all := make(chan struct{})
	go func() { held.Wait(); close(all) }()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var g errgroup.Group
	for i := range jobs {
		g.Go(func() error {
			_, err := s.Job(ctx, fmt.Sprintf("job-%d", i), func() {
				held.Done()
				select {
				case <-all:
				case <-ctx.Done():
				}
			})
			return err
		})
	}
	testrig.WaitFor(t, time.Minute, "a launch to fail for lack of capacity", func() bool { return w.failedLaunches() > 0 })
	w.Sim.SetFaults(awssim.Faults{InsufficientCapacityRate: 0.5})
	if err := g.Wait(); err != nil {
		t.Fatalf("%v; taskscaler %+v", err, s.TS.Stats())
	}
	t.Logf("all %d slots held %s after the first job asked; %d launches failed for lack of capacity, %d succeeded",
		jobs, time.Since(start).Round(time.Millisecond), w.failedLaunches(), w.Launched())
	testrig.WaitFor(t, time.Minute, "the fleet to scale in to nothing", func() bool { return s.Settled(0) })

	c := s.TS.Stats().Counters
	t.Logf("taskscaler counters %+v; AWS calls %v", c, w.Sim.Calls())
	if c.UnexpectedRemovals != 0 || c.ReadyFailures != 0 {
		t.Errorf("instances lost or failed: taskscaler counters %+v", c)
	}
	if int(c.InstancesCreated) != w.Launched() {
		t.Errorf("the taskscaler counted %d new instances; the group launched %d", c.InstancesCreated, w.Launched())
	}
}

// TestScalerSeesGroupReplacements: instances the group replaces by itself (a failed health check, an
// AZ rebalance in a group that did not suspend it) are seen gone, their replacements are seen and taken
// into the fleet, and the fleet settles at its idle count with every instance in the group known to
// the taskscaler: none leaked.
func TestScalerSeesGroupReplacements(t *testing.T) {
	t.Parallel()
	spec := groupSpec("fleetrunner-scaler-replace", 4)
	spec.SuspendAZRebalance, spec.AZs = false, []string{"us-east-1a", "us-east-1b"}
	w := newAWSWorld(t, spec, awssim.Options{})
	s := w.StartScaler(t, awsrig.Fleet{Capacity: 1, MaxInstances: 4, IdleCount: 2, IdleTime: 2 * time.Second}, nil)
	testrig.WaitFor(t, time.Minute, "two ready instances", func() bool { return s.Settled(2) })
	old := s.Known()
	if err := w.Sim.ReplaceInstance(old[0], awssim.ReplaceUnhealthy); err != nil {
		t.Fatal(err)
	}
	if err := w.Sim.ReplaceInstance(old[1], awssim.ReplaceAZRebalance); err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, time.Minute, "the fleet to settle on replacements", func() bool {
		return s.Settled(2) && !slices.Contains(s.Known(), old[0]) && !slices.Contains(s.Known(), old[1])
	})
	for i := range 2 {
		if _, err := s.Job(t.Context(), fmt.Sprintf("after-%d", i), func() {}); err != nil {
			t.Errorf("job after the replacements: %v", err)
		}
	}
	c := s.TS.Stats().Counters
	t.Logf("replaced %v; now %v; taskscaler counters %+v; the group launched %d", old, s.Known(), c, w.Launched())
	if c.UnexpectedRemovals != 2 {
		t.Errorf("the taskscaler saw %d instances go without asking; want the 2 the group replaced", c.UnexpectedRemovals)
	}
	if int(c.InstancesCreated) != w.Launched() {
		t.Errorf("the taskscaler counted %d new instances; the group launched %d", c.InstancesCreated, w.Launched())
	}
}

// TestScalerReconnectsWithFreshKey: an EC2 Instance Connect key is accepted for a limited time (1 s
// here, 60 s on AWS). The pooled connection opened with it outlives it; once that connection is lost,
// the next job's dial gets a fresh key through the taskscaler and the plugin, and logs in.
func TestScalerReconnectsWithFreshKey(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t, groupSpec("fleetrunner-scaler-keys", 1), awssim.Options{KeyTTL: time.Second, TerminateDelay: time.Second})
	logins := w.watchLogins(t)
	s := w.StartScaler(t, awsrig.Fleet{Capacity: 1, MaxInstances: 1, IdleCount: 1, IdleTime: time.Minute}, nil)
	testrig.WaitFor(t, time.Minute, "a ready instance", func() bool { return s.Settled(1) })
	id := s.Known()[0]
	if _, err := s.Job(t.Context(), "first", func() {}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the key's lifetime
	if _, err := s.Job(t.Context(), "on-the-old-connection", func() {}); err != nil {
		t.Fatalf("the pooled connection did not outlive its key: %v", err)
	}
	s.Pool.Evict(id) // the connection is lost
	if _, err := s.Job(t.Context(), "reconnected", func() {}); err != nil {
		t.Fatalf("reconnecting after the key expired: %v", err)
	}
	var accepted int
	for _, p := range w.Sim.KeyPushes() {
		if p.InstanceID == id && p.Err == "" {
			accepted++
		}
	}
	t.Logf("keys pushed to %s: %d; SSH connections: %d", id, accepted, logins.logins()[id])
	if accepted != 2 || logins.logins()[id] != 2 {
		t.Errorf("%d keys pushed and %d connections accepted by %s; want 2 of each (one per connection)", accepted, logins.logins()[id], id)
	}
}
