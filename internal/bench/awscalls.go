package bench

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig/awsrig"
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
	w := awsrig.NewWorld(t, awssim.GroupSpec{Name: fmt.Sprintf("fleetrunner-bench-%d", time.Now().UnixNano()), MaxSize: awsBenchMaxSize,
		Boot: &awsBenchBoot, ProtectFromScaleIn: true, SuspendAZRebalance: true}, awssim.Options{})
	s := w.StartScaler(t, awsrig.Fleet{Capacity: awsBenchCapacity, MaxInstances: awsBenchMaxSize, IdleCount: 1, IdleTime: time.Second}, nil)
	rate := watchRate(w.Sim)

	waitIdle := func(what string) {
		deadline := time.Now().Add(time.Minute)
		for !s.Settled(1) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the group did not settle at its idle instance: %+v", what, s.TS.Stats())
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
			g.Go(func() error {
				_, err := s.Job(t.Context(), key, func() { time.Sleep(awsBenchJobHold) })
				return err
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		waitIdle(fmt.Sprintf("after wave %d", wave+1))
	}
	s.Shutdown(t)
	peakASG, peakEC2 := rate.stop()
	took := time.Since(start)

	calls := w.Sim.Calls()
	all := 0
	for _, n := range calls {
		all += n
	}
	events := int(s.Plugin.Increases.Load() + s.Plugin.Decreases.Load())
	if events == 0 {
		t.Fatal("no scaling event")
	}
	var byAction []string
	for _, a := range slices.Sorted(maps.Keys(calls)) {
		byAction = append(byAction, fmt.Sprintf("%s %d", a, calls[a]))
	}
	t.Logf("%d jobs in %d waves in %s: %d scaling events, %d Update polls; calls: %s", jobs, waves, took.Round(time.Millisecond),
		events, s.Plugin.Updates.Load(), strings.Join(byAction, ", "))
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
var autoScalingActions = []string{"DescribeAutoScalingGroups", "DescribeAutoScalingInstances", "DescribePolicies", "DescribeWarmPool", "PutWarmPool", "DeleteWarmPool",
	"DescribeScalingActivities", "SetDesiredCapacity", "TerminateInstanceInAutoScalingGroup", "SetInstanceProtection"}

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

func sampleCalls(sim *awssim.Server) rateSample {
	s := rateSample{at: time.Now()}
	for a, n := range sim.Calls() {
		if slices.Contains(autoScalingActions, a) {
			s.asg += n
		} else {
			s.ec2 += n
		}
	}
	return s
}

func watchRate(sim *awssim.Server) *rateWatch {
	rw := &rateWatch{stopCh: make(chan struct{}), done: make(chan struct{}), samples: []rateSample{sampleCalls(sim)}}
	go func() {
		defer close(rw.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-rw.stopCh:
				rw.mu.Lock()
				rw.samples = append(rw.samples, sampleCalls(sim))
				rw.mu.Unlock()
				return
			case <-tick.C:
				rw.mu.Lock()
				rw.samples = append(rw.samples, sampleCalls(sim))
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
