package awssim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2instanceconnect"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

type clients struct {
	asg *autoscaling.Client
	ec2 *ec2.Client
	eic *ec2instanceconnect.Client
}

func start(t *testing.T, opts Options, groups ...GroupSpec) (*Server, clients) {
	t.Helper()
	testenv.RequireSSHD(t)
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	for _, g := range groups {
		if err := s.CreateGroup(g); err != nil {
			t.Fatal(err)
		}
	}
	cfg := aws.Config{
		Region:           "us-east-1",
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDSIM", "secret", ""),
		BaseEndpoint:     aws.String(s.URL()),
		RetryMaxAttempts: 1,
	}
	return s, clients{autoscaling.NewFromConfig(cfg), ec2.NewFromConfig(cfg), ec2instanceconnect.NewFromConfig(cfg)}
}

func waitInService(t *testing.T, s *Server, group string, n int) []InstanceInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var in []InstanceInfo
		for _, i := range s.Instances(group) {
			if i.LifecycleState == lifecycleInService {
				in = append(in, i)
			}
		}
		if len(in) == n {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: %d of %d instances in service: %+v", group, len(in), n, s.Instances(group))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestErrorShapes: each service's errors decode in the SDK to AWS's codes, with a request ID.
func TestErrorShapes(t *testing.T) {
	s, c := start(t, Options{}, GroupSpec{Name: "g", MaxSize: 2})
	ctx := t.Context()
	tests := []struct {
		name   string
		faults Faults
		call   func() error
		code   string
		status int
	}{
		{"desired above max", Faults{}, func() error {
			_, err := c.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("g"), DesiredCapacity: aws.Int32(3)})
			return err
		}, "ValidationError", 400},
		{"unknown group", Faults{}, func() error {
			_, err := c.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("nope"), DesiredCapacity: aws.Int32(1)})
			return err
		}, "ValidationError", 400},
		{"terminate unknown instance", Faults{}, func() error {
			_, err := c.asg.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String("i-0123456789abcdef0"), ShouldDecrementDesiredCapacity: aws.Bool(true)})
			return err
		}, "ValidationError", 400},
		{"autoscaling throttled", Faults{ThrottleRate: 1}, func() error {
			_, err := c.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
			return err
		}, "Throttling", 400},
		{"ec2 throttled", Faults{ThrottleRate: 1}, func() error {
			_, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
			return err
		}, "RequestLimitExceeded", 503},
		{"instance connect throttled", Faults{ThrottleRate: 1}, func() error {
			_, err := c.eic.SendSSHPublicKey(ctx, &ec2instanceconnect.SendSSHPublicKeyInput{InstanceId: aws.String("i-0123456789abcdef0"), InstanceOSUser: aws.String("ec2-user"), SSHPublicKey: aws.String("x")})
			return err
		}, "ThrottlingException", 400},
		{"autoscaling denied", Faults{AccessDenied: []string{"DescribePolicies"}}, func() error {
			_, err := c.asg.DescribePolicies(ctx, &autoscaling.DescribePoliciesInput{})
			return err
		}, "AccessDenied", 403},
		{"ec2 denied", Faults{AccessDenied: []string{"DescribeInstances"}}, func() error {
			_, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
			return err
		}, "UnauthorizedOperation", 403},
		{"instance connect denied", Faults{AccessDenied: []string{"SendSSHPublicKey"}}, func() error {
			_, err := c.eic.SendSSHPublicKey(ctx, &ec2instanceconnect.SendSSHPublicKeyInput{InstanceId: aws.String("i-0123456789abcdef0"), InstanceOSUser: aws.String("ec2-user"), SSHPublicKey: aws.String("x")})
			return err
		}, "AccessDeniedException", 403},
		{"malformed instance id", Faults{}, func() error {
			_, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"bogus"}})
			return err
		}, "InvalidInstanceID.Malformed", 400},
		{"unknown instance id", Faults{}, func() error {
			_, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
			return err
		}, "InvalidInstanceID.NotFound", 400},
		{"key for unknown instance", Faults{}, func() error {
			_, pub, _ := local.GenerateKey()
			_, err := c.eic.SendSSHPublicKey(ctx, &ec2instanceconnect.SendSSHPublicKeyInput{InstanceId: aws.String("i-0123456789abcdef0"), InstanceOSUser: aws.String("ec2-user"), SSHPublicKey: aws.String(pub)})
			return err
		}, "EC2InstanceNotFoundException", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetFaults(tt.faults)
			err := tt.call()
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.code {
				t.Fatalf("error = %v; want API error %s", err, tt.code)
			}
			var respErr *awshttp.ResponseError
			if !errors.As(err, &respErr) || respErr.HTTPStatusCode() != tt.status || respErr.ServiceRequestID() == "" {
				t.Errorf("error %v: want HTTP %d with a request ID", err, tt.status)
			}
		})
	}
}

// TestScaling: the group launches to its desired capacity through Pending, replaces failed launches and
// instances killed from outside, and scales in only unprotected instances.
func TestScaling(t *testing.T) {
	s, c := start(t, Options{},
		GroupSpec{Name: "protected", MaxSize: 3, ProtectFromScaleIn: true, BootDelay: 100 * time.Millisecond},
		GroupSpec{Name: "open", MaxSize: 3, DesiredCapacity: 2})
	ctx := t.Context()
	waitInService(t, s, "open", 2)
	s.SetFaults(Faults{LaunchFailures: 1})
	if _, err := c.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("protected"), DesiredCapacity: aws.Int32(2), HonorCooldown: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	in := waitInService(t, s, "protected", 2)
	out, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:aws:autoscaling:groupName"), Values: []string{"protected"}},
		{Name: aws.String("instance-state-name"), Values: []string{"shutting-down", "terminated"}},
	}})
	if err != nil || len(out.Reservations) != 1 || out.Reservations[0].Instances[0].StateReason == nil ||
		aws.ToString(out.Reservations[0].Instances[0].StateReason.Code) != "Server.InternalError" {
		t.Errorf("after one launch failure, DescribeInstances of failed instances = %+v, %v; want one with Server.InternalError", out, err)
	}
	if err := s.TerminateFromOutside(in[0].ID); err != nil {
		t.Fatal(err)
	}
	after := waitInService(t, s, "protected", 2)
	for _, i := range after {
		if i.ID == in[0].ID {
			t.Errorf("instance %s terminated from outside is still in service", i.ID)
		}
	}
	if d := s.DesiredCapacity("protected"); d != 2 {
		t.Errorf("desired capacity after an outside termination = %d; want 2", d)
	}

	for _, g := range []string{"protected", "open"} {
		if _, err := c.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String(g), DesiredCapacity: aws.Int32(0)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Instances("open")) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := s.Instances("open"); len(got) != 0 {
		t.Errorf("unprotected group after desired 0: %+v; want empty", got)
	}
	kept := s.Instances("protected")
	if len(kept) != 2 {
		t.Fatalf("protected group after desired 0: %+v; want its 2 instances kept", kept)
	}
	if _, err := c.asg.SetInstanceProtection(ctx, &autoscaling.SetInstanceProtectionInput{
		AutoScalingGroupName: aws.String("protected"), InstanceIds: []string{kept[0].ID, kept[1].ID}, ProtectedFromScaleIn: aws.Bool(false),
	}); err != nil {
		t.Fatalf("SetInstanceProtection = %v", err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for len(s.Instances("protected")) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := s.Instances("protected"); len(got) != 0 {
		t.Errorf("group after its instances lost protection at desired 0: %+v; want empty", got)
	}
}

func dial(addr, username string, key []byte) (*ssh.Client, error) {
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return nil, err
	}
	return ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User: username, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
	})
}

// TestInstanceConnect: a pushed key logs in for its OS user only and only until it expires; the Docker
// socket is reachable through the connection.
func TestInstanceConnect(t *testing.T) {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s, c := start(t, Options{KeyTTL: time.Second}, GroupSpec{Name: "g", MaxSize: 1, DesiredCapacity: 1})
	inst := waitInService(t, s, "g", 1)[0]
	addr := net.JoinHostPort(inst.Address, strconv.Itoa(s.SSHPort()))
	push := func(osUser string) []byte {
		key, pub, err := local.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.eic.SendSSHPublicKey(t.Context(), &ec2instanceconnect.SendSSHPublicKeyInput{
			InstanceId: aws.String(inst.ID), InstanceOSUser: aws.String(osUser), SSHPublicKey: aws.String(pub),
		})
		if err != nil || !out.Success {
			t.Fatalf("SendSSHPublicKey = %+v, %v", out, err)
		}
		return key
	}

	other := push("fleetrunner-nobody")
	if cl, err := dial(addr, u.Username, other); err == nil {
		cl.Close()
		t.Errorf("a key pushed for another OS user logged in as %s", u.Username)
	}

	key := push(u.Username)
	cl, err := dial(addr, u.Username, key)
	if err != nil {
		t.Fatalf("ssh with the pushed key: %v", err)
	}
	t.Run("docker socket", func(t *testing.T) {
		testenv.RequireDocker(t)
		conn, err := cl.Dial("unix", testenv.DockerSocket())
		if err != nil {
			t.Fatalf("forward the Docker socket: %v", err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
		b, _ := io.ReadAll(conn)
		if !strings.HasPrefix(string(b), "HTTP/1.0 200") && !strings.HasPrefix(string(b), "HTTP/1.1 200") {
			t.Errorf("Docker /_ping through the instance: %q", b)
		}
	})

	// The open connection outlives the key; a new one is refused once it expired.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c2, err := dial(addr, u.Username, key)
		if err != nil {
			break
		}
		c2.Close()
		if time.Now().After(deadline) {
			t.Fatalf("pushed key still accepted 10s after its 1s lifetime")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, _, err := cl.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Errorf("connection opened with the key died when the key expired: %v", err)
	}
	cl.Close()

	pushes := s.KeyPushes()
	if len(pushes) != 2 || pushes[1].InstanceID != inst.ID || pushes[1].Group != "g" || pushes[1].User != u.Username || pushes[1].Err != "" {
		t.Errorf("KeyPushes = %+v", pushes)
	}
	if s.Calls()["SendSSHPublicKey"] != 2 {
		t.Errorf("Calls = %v; want 2 SendSSHPublicKey", s.Calls())
	}
}

// TestUnknownAction: an action the simulator does not speak gets AWS's InvalidAction, not a crash.
func TestUnknownAction(t *testing.T) {
	s, _ := start(t, Options{})
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, s.URL(), strings.NewReader("Action=CreateAutoScalingGroup&Version=2011-01-01"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "<Code>InvalidAction</Code>") || !strings.Contains(string(b), "<Type>Sender</Type>") {
		t.Errorf("unknown action: %d %s", resp.StatusCode, b)
	}
}
