package aws

import (
	"context"
	"fmt"
	"testing"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/fleetingtest"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// AMIs from moto's built-in catalogue: Amazon Linux, and Windows Server.
const (
	motoLinuxAMI   = "ami-760aaa0f"
	motoWindowsAMI = "ami-12c6146b"
)

// startMoto starts moto_server for this test and points the SDK's environment at it. Its instances'
// addresses (10.x, 172.31.x, 54.x) are never dialed: moto serves API semantics only.
func startMoto(t *testing.T) *testenv.Moto {
	t.Helper()
	m := testenv.StartMoto(t)
	isolateAWS(t, m.URL)
	return m
}

// sdkConfig is a client configuration for moto or awssim: one attempt, because moto answers some
// errors with HTML 500 pages the SDK would otherwise retry.
func sdkConfig(t *testing.T) awssdk.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion("us-east-1"), config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// createMotoGroup sets up a launch template and a group through the SDK, as deploy/aws's template does.
func createMotoGroup(ctx context.Context, cfg awssdk.Config, name, ami string, maxSize, desired int) error {
	ec2c, asg := ec2.NewFromConfig(cfg), autoscaling.NewFromConfig(cfg)
	if _, err := ec2c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: awssdk.String(name),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: awssdk.String(ami), InstanceType: ec2types.InstanceTypeT3Micro},
	}); err != nil {
		return fmt.Errorf("CreateLaunchTemplate: %w", err)
	}
	if _, err := asg.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName:             awssdk.String(name),
		LaunchTemplate:                   &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: awssdk.String(name), Version: awssdk.String("$Latest")},
		MinSize:                          awssdk.Int32(0),
		MaxSize:                          awssdk.Int32(int32(maxSize)),
		DesiredCapacity:                  awssdk.Int32(int32(desired)),
		AvailabilityZones:                []string{"us-east-1a"},
		NewInstancesProtectedFromScaleIn: awssdk.Bool(true),
	}); err != nil {
		return fmt.Errorf("CreateAutoScalingGroup: %w", err)
	}
	if _, err := asg.SuspendProcesses(ctx, &autoscaling.SuspendProcessesInput{
		AutoScalingGroupName: awssdk.String(name), ScalingProcesses: []string{"AZRebalance"},
	}); err != nil {
		return fmt.Errorf("SuspendProcesses: %w", err)
	}
	return nil
}

// TestConformanceMoto runs the conformance suite's API parts against moto.
func TestConformanceMoto(t *testing.T) {
	m := startMoto(t)
	cfg := sdkConfig(t)
	fleetingtest.RunAPI(t, func(t *testing.T) fleeting.InstanceGroup {
		m.Reset(t)
		if err := createMotoGroup(t.Context(), cfg, "runners", motoLinuxAMI, 3, 0); err != nil {
			t.Fatalf("set up moto: %v", err)
		}
		return &InstanceGroup{Name: "runners", Region: "us-east-1", maxAttempts: 1}
	}, fleetingtest.Config{})
}

// TestConnectInfoMoto: what ConnectInfo extracts from moto's instances, Linux and Windows, without
// dialing them.
func TestConnectInfoMoto(t *testing.T) {
	m := startMoto(t)
	cfg := sdkConfig(t)
	tests := []struct {
		name, ami                string
		os, arch, protocol, user string
		wantKey                  bool
	}{
		{name: "linux", ami: motoLinuxAMI, os: "linux", arch: "amd64", protocol: fleeting.ProtocolSSH, user: "ec2-user", wantKey: true},
		{name: "windows", ami: motoWindowsAMI, os: "windows", arch: "amd64", protocol: fleeting.ProtocolWinRM, user: "Administrator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.Reset(t)
			if err := createMotoGroup(t.Context(), cfg, "runners", tt.ami, 2, 1); err != nil {
				t.Fatalf("set up moto: %v", err)
			}
			g := &InstanceGroup{Name: "runners", Region: "us-east-1", maxAttempts: 1}
			if _, err := g.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
				t.Fatalf("Init = %v", err)
			}
			ids := waitRunning(t, g, 1)
			info, err := g.ConnectInfo(t.Context(), ids[0])
			if err != nil {
				t.Fatalf("ConnectInfo = %v", err)
			}
			if info.OS != tt.os || info.Arch != tt.arch || info.Protocol != tt.protocol || info.Username != tt.user {
				t.Errorf("ConnectInfo = %s/%s %s as %s; want %s/%s %s as %s", info.OS, info.Arch, info.Protocol, info.Username, tt.os, tt.arch, tt.protocol, tt.user)
			}
			if info.InternalAddr == "" || info.ExternalAddr == "" || info.InternalAddr == info.ExternalAddr {
				t.Errorf("addresses internal %q external %q; want moto's private and public IPs", info.InternalAddr, info.ExternalAddr)
			}
			if got := len(info.Key) > 0 && info.Expires != nil; got != tt.wantKey {
				t.Errorf("pushed key present = %v; want %v", got, tt.wantKey)
			}
		})
	}
}

// TestInterruptionsMoto: moto accepts DescribeSpotInstanceRequests with the instance-id filter, and its
// group instances are on-demand (no spot request), so none has a notice. moto cannot issue a spot
// interruption notice at all; awssim covers that (TestInterruptions).
func TestInterruptionsMoto(t *testing.T) {
	startMoto(t)
	if err := createMotoGroup(t.Context(), sdkConfig(t), "spot", motoLinuxAMI, 2, 2); err != nil {
		t.Fatalf("set up moto: %v", err)
	}
	g := &InstanceGroup{Name: "spot", Region: "us-east-1", maxAttempts: 1}
	if _, err := g.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
		t.Fatalf("Init = %v", err)
	}
	waitRunning(t, g, 2)
	if got, err := g.Interruptions(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("Interruptions on moto = %+v, %v; want none, no error", got, err)
	}
}
