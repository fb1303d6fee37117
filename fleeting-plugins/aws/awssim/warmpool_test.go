package awssim

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/smithy-go"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

func TestPoolTarget(t *testing.T) {
	tests := []struct {
		name                            string
		maxSize, desired, min, prepared int
		want                            int
	}{
		{"unset prepared: MaxSize less desired", 5, 2, 0, -1, 3},
		{"prepared less desired", 5, 1, 0, 3, 2},
		{"desired above prepared: none", 5, 4, 0, 3, 0},
		{"MinSize is a floor", 5, 4, 2, 3, 2},
		{"MinSize equal to prepared: a fixed size", 10, 1, 2, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &group{spec: GroupSpec{MaxSize: tt.maxSize}, desired: tt.desired, pool: &warmPool{minSize: tt.min, maxPrepared: tt.prepared}}
			if got := poolTarget(g); got != tt.want {
				t.Errorf("poolTarget = %d, want %d", got, tt.want)
			}
		})
	}
}

// waitPool waits until the group's warm pool holds n instances in state and returns their IDs.
func waitPool(t *testing.T, s *Server, group, state string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ids []string
		for _, i := range s.Instances(group) {
			if i.LifecycleState == state {
				ids = append(ids, i.ID)
			}
		}
		if len(ids) == n {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: %d of %d pool instances %s: %+v", group, len(ids), n, state, s.Instances(group))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWarmPool: a warm pool's instances boot, stop (no sshd, stopped in EC2) and stay out of the group's
// listing; the group takes them first when it grows, they serve sshd after the warm start, and the pool
// is refilled; DeleteWarmPool empties it and then removes it.
func TestWarmPool(t *testing.T) {
	s, c := start(t, Options{ConsistentListings: true}, GroupSpec{Name: "w", MaxSize: 4, ProtectFromScaleIn: true,
		Boot: &local.BootModel{Running: 100 * time.Millisecond, SSHD: 100 * time.Millisecond}, WarmStart: 300 * time.Millisecond})
	ctx := t.Context()
	if _, err := c.asg.PutWarmPool(ctx, &autoscaling.PutWarmPoolInput{
		AutoScalingGroupName: aws.String("w"), MinSize: aws.Int32(2), MaxGroupPreparedCapacity: aws.Int32(2),
		PoolState: asgtypes.WarmPoolStateStopped, InstanceReusePolicy: &asgtypes.InstanceReusePolicy{ReuseOnScaleIn: aws.Bool(true)},
	}); err != nil {
		t.Fatalf("PutWarmPool = %v", err)
	}
	pooled := waitPool(t, s, "w", "Warmed:Stopped", 2)

	wp, err := c.asg.DescribeWarmPool(ctx, &autoscaling.DescribeWarmPoolInput{AutoScalingGroupName: aws.String("w")})
	if err != nil {
		t.Fatalf("DescribeWarmPool = %v", err)
	}
	cfg := wp.WarmPoolConfiguration
	if cfg == nil || aws.ToInt32(cfg.MinSize) != 2 || aws.ToInt32(cfg.MaxGroupPreparedCapacity) != 2 || cfg.PoolState != asgtypes.WarmPoolStateStopped ||
		cfg.InstanceReusePolicy == nil || !aws.ToBool(cfg.InstanceReusePolicy.ReuseOnScaleIn) {
		t.Errorf("DescribeWarmPool configuration = %+v", cfg)
	}
	var listed []string
	for _, i := range wp.Instances {
		listed = append(listed, aws.ToString(i.InstanceId))
		if i.LifecycleState != asgtypes.LifecycleStateWarmedStopped {
			t.Errorf("pool instance %s is %s, want Warmed:Stopped", aws.ToString(i.InstanceId), i.LifecycleState)
		}
	}
	if !slices.Equal(listed, pooled) {
		t.Errorf("DescribeWarmPool lists %q, want %q", listed, pooled)
	}
	groups, err := c.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"w"}})
	if err != nil {
		t.Fatal(err)
	}
	if g := groups.AutoScalingGroups[0]; len(g.Instances) != 0 || aws.ToInt32(g.WarmPoolSize) != 2 || g.WarmPoolConfiguration == nil || aws.ToInt32(g.DesiredCapacity) != 0 {
		t.Errorf("DescribeAutoScalingGroups: %d instances, warm pool size %d, configuration %+v, desired %d; want no instances, a pool of 2, desired 0",
			len(g.Instances), aws.ToInt32(g.WarmPoolSize), g.WarmPoolConfiguration, aws.ToInt32(g.DesiredCapacity))
	}
	for _, id := range pooled {
		if st := shownState(t, c, id); st != "stopped" {
			t.Errorf("DescribeInstances shows pool instance %s %q, want stopped", id, st)
		}
		if err := s.ReplaceInstance(id, ReplaceUnhealthy); err == nil {
			t.Errorf("ReplaceInstance of pool instance %s succeeded; only instances in service are replaced", id)
		}
	}
	for _, i := range s.Instances("w") {
		addr := net.JoinHostPort(i.Address, strconv.Itoa(s.SSHPort()))
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = conn.Close()
			t.Errorf("stopped pool instance %s accepts connections at %s", i.ID, addr)
		}
	}

	began := time.Now()
	if _, err := c.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("w"), DesiredCapacity: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	var inService []string
	for _, i := range waitInService(t, s, "w", 2) {
		inService = append(inService, i.ID)
		addr := waitSSHD(t, s, i)
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
			t.Errorf("sshd of %s from the pool: %v", i.ID, err)
		} else {
			_ = conn.Close()
		}
	}
	t.Logf("two pool instances in service with sshd %s after SetDesiredCapacity (GroupSpec.WarmStart 300ms)", time.Since(began).Round(time.Millisecond))
	slices.Sort(inService)
	slices.Sort(pooled)
	if !slices.Equal(inService, pooled) {
		t.Errorf("in service %q, want the pool's instances %q", inService, pooled)
	}
	var fromPool int
	for _, a := range s.Activities("w") {
		if strings.Contains(a.Description, "from warm pool") && a.Status == "Successful" {
			fromPool++
		}
	}
	if fromPool != 2 {
		t.Errorf("%d successful launches from the warm pool, want 2: %+v", fromPool, s.Activities("w"))
	}
	refilled := waitPool(t, s, "w", "Warmed:Stopped", 2)
	for _, id := range refilled {
		if slices.Contains(pooled, id) {
			t.Errorf("refilled pool holds %s, which went into service", id)
		}
	}

	if _, err := c.asg.DeleteWarmPool(ctx, &autoscaling.DeleteWarmPoolInput{AutoScalingGroupName: aws.String("w")}); err != nil {
		t.Fatalf("DeleteWarmPool = %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		wp, err := c.asg.DescribeWarmPool(ctx, &autoscaling.DescribeWarmPoolInput{AutoScalingGroupName: aws.String("w")})
		if err != nil {
			t.Fatal(err)
		}
		if wp.WarmPoolConfiguration == nil && len(wp.Instances) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm pool still there after DeleteWarmPool: %+v", wp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := waitInService(t, s, "w", 2); len(got) != 2 {
		t.Errorf("group after DeleteWarmPool: %+v", got)
	}
}

func TestWarmPoolErrors(t *testing.T) {
	_, c := start(t, Options{}, GroupSpec{Name: "w", MaxSize: 2})
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"unknown group", func() error {
			_, err := c.asg.PutWarmPool(ctx, &autoscaling.PutWarmPoolInput{AutoScalingGroupName: aws.String("nope")})
			return err
		}, "not found"},
		{"bad pool state", func() error {
			_, err := c.asg.PutWarmPool(ctx, &autoscaling.PutWarmPoolInput{AutoScalingGroupName: aws.String("w"), PoolState: "Frozen"})
			return err
		}, "poolState"},
		{"negative min size", func() error {
			_, err := c.asg.PutWarmPool(ctx, &autoscaling.PutWarmPoolInput{AutoScalingGroupName: aws.String("w"), MinSize: aws.Int32(-1)})
			return err
		}, "minSize"},
		{"delete without a pool", func() error {
			_, err := c.asg.DeleteWarmPool(ctx, &autoscaling.DeleteWarmPoolInput{AutoScalingGroupName: aws.String("w")})
			return err
		}, "No warm pool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var apiErr smithy.APIError
			err := tt.call()
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ValidationError" || !strings.Contains(apiErr.ErrorMessage(), tt.want) {
				t.Errorf("error = %v, want a ValidationError containing %q", err, tt.want)
			}
		})
	}
	wp, err := c.asg.DescribeWarmPool(ctx, &autoscaling.DescribeWarmPoolInput{AutoScalingGroupName: aws.String("w")})
	if err != nil || wp.WarmPoolConfiguration != nil || len(wp.Instances) != 0 {
		t.Errorf("DescribeWarmPool of a group without a pool = %+v, %v; want no configuration, no instances", wp, err)
	}
}
