package simagree

import (
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
)

// The local plugin's boot, without jitter so that both runs see the same machine: reported running
// bootDelay after Increase, sshd listening sshdDelay later. The simulator has one boot delay: their sum.
const (
	bootDelay = 2 * time.Second
	sshdDelay = time.Second
)

// trace is 20 jobs over a minute, in three bursts and a trickle, of 2 to 10 s: enough for instances to
// be booted for bursts, reused while idle and removed after idle_time.
var trace = func() []sim.Job {
	arrivals := []float64{0, 0, 0.5, 1, 6, 9, 14, 20, 20, 20, 20, 21, 30, 38, 45, 45, 46, 52, 55, 60}
	durations := []float64{4, 8, 2, 6, 3, 10, 5, 2, 7, 9, 4, 3, 6, 2, 8, 5, 3, 10, 4, 2}
	jobs := make([]sim.Job, len(arrivals))
	for i := range arrivals {
		jobs[i] = sim.Job{
			Arrival:  time.Duration(arrivals[i] * float64(time.Second)),
			Duration: time.Duration(durations[i] * float64(time.Second)),
			Pipeline: fmt.Sprint(i),
		}
	}
	return jobs
}()

// options are the taskscaler's for both runs: one slot per instance, no idle capacity (so that jobs
// wait for boots and the waits are worth comparing), idle instances kept 5 s, quick listing.
func options() taskscaler.Options {
	return taskscaler.Options{
		CapacityPerInstance:         1,
		MaxInstances:                10,
		Policies:                    []taskscaler.Policy{{Periods: []string{"* * * * *"}, Location: time.UTC, IdleTime: 5 * time.Second}},
		UpdateInterval:              time.Second,
		UpdateIntervalWhenExpecting: 250 * time.Millisecond,
		DeletionRetryInterval:       10 * time.Second,
		FailureThreshold:            3,
		InstanceAcquireTimeout:      time.Minute,
		CreationTimeout:             time.Minute,
		CreateBackoff:               time.Second,
		MaxCreateBackoff:            10 * time.Second,
		ScaleThrottleLimit:          taskscaler.ScaleThrottleUnlimited,
		ReservationThrottling:       true,
		ShutdownDeletionInterval:    time.Second,
		ShutdownDeletionRetries:     3,
	}
}

// figures are what both runs are compared on.
type figures struct {
	peak int
	p95  time.Duration
}

// TestSimulatorAgreesWithRealFleet runs the trace through the simulator and through the real taskscaler
// over the local plugin, and compares the peak instance count and the p95 queue wait.
//
// Tolerance: peak within ±1 instance, p95 wait within 1.5 s + 20% of the simulated one. The real run
// differs from the simulated one by what the simulator leaves out: the local plugin's boot goroutines
// and sshd start (tens to hundreds of ms each), the ready check dialling sshd every 100 ms, and the
// wall-clock scheduling of the 20 job goroutines on a loaded 2-core machine. Each shifts an instance's
// readiness, and with it a job's wait, by well under a second; 1.5 s also covers one missed 250 ms
// listing per stage. A boot landing just before or after a job's end can make one instance more or
// fewer, hence ±1.
func TestSimulatorAgreesWithRealFleet(t *testing.T) {
	testenv.RequireSSHD(t)
	simulated := simulate(t, bootDelay+sshdDelay)
	actual := runReal(t)
	t.Logf("simulated: peak %d instances, p95 wait %s; real: peak %d instances, p95 wait %s", simulated.peak, simulated.p95, actual.peak, actual.p95)
	if d := actual.peak - simulated.peak; d < -1 || d > 1 {
		t.Errorf("peak instances: real %d, simulated %d; want within ±1", actual.peak, simulated.peak)
	}
	tol := 1500*time.Millisecond + simulated.p95/5
	if d := actual.p95 - simulated.p95; d < -tol || d > tol {
		t.Errorf("p95 wait: real %s, simulated %s; want within ±%s", actual.p95, simulated.p95, tol)
	}
	if simulated.p95 < bootDelay {
		t.Errorf("simulated p95 wait %s is below the boot delay %s: the trace no longer makes jobs wait for boots, so the comparison says little", simulated.p95, bootDelay)
	}
}

// simulate runs the trace in the simulator on instances that take boot from Increase to ready.
func simulate(t *testing.T, boot time.Duration) figures {
	t.Helper()
	res, err := sim.Run(t.Context(), trace, sim.Config{
		Options:   options(),
		Start:     time.Now().UTC(),
		BootDelay: boot,
	})
	if err != nil {
		t.Fatal(err)
	}
	return figures{peak: res.PeakInstances, p95: res.WaitP95}
}

// runReal replays the trace on the wall clock as the manager drives the taskscaler: Reserve before the
// job, Acquire when it arrives, Release when it ends.
func runReal(t *testing.T) figures {
	t.Helper()
	ctx := t.Context()
	zero := local.Delay(0)
	noJitter := 0.0
	g := &local.InstanceGroup{
		Name: "simagree", MaxSize: 10, BaseAddress: "127.0.14.1",
		BootDelay: local.Delay(bootDelay), SSHDDelay: local.Delay(sshdDelay), DockerDelay: zero, BootJitter: &noJitter,
		DockerSocket: testenv.DockerSocket(),
	}
	if _, err := g.Init(ctx, logging.Discard(), fleeting.Settings{}); err != nil {
		t.Fatalf("local plugin: %v", err)
	}
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })

	o := options()
	o.ReadyUp = waitForSSHD
	ts, err := taskscaler.New(g, o)
	if err != nil {
		t.Fatal(err)
	}
	ts.Start(ctx)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = ts.Shutdown(sctx)
	})

	peak := make(chan int)
	stopCount := make(chan struct{})
	go func() { peak <- countInstances(ctx, g, stopCount) }()

	start := time.Now()
	waits := make([]time.Duration, len(trace))
	var wg sync.WaitGroup
	for i, j := range trace {
		time.Sleep(time.Until(start.Add(j.Arrival)))
		key := fmt.Sprint("job-", i)
		if err := ts.Reserve(key); err != nil {
			t.Fatalf("job %d: reserve: %v", i, err)
		}
		arrived := time.Now()
		wg.Go(func() {
			if _, err := ts.Acquire(ctx, key); err != nil {
				t.Errorf("job %d: %v", i, err)
				return
			}
			waits[i] = time.Since(arrived)
			time.Sleep(j.Duration)
			ts.Release(key)
			ts.ForgetJob(key)
		})
	}
	wg.Wait()
	close(stopCount)
	slices.Sort(waits)
	return figures{peak: <-peak, p95: waits[int(math.Ceil(0.95*float64(len(waits))))-1]}
}

// waitForSSHD is the ready check: the instance's sshd accepts a connection (as the connector waits for
// it before a job).
func waitForSSHD(ctx context.Context, inst taskscaler.Instance) error {
	addr := inst.ConnectInfo.InternalAddr
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, fmt.Sprint(inst.ConnectInfo.ProtocolPort))
	}
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sshd at %s: %w", addr, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// countInstances lists the group every 50 ms until stop and returns the most instances seen at once.
func countInstances(ctx context.Context, g fleeting.InstanceGroup, stop <-chan struct{}) int {
	peak := 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		n := 0
		_ = g.Update(ctx, func(string, fleeting.State) { n++ })
		peak = max(peak, n)
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
	}
}
