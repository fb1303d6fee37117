package e2eaws_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	awsplugin "gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
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

// countingGroup counts the taskscaler's scaling events (Increase and Decrease calls that asked for a
// change) and its Update polls.
type countingGroup struct {
	fleeting.InstanceGroup
	increases, decreases, updates atomic.Int64
}

func (g *countingGroup) Update(ctx context.Context, fn func(string, fleeting.State)) error {
	g.updates.Add(1)
	return g.InstanceGroup.Update(ctx, fn)
}

func (g *countingGroup) Increase(ctx context.Context, n int) (int, error) {
	if n > 0 {
		g.increases.Add(1)
	}
	return g.InstanceGroup.Increase(ctx, n)
}

func (g *countingGroup) Decrease(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) > 0 {
		g.decreases.Add(1)
	}
	return g.InstanceGroup.Decrease(ctx, ids)
}

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

// run200Jobs runs benchJobs jobs through a fresh taskscaler on a fresh awssim group and returns the
// AWS calls it took.
func run200Jobs(b *testing.B) callFigures {
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	spec := groupSpec(fmt.Sprintf("fleetrunner-bench-%d", time.Now().UnixNano()), benchMaxSize)
	w := newAWSWorld(b, spec, awssim.Options{})
	start := time.Now()

	plugin := &countingGroup{InstanceGroup: &awsplugin.InstanceGroup{Name: spec.Name, Region: w.sim.Region(),
		Profile: awsProfile, ConfigFile: w.configFile, CredentialsFile: w.credentialsFile}}
	ctx := b.Context()
	if _, err := plugin.Init(ctx, quiet, fleeting.Settings{ConnectorConfig: fleeting.ConnectorConfig{
		Username: "root", ProtocolPort: w.sim.SSHPort()}}); err != nil {
		b.Fatalf("plugin Init: %v", err)
	}
	preemptive := false
	policies, err := capacity.NewPolicies([]config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: time.Second, PreemptiveMode: &preemptive}})
	if err != nil {
		b.Fatal(err)
	}

	// The pool and hooks are wired as the docker-autoscaler executor wires them: the ready hook's
	// ConnectInfo opens the instance's one pooled connection, later dials ask the taskscaler.
	var ts *taskscaler.Taskscaler
	started := make(chan struct{})
	var readyInfo sync.Map
	pool := connector.NewPool(connector.Config{Keepalive: time.Second, Timeout: 10 * time.Second, Log: quiet},
		func(ctx context.Context, id string) (fleeting.ConnectInfo, error) {
			if v, ok := readyInfo.LoadAndDelete(id); ok {
				return v.(fleeting.ConnectInfo), nil
			}
			<-started
			return ts.ConnectInfo(ctx, id)
		})
	defer pool.Close()
	ts, err = taskscaler.New(ctx, plugin, taskscaler.Options{
		Logger: quiet, CapacityPerInstance: benchCapacity, MaxInstances: benchMaxSize, Policies: policies,
		UpdateInterval: time.Second, UpdateIntervalWhenExpecting: 200 * time.Millisecond, DeletionRetryInterval: time.Second,
		ReadyUp: func(ctx context.Context, inst taskscaler.Instance) error {
			readyInfo.Store(inst.ID, inst.ConnectInfo)
			defer readyInfo.Delete(inst.ID)
			lease, err := pool.Get(ctx, inst.ID)
			if err != nil {
				return err
			}
			lease.Release()
			return nil
		},
		HealthCheck: func(ctx context.Context, inst taskscaler.Instance) error { return plugin.Heartbeat(ctx, inst.ID) },
	})
	if err != nil {
		b.Fatalf("taskscaler: %v", err)
	}
	close(started)

	idle := func() bool {
		s := ts.Stats()
		return w.sim.DesiredCapacity(spec.Name) == 1 && s.Instances.Ready == 1 &&
			s.Instances.Requested+s.Instances.Creating+s.Instances.Readying+s.Instances.Removing == 0
	}
	waitIdle := func(what string) {
		deadline := time.Now().Add(time.Minute)
		for !idle() {
			if time.Now().After(deadline) {
				b.Fatalf("%s: the group did not settle at its idle instance: %+v", what, ts.Stats())
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
				defer ts.Release(key)
				acq, err := ts.Acquire(ctx, key)
				if err != nil {
					return fmt.Errorf("job %s: %w", key, err)
				}
				lease, err := pool.Get(acq.Context(), acq.InstanceID)
				if err != nil {
					return fmt.Errorf("job %s on %s: %w", key, acq.InstanceID, err)
				}
				defer lease.Release()
				if _, _, err := lease.Client().SSH().SendRequest("keepalive@openssh.com", true, nil); err != nil {
					return fmt.Errorf("job %s on %s: the pooled connection does not answer: %w", key, acq.InstanceID, err)
				}
				time.Sleep(benchJobHold)
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		waitIdle(fmt.Sprintf("after wave %d", wave+1))
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.Shutdown(shutdownCtx); err != nil {
		b.Errorf("taskscaler shutdown: %v", err)
	}
	_ = plugin.Shutdown(shutdownCtx)

	f := callFigures{calls: w.sim.Calls(), increases: int(plugin.increases.Load()), decreases: int(plugin.decreases.Load()),
		updates: int(plugin.updates.Load()), took: time.Since(start)}
	keyed := map[string]bool{}
	for _, p := range w.sim.KeyPushes() {
		if p.Err == "" {
			keyed[p.InstanceID] = true
		}
	}
	f.keyedInstances = len(keyed)
	return f
}
