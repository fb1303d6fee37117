package bench

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/fleetingtest"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	awsplugin "gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

func init() {
	Register(Bench{Name: "6 aws calls", Run: runAWSCalls})
}

// ec2DescribeRefill is the EC2 API's default refill rate, in requests per second, of the token bucket of
// a non-mutating action such as DescribeInstances (bucket of 100 tokens, refilled at 20 a second):
// "Request throttling for the Amazon EC2 API", https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
// (Request token bucket sizes and refill rates). Above it, a sustained rate is throttled.
const ec2DescribeRefill = 20.0

// Amazon EC2 Auto Scaling throttles all its actions from one shared token bucket per account and
// Region but publishes neither its size nor its refill rate ("API request rate" in the Amazon EC2
// Auto Scaling API Reference, https://docs.aws.amazon.com/autoscaling/ec2/APIReference/Welcome.html).
// Its row therefore carries a goal, not a limit: stay below EC2's non-mutating refill rate, which is
// shared with every other client of the account.
const autoScalingGoal = "< 20 req/s (AWS publishes no size for the shared Auto Scaling bucket)"

// awsBenchBoot boots like an EC2 instance, only quicker: running after 300 ms, sshd refusing
// connections for a second more, Docker half a second after sshd, each ±30%.
var awsBenchBoot = local.BootModel{Running: 300 * time.Millisecond, SSHD: time.Second, Docker: 500 * time.Millisecond, Jitter: 0.3}

// The run: waves of jobs separated by idle periods, so that the group scales out and back in once per
// wave, on a group of at most four instances with two slots each.
const (
	awsBenchCapacity = 2
	awsBenchMaxSize  = 4
	awsBenchJobHold  = 50 * time.Millisecond
	awsBenchProfile  = "awssim"
)

// runAWSCalls runs waves of jobs through the real taskscaler and aws plugin against awssim and counts
// the AWS API calls: a "job" acquires a slot, makes one round trip on the instance's pooled SSH
// connection (one EC2 Instance Connect key per connection), holds the slot briefly and releases it; no
// Docker is involved. The request rate is sampled every 100 ms; its peak is the most calls in any
// one-second window.
func runAWSCalls(t *testing.T, p Profile) []Row {
	testenv.RequireSSHD(t)
	// Point the SDK at awssim alone: no endpoint from this machine's environment, no metadata service.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_ENDPOINT_URL") || k == "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" {
			t.Setenv(k, "")
			_ = os.Unsetenv(k)
		}
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	jobs, waves := 200, 4
	if p.Short {
		jobs, waves = 20, 2
	}
	w := newAWSWorld(t)
	s := w.startScaler(t)
	rate := w.watchRate()

	waitIdle := func(what string) {
		deadline := time.Now().Add(time.Minute)
		for !s.settled(1) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the group did not settle at its idle instance: %+v", what, s.ts.Stats())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	start := time.Now()
	waitIdle("start")
	for wave := range waves {
		var g errgroup.Group
		for i := range jobs / waves {
			key := fmt.Sprintf("wave%d-job%d", wave, i)
			g.Go(func() error { return s.job(t.Context(), key) })
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		waitIdle(fmt.Sprintf("after wave %d", wave+1))
	}
	s.shutdown(t)
	peakASG, peakEC2 := rate.stop()
	took := time.Since(start)

	calls := w.sim.Calls()
	all := 0
	for _, n := range calls {
		all += n
	}
	events := int(s.plugin.Increases.Load() + s.plugin.Decreases.Load())
	if events == 0 {
		t.Fatal("no scaling event")
	}
	var byAction []string
	for _, a := range slices.Sorted(maps.Keys(calls)) {
		byAction = append(byAction, fmt.Sprintf("%s %d", a, calls[a]))
	}
	t.Logf("%d jobs in %d waves in %s: %d scaling events, %d Update polls; calls: %s", jobs, waves, took.Round(time.Millisecond),
		events, s.plugin.Updates.Load(), strings.Join(byAction, ", "))
	setup := fmt.Sprintf("%d jobs in %d waves, capacity_per_instance %d, at most %d instances, update_interval 1s", jobs, waves, awsBenchCapacity, awsBenchMaxSize)
	polls := calls["DescribeAutoScalingGroups"]
	rows := []Row{{
		Name:  "AWS API calls per job",
		Value: float64(all) / float64(jobs),
		Unit:  "calls",
		Goal:  "< 1: calls follow scaling events and polls, not jobs",
		Note:  fmt.Sprintf("%s; %.3f per job without the DescribeAutoScalingGroups polls", setup, float64(all-polls)/float64(jobs)),
	}, {
		Name:      "AWS API calls per scaling event, polls left out",
		Value:     float64(all-polls) / float64(events),
		Unit:      "calls",
		Limit:     1,
		LimitName: "one mutating call (SetDesiredCapacity or TerminateInstanceInAutoScalingGroup)",
		Note: fmt.Sprintf("%d Increase and Decrease calls that changed the group; %.1f per event with the DescribeAutoScalingGroups polls of every update_interval",
			events, float64(all)/float64(events)),
	}, {
		Name:  "Auto Scaling requests at peak",
		Value: peakASG,
		Unit:  "req/s",
		Goal:  autoScalingGoal,
		Note:  "most Auto Scaling calls in any one-second window of the run",
	}}
	if peakEC2 > 0 {
		rows = append(rows, Row{
			Name:      "EC2 requests at peak",
			Value:     peakEC2,
			Unit:      "req/s",
			Limit:     ec2DescribeRefill,
			LimitName: "EC2's default refill rate for a non-mutating action (DescribeInstances)",
			Note:      "most EC2 and EC2 Instance Connect calls in any one-second window of the run",
		})
	}
	return rows
}

// autoScalingActions are the Auto Scaling actions awssim answers; every other action is EC2's or EC2
// Instance Connect's.
var autoScalingActions = []string{"DescribeAutoScalingGroups", "DescribeAutoScalingInstances", "DescribePolicies",
	"DescribeScalingActivities", "SetDesiredCapacity", "TerminateInstanceInAutoScalingGroup", "SetInstanceProtection"}

// awsWorld is one awssim with one Auto Scaling group, and the shared config and credentials files that
// point the SDK at it.
type awsWorld struct {
	sim                         *awssim.Server
	group                       string
	configFile, credentialsFile string
}

func newAWSWorld(t *testing.T) *awsWorld {
	dir := t.TempDir()
	w := &awsWorld{group: fmt.Sprintf("fleetrunner-bench-%d", time.Now().UnixNano()),
		configFile: filepath.Join(dir, "aws-config"), credentialsFile: filepath.Join(dir, "aws-credentials")}
	sim, err := awssim.New(awssim.Options{Dir: filepath.Join(dir, "awssim"), DockerSocket: testenv.DockerSocket()})
	if err != nil {
		t.Fatalf("awssim: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("awssim close: %v", err)
		}
	})
	w.sim = sim
	if err := sim.CreateGroup(awssim.GroupSpec{Name: w.group, MaxSize: awsBenchMaxSize, Boot: &awsBenchBoot,
		ProtectFromScaleIn: true, SuspendAZRebalance: true}); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		w.configFile:      fmt.Sprintf("[profile %s]\nregion = %s\nendpoint_url = %s\n", awsBenchProfile, sim.Region(), sim.URL()),
		w.credentialsFile: fmt.Sprintf("[%s]\naws_access_key_id = AKIAFLEETRUNNERBENCH\naws_secret_access_key = fleetrunner-bench-secret\n", awsBenchProfile),
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// rateWatch samples awssim's call counts.
type rateWatch struct {
	stopOnce sync.Once
	stopCh   chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	samples  []rateSample
}

type rateSample struct {
	at       time.Time
	asg, ec2 int
}

func (w *awsWorld) sample() rateSample {
	s := rateSample{at: time.Now()}
	for a, n := range w.sim.Calls() {
		if slices.Contains(autoScalingActions, a) {
			s.asg += n
		} else {
			s.ec2 += n
		}
	}
	return s
}

func (w *awsWorld) watchRate() *rateWatch {
	rw := &rateWatch{stopCh: make(chan struct{}), done: make(chan struct{}), samples: []rateSample{w.sample()}}
	go func() {
		defer close(rw.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-rw.stopCh:
				rw.mu.Lock()
				rw.samples = append(rw.samples, w.sample())
				rw.mu.Unlock()
				return
			case <-tick.C:
				rw.mu.Lock()
				rw.samples = append(rw.samples, w.sample())
				rw.mu.Unlock()
			}
		}
	}()
	return rw
}

// stop ends the sampling and returns the most Auto Scaling and EC2 calls in any one-second window.
func (rw *rateWatch) stop() (asg, ec2 float64) {
	rw.stopOnce.Do(func() { close(rw.stopCh) })
	<-rw.done
	rw.mu.Lock()
	defer rw.mu.Unlock()
	j := 0
	for _, s := range rw.samples {
		for rw.samples[j].at.Before(s.at.Add(-time.Second)) {
			j++
		}
		asg = max(asg, float64(s.asg-rw.samples[j].asg))
		ec2 = max(ec2, float64(s.ec2-rw.samples[j].ec2))
	}
	return asg, ec2
}

// awsScaler is the real taskscaler and aws plugin on the awssim group, with the connector's pool wired
// as the docker-autoscaler executor wires it (as internal/e2e/aws does).
type awsScaler struct {
	w      *awsWorld
	plugin *fleetingtest.CountingGroup
	pool   *connector.Pool
	ts     *taskscaler.Taskscaler
}

func (w *awsWorld) startScaler(t *testing.T) *awsScaler {
	log := logging.Or(nil)
	s := &awsScaler{w: w, plugin: &fleetingtest.CountingGroup{InstanceGroup: &awsplugin.InstanceGroup{Name: w.group, Region: w.sim.Region(),
		Profile: awsBenchProfile, ConfigFile: w.configFile, CredentialsFile: w.credentialsFile}}}
	ctx := context.WithoutCancel(t.Context())
	if _, err := s.plugin.Init(ctx, log, fleeting.Settings{ConnectorConfig: fleeting.ConnectorConfig{
		Username: "root", ProtocolPort: w.sim.SSHPort()}}); err != nil {
		t.Fatalf("plugin Init: %v", err)
	}
	preemptive := false
	opts, err := dockerautoscaler.TaskscalerOptions(&config.AutoscalerConfig{
		CapacityPerInstance: awsBenchCapacity, MaxInstances: awsBenchMaxSize,
		UpdateInterval: time.Second, UpdateIntervalWhenExpecting: 200 * time.Millisecond, DeletionRetryInterval: time.Second,
		Policy: []config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: time.Second, PreemptiveMode: &preemptive}},
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = log
	opts.CreateBackoff = 500 * time.Millisecond
	opts.ReadyUp = func(ctx context.Context, inst taskscaler.Instance) error {
		defer s.pool.Readying(inst.ID, inst.ConnectInfo)()
		lease, err := s.pool.Get(ctx, inst.ID)
		if err != nil {
			return err
		}
		lease.Release()
		return nil
	}
	opts.HealthCheck = func(ctx context.Context, inst taskscaler.Instance) error { return s.plugin.Heartbeat(ctx, inst.ID) }
	opts.Gone = func(id string) { s.pool.Remove(id) }
	s.ts, err = taskscaler.New(s.plugin, opts)
	if err != nil {
		t.Fatalf("taskscaler: %v", err)
	}
	s.pool = connector.NewPool(connector.Config{Keepalive: time.Second, Timeout: 20 * time.Second, Log: log}, s.ts.ConnectInfo)
	s.ts.Start(ctx)
	t.Cleanup(func() { s.shutdown(t) })
	return s
}

// shutdown stops the taskscaler, the pool and the plugin; a second call does nothing.
func (s *awsScaler) shutdown(t *testing.T) {
	if s.ts == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.ts.Shutdown(ctx); err != nil {
		t.Errorf("taskscaler shutdown: %v", err)
	}
	_ = s.pool.Close()
	_ = s.plugin.Shutdown(ctx)
	s.ts = nil
}

// job acquires a slot, makes one round trip on the instance's pooled connection, holds the slot
// briefly and releases it.
func (s *awsScaler) job(ctx context.Context, key string) error {
	defer s.ts.Release(key)
	acq, err := s.ts.Acquire(ctx, key)
	if err != nil {
		return fmt.Errorf("job %s: %w", key, err)
	}
	lease, err := s.pool.Get(acq.Context(), acq.InstanceID)
	if err != nil {
		return fmt.Errorf("job %s on %s: %w", key, acq.InstanceID, err)
	}
	defer lease.Release()
	if _, _, err := lease.Client().SSH().SendRequest("keepalive@openssh.com", true, nil); err != nil {
		return fmt.Errorf("job %s on %s: the pooled connection does not answer: %w", key, acq.InstanceID, err)
	}
	time.Sleep(awsBenchJobHold)
	return nil
}

// settled reports whether the taskscaler and the group agree on exactly n ready instances, the same
// ones, with nothing starting or leaving.
func (s *awsScaler) settled(n int) bool {
	st := s.ts.Stats()
	if st.Instances.Ready != n || st.Instances.Requested+st.Instances.Creating+st.Instances.Readying+st.Instances.Removing != 0 ||
		s.w.sim.DesiredCapacity(s.w.group) != n {
		return false
	}
	var known, group []string
	for _, in := range s.ts.Instances() {
		known = append(known, in.ID)
	}
	inService := 0
	for _, in := range s.w.sim.Instances(s.w.group) {
		group = append(group, in.ID)
		if in.LifecycleState == "InService" {
			inService++
		}
	}
	slices.Sort(known)
	slices.Sort(group)
	return inService == n && slices.Equal(known, group)
}
