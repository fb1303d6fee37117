package aws

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/smithy-go"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// TestWarmPoolMembersSkipped: were a listing ever to show warm pool instances, they are not the
// runner's: Update leaves them out, Heartbeat does not vouch for them, and Increase counts from the
// desired capacity, which does not include them.
func TestWarmPoolMembersSkipped(t *testing.T) {
	f := &fakeClient{grp: awsclient.Group{Name: "jobs", MaxSize: 5, DesiredCapacity: 1, Members: []awsclient.Member{
		{ID: "i-a", LifecycleState: "InService", HealthStatus: "Healthy"},
		{ID: "i-w1", LifecycleState: "Warmed:Stopped", HealthStatus: "Healthy"},
		{ID: "i-w2", LifecycleState: "Warmed:Pending", HealthStatus: "Healthy"},
	}}}
	g := newFakeGroup(t, f)
	if got := updateOnce(t, g); len(got) != 1 || got["i-a"] != fleeting.StateRunning {
		t.Errorf("Update reported %v; want only i-a running", got)
	}
	if err := g.Heartbeat(t.Context(), "i-w1"); !errors.Is(err, fleeting.ErrInstanceUnhealthy) {
		t.Errorf("Heartbeat of a warm pool instance = %v; want ErrInstanceUnhealthy", err)
	}
	if n, err := g.Increase(t.Context(), 2); n != 2 || err != nil || f.lastSet() != 3 {
		t.Errorf("Increase(2) = %d, %v with desired set to %d; want 2 granted and desired 3", n, err, f.lastSet())
	}
}

func TestInitLogsWarmPool(t *testing.T) {
	tests := []struct {
		name    string
		pool    awsclient.WarmPool
		err     error
		level   logrus.Level
		message string
		fields  logrus.Fields
	}{
		{
			name: "pool", level: logrus.InfoLevel, message: "warm pool found",
			pool: awsclient.WarmPool{Configured: true, MinSize: 2, MaxGroupPreparedCapacity: 2, PoolState: "Stopped", Instances: []awsclient.Member{
				{ID: "i-1", LifecycleState: "Warmed:Stopped"}, {ID: "i-2", LifecycleState: "Warmed:Pending"},
			}},
			fields: logrus.Fields{"warm_pool_min_size": 2, "warm_pool_state": "Stopped", "warm_pool_instances": 2},
		},
		{
			name: "access denied", level: logrus.WarnLevel, message: "could not read the group's warm pool",
			err:    &smithy.GenericAPIError{Code: "AccessDenied"},
			fields: logrus.Fields{logrus.ErrorKey: "autoscaling:DescribeWarmPool"},
		},
		{name: "no pool", level: logrus.DebugLevel, message: "no warm pool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeClient{grp: awsclient.Group{Name: "jobs", MaxSize: 5}, warmPool: tt.pool, warmPoolErr: tt.err}
			g := newFakeGroup(t, f)
			log, hook := logrus.New(), &entryHook{}
			log.SetOutput(io.Discard)
			log.SetLevel(logrus.DebugLevel)
			log.AddHook(hook)
			g.log = log
			g.logWarmPool(t.Context())
			e := hook.find(tt.message)
			if e == nil {
				t.Fatalf("no log entry containing %q in %v", tt.message, hook.messages())
			}
			if e.Level != tt.level {
				t.Errorf("%q logged at %s, want %s", e.Message, e.Level, tt.level)
			}
			for k, want := range tt.fields {
				got := fmt.Sprint(e.Data[k])
				if !strings.Contains(got, fmt.Sprint(want)) {
					t.Errorf("field %s = %q, want it to contain %q", k, got, want)
				}
			}
		})
	}
}

// entryHook keeps every log entry.
type entryHook struct{ entries []*logrus.Entry }

func (h *entryHook) Levels() []logrus.Level { return logrus.AllLevels }
func (h *entryHook) Fire(e *logrus.Entry) error {
	h.entries = append(h.entries, e)
	return nil
}
func (h *entryHook) find(s string) *logrus.Entry {
	for _, e := range h.entries {
		if strings.Contains(e.Message, s) {
			return e
		}
	}
	return nil
}
func (h *entryHook) messages() []string {
	var out []string
	for _, e := range h.entries {
		out = append(out, e.Message)
	}
	return out
}

// putWarmPool gives the group a warm pool of exactly size instances through the SDK, as the kit's
// AWS::AutoScaling::WarmPool does.
func putWarmPool(t *testing.T, group string, size int) {
	t.Helper()
	if _, err := autoscaling.NewFromConfig(sdkConfig(t)).PutWarmPool(t.Context(), &autoscaling.PutWarmPoolInput{
		AutoScalingGroupName: awssdk.String(group), MinSize: awssdk.Int32(int32(size)), MaxGroupPreparedCapacity: awssdk.Int32(int32(size)),
		PoolState: asgtypes.WarmPoolStateStopped,
	}); err != nil {
		t.Fatalf("PutWarmPool: %v", err)
	}
}

// TestWarmPoolAWSSim: a group with a warm pool of 2. Init logs the pool; Increase(2) is served by both
// pool instances, which the plugin reports creating and then running after the warm start; Update
// never reports a pool instance, so only the instances in service count (max_instances, desired); a
// fresh launch, once the pool is gone, takes the full boot.
func TestWarmPoolAWSSim(t *testing.T) {
	boot := local.BootModel{Running: 2 * time.Second, SSHD: time.Second}
	warmStart := 300 * time.Millisecond
	sim := newSim(t, awssim.GroupSpec{Name: "warm", MaxSize: 4, ProtectFromScaleIn: true, Boot: &boot, WarmStart: warmStart}, awssim.Options{})
	putWarmPool(t, "warm", 2)
	pooled := waitPoolStopped(t, sim, "warm", 2, nil)

	log, hook := logrus.New(), &entryHook{}
	log.SetOutput(io.Discard)
	log.AddHook(hook)
	g := simGroup("warm")
	if _, err := g.Init(t.Context(), log, simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	if e := hook.find("warm pool found"); e == nil || e.Data["warm_pool_instances"] != 2 || e.Data["warm_pool_min_size"] != 2 {
		t.Errorf("Init logged %v; want the warm pool of 2", hook.messages())
	}

	began := time.Now()
	if n, err := g.Increase(t.Context(), 2); n != 2 || err != nil {
		t.Fatalf("Increase(2) = %d, %v", n, err)
	}
	seen := map[string][]fleeting.State{}
	var running []string
	for len(running) < 2 {
		if time.Since(began) > 20*time.Second {
			t.Fatalf("states after Increase(2): %v; sim: %+v", seen, sim.Instances("warm"))
		}
		running = running[:0]
		for id, st := range updateOnce(t, g) {
			if s := seen[id]; len(s) == 0 || s[len(s)-1] != st {
				seen[id] = append(s, st)
			}
			if st == fleeting.StateRunning {
				running = append(running, id)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	warmTook := time.Since(began)
	slices.Sort(running)
	if !slices.Equal(running, pooled) {
		t.Errorf("running %q, want the pool's instances %q", running, pooled)
	}
	refilled := waitPoolStopped(t, sim, "warm", 2, pooled)
	for range 5 {
		got := updateOnce(t, g)
		if len(got) != 2 {
			t.Errorf("Update reported %v with 2 in service and 2 in the pool; want the 2 in service only", got)
		}
		for _, id := range refilled {
			if _, ok := got[id]; ok {
				t.Errorf("Update reported pool instance %s", id)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("states seen: %v", seen)
	for id, states := range seen {
		if states[len(states)-1] != fleeting.StateRunning || slices.ContainsFunc(states, func(s fleeting.State) bool {
			return s != fleeting.StateCreating && s != fleeting.StateRunning
		}) {
			t.Errorf("instance %s went %v; want creating, then running", id, states)
		}
	}
	if n, err := g.Increase(t.Context(), 1); n != 1 || err != nil || sim.DesiredCapacity("warm") != 3 {
		t.Errorf("Increase(1) = %d, %v with desired %d; want desired 3, the pool not counted", n, err, sim.DesiredCapacity("warm"))
	}
	waitRunning(t, g, 3)

	if _, err := autoscaling.NewFromConfig(sdkConfig(t)).DeleteWarmPool(t.Context(), &autoscaling.DeleteWarmPoolInput{AutoScalingGroupName: awssdk.String("warm")}); err != nil {
		t.Fatalf("DeleteWarmPool: %v", err)
	}
	waitPoolStopped(t, sim, "warm", 0, nil)
	began = time.Now()
	if _, err := g.Increase(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, g, 4)
	t.Logf("from a warm pool: 2 instances running %s after Increase (warm start %s); a fresh launch: running %s after Increase (boot %s to running, %s more to sshd)",
		warmTook.Round(time.Millisecond), warmStart, time.Since(began).Round(time.Millisecond), boot.Running, boot.SSHD)
}

// waitPoolStopped waits until the group's warm pool holds exactly n Warmed:Stopped instances, none of
// them in not, and nothing else in the pool; it returns their IDs, sorted.
func waitPoolStopped(t *testing.T, sim *awssim.Server, group string, n int, not []string) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var stopped []string
		others := 0
		for _, i := range sim.Instances(group) {
			switch {
			case i.LifecycleState == "Warmed:Stopped" && !slices.Contains(not, i.ID):
				stopped = append(stopped, i.ID)
			case strings.HasPrefix(i.LifecycleState, "Warmed:"):
				others++
			}
		}
		if len(stopped) == n && others == 0 {
			slices.Sort(stopped)
			return stopped
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: want %d Warmed:Stopped instances (not %q): %+v", group, n, not, sim.Instances(group))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWarmPoolAccessDenied: without autoscaling:DescribeWarmPool Init still succeeds and warns, naming
// the permission.
func TestWarmPoolAccessDenied(t *testing.T) {
	sim := newSim(t, simSpec, awssim.Options{})
	sim.SetFaults(awssim.Faults{AccessDenied: []string{"DescribeWarmPool"}})
	log, hook := logrus.New(), &captureHook{}
	log.SetOutput(io.Discard)
	log.AddHook(hook)
	if _, err := simGroup(simSpec.Name).Init(t.Context(), log, simSettings(t, sim)); err != nil {
		t.Fatalf("Init without DescribeWarmPool = %v; want it to work", err)
	}
	if !hook.has("could not read the group's warm pool") {
		t.Errorf("no warning about the warm pool in %q", hook.messages)
	}
}

// TestWarmPoolMoto: moto 5 stores a warm pool (PutWarmPool; the configuration in DescribeWarmPool and
// DescribeAutoScalingGroups) but launches no instances into it, so DescribeWarmPool lists none and
// scale-out launches fresh instances; the plugin's Init reads and logs the pool.
func TestWarmPoolMoto(t *testing.T) {
	startMoto(t)
	cfg := sdkConfig(t)
	if err := createMotoGroup(t.Context(), cfg, "warm", motoLinuxAMI, 4, 0); err != nil {
		t.Fatalf("set up moto: %v", err)
	}
	putWarmPool(t, "warm", 2)
	asg := autoscaling.NewFromConfig(cfg)
	wp, err := asg.DescribeWarmPool(t.Context(), &autoscaling.DescribeWarmPoolInput{AutoScalingGroupName: awssdk.String("warm")})
	if err != nil {
		t.Fatalf("DescribeWarmPool on moto: %v", err)
	}
	groups, err := asg.DescribeAutoScalingGroups(t.Context(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"warm"}})
	if err != nil || len(groups.AutoScalingGroups) != 1 {
		t.Fatalf("DescribeAutoScalingGroups on moto: %+v, %v", groups, err)
	}
	describe := func(c *asgtypes.WarmPoolConfiguration) string {
		if c == nil {
			return "none"
		}
		return fmt.Sprintf("MinSize %d, MaxGroupPreparedCapacity %d, PoolState %s, InstanceReusePolicy %v",
			awssdk.ToInt32(c.MinSize), awssdk.ToInt32(c.MaxGroupPreparedCapacity), c.PoolState, c.InstanceReusePolicy)
	}
	grp := groups.AutoScalingGroups[0]
	t.Logf("moto: DescribeWarmPool configuration %s, %d instances; DescribeAutoScalingGroups WarmPoolConfiguration %s, WarmPoolSize %v",
		describe(wp.WarmPoolConfiguration), len(wp.Instances), describe(grp.WarmPoolConfiguration), grp.WarmPoolSize)
	if wp.WarmPoolConfiguration == nil || awssdk.ToInt32(wp.WarmPoolConfiguration.MinSize) != 2 {
		t.Errorf("moto's DescribeWarmPool configuration %s; want MinSize 2", describe(wp.WarmPoolConfiguration))
	}

	log, hook := logrus.New(), &entryHook{}
	log.SetOutput(io.Discard)
	log.AddHook(hook)
	g := &InstanceGroup{Name: "warm", Region: "us-east-1", maxAttempts: 1}
	if _, err := g.Init(t.Context(), log, fleeting.Settings{}); err != nil {
		t.Fatalf("Init = %v", err)
	}
	e := hook.find("warm pool found")
	if e == nil || e.Data["warm_pool_min_size"] != 2 || e.Data["warm_pool_max_prepared"] != 2 || e.Data["warm_pool_state"] != "Stopped" {
		t.Fatalf("Init on moto logged %v; want the warm pool of 2, Stopped", hook.messages())
	}
	t.Logf("Init on moto: %s %v", e.Message, e.Data)
	// moto has no pool instances to take: the group launches a fresh one, which the plugin sees as any.
	if n, err := g.Increase(t.Context(), 1); n != 1 || err != nil {
		t.Fatalf("Increase(1) on moto = %d, %v", n, err)
	}
	waitRunning(t, g, 1)
}
