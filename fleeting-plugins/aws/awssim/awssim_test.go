package awssim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2instanceconnect"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
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

// waitSSHD waits until the instance's sshd accepts TCP connections: an instance is InService before.
func waitSSHD(t *testing.T, s *Server, inst InstanceInfo) string {
	t.Helper()
	addr := net.JoinHostPort(inst.Address, strconv.Itoa(s.SSHPort()))
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd of %s at %s never listened: %v", inst.ID, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	// Consistent listings, so that DescribeInstances shows the failed launch at once.
	s, c := start(t, Options{ConsistentListings: true},
		GroupSpec{Name: "protected", MaxSize: 3, ProtectFromScaleIn: true, Boot: &local.BootModel{Running: 100 * time.Millisecond}},
		GroupSpec{Name: "open", MaxSize: 3, DesiredCapacity: 2, Boot: &local.BootModel{}})
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

// TestInstanceConnect: a pushed key logs in for its OS user only and only until it expires (60 s unless
// set); a connection opened with it outlives it; the Docker socket is reachable through the connection.
func TestInstanceConnect(t *testing.T) {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if def, _ := start(t, Options{}); def.opts.KeyTTL != 60*time.Second {
		t.Errorf("default KeyTTL = %s; EC2 Instance Connect keeps a key 60s", def.opts.KeyTTL)
	}
	s, c := start(t, Options{KeyTTL: time.Second}, GroupSpec{Name: "g", MaxSize: 1, DesiredCapacity: 1, Boot: &local.BootModel{}})
	inst := waitInService(t, s, "g", 1)[0]
	addr := waitSSHD(t, s, inst)
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

	// The open connection outlives the key; a new one is refused once it expired, by authentication.
	pushedAt := time.Now()
	deadline := pushedAt.Add(10 * time.Second)
	for {
		c2, err := dial(addr, u.Username, key)
		if err != nil {
			if !strings.Contains(err.Error(), "unable to authenticate") {
				t.Errorf("a new connection with the expired key failed with %v; want the key refused", err)
			}
			t.Logf("the pushed key was refused %s after the push (KeyTTL 1s)", time.Since(pushedAt).Round(10*time.Millisecond))
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
	if sess, err := cl.NewSession(); err != nil {
		t.Errorf("a new session on the connection opened with the expired key: %v", err)
	} else {
		if out, err := sess.CombinedOutput("echo still-here"); err != nil || !strings.Contains(string(out), "still-here") {
			t.Errorf("command on the connection opened with the expired key: %q, %v", out, err)
		}
		sess.Close()
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

// groupMembers lists the group's instances as DescribeAutoScalingGroups shows them.
func groupMembers(t *testing.T, c clients, group string) map[string]string {
	t.Helper()
	out, err := c.asg.DescribeAutoScalingGroups(t.Context(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{group}})
	if err != nil || len(out.AutoScalingGroups) != 1 {
		t.Fatalf("DescribeAutoScalingGroups(%s) = %+v, %v", group, out, err)
	}
	members := map[string]string{}
	for _, i := range out.AutoScalingGroups[0].Instances {
		members[aws.ToString(i.InstanceId)] = string(i.LifecycleState) + "/" + aws.ToString(i.HealthStatus)
	}
	return members
}

// shownState is the instance's state as DescribeInstances shows it, "" when it does not.
func shownState(t *testing.T, c clients, id string) string {
	t.Helper()
	out, err := c.ec2.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{id}}}})
	if err != nil {
		t.Fatalf("DescribeInstances(%s) = %v", id, err)
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			return string(i.State.Name)
		}
	}
	return ""
}

// TestBootStages: an instance is pending, then running with its sshd refusing connections (a key can be
// pushed then), then its sshd answers, and its Docker socket only after that, in that order.
func TestBootStages(t *testing.T) {
	s, c := start(t, Options{ConsistentListings: true, DockerSocket: testenv.DockerSocket()})
	if err := s.CreateGroup(GroupSpec{Name: "bad", MaxSize: 1, Boot: &local.BootModel{SSHD: -time.Second}}); err == nil {
		t.Errorf("CreateGroup with a negative sshd stage succeeded")
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateGroup(GroupSpec{Name: "g", MaxSize: 1, DesiredCapacity: 1,
		Boot: &local.BootModel{Running: 300 * time.Millisecond, SSHD: time.Second, Docker: time.Second}}); err != nil {
		t.Fatal(err)
	}
	var inst InstanceInfo
	testrig.WaitFor(t, 20*time.Second, "the instance to launch", func() bool {
		in := s.Instances("g")
		if len(in) == 1 {
			inst = in[0]
		}
		return len(in) == 1
	})
	addr := net.JoinHostPort(inst.Address, strconv.Itoa(s.SSHPort()))
	listening := func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.Close()
		}
		return err == nil
	}
	start := time.Now()
	var key []byte
	// What the two services show, each in the order seen (the two calls are not one snapshot).
	var lifecycles, states []string
	note := func(seen *[]string, st string) {
		if len(*seen) == 0 || (*seen)[len(*seen)-1] != st {
			*seen = append(*seen, st)
			t.Logf("%6s: %s, sshd refusing connections", time.Since(start).Round(time.Millisecond), st)
		}
	}
	for !listening() {
		lifecycle, state := groupMembers(t, c, "g")[inst.ID], shownState(t, c, inst.ID)
		note(&lifecycles, lifecycle)
		note(&states, state)
		if state == "running" && key == nil {
			var pub string
			if key, pub, err = local.GenerateKey(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.eic.SendSSHPublicKey(t.Context(), &ec2instanceconnect.SendSSHPublicKeyInput{
				InstanceId: aws.String(inst.ID), InstanceOSUser: aws.String(u.Username), SSHPublicKey: aws.String(pub),
			}); err != nil {
				t.Errorf("SendSSHPublicKey while sshd is not up yet: %v", err)
			}
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("sshd never listened; seen %q and %q", lifecycles, states)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%6s: sshd listening", time.Since(start).Round(time.Millisecond))
	if want := []string{"Pending/Healthy", "InService/Healthy"}; !slices.Equal(lifecycles, want) {
		t.Errorf("lifecycle states before sshd listened: %q; want %q", lifecycles, want)
	}
	if want := []string{"pending", "running"}; !slices.Equal(states, want) {
		t.Fatalf("EC2 states before sshd listened: %q; want %q", states, want)
	}
	cl, err := dial(addr, u.Username, key)
	if err != nil {
		t.Fatalf("ssh with the key pushed before sshd started: %v", err)
	}
	defer cl.Close()

	testenv.RequireDocker(t)
	ping := func() error {
		conn, err := cl.Dial("unix", testenv.DockerSocket())
		if err != nil {
			return err
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
		b, _ := io.ReadAll(conn)
		if !strings.HasPrefix(string(b), "HTTP/1.0 200") && !strings.HasPrefix(string(b), "HTTP/1.1 200") {
			return fmt.Errorf("Docker /_ping: %q", b)
		}
		return nil
	}
	if err := local.DockerGateAvailable(); err != nil {
		t.Logf("Docker answers with sshd here (%v); only checking that it answers", err)
	} else if err := ping(); err == nil {
		t.Errorf("Docker answered as soon as sshd did; want it after the Docker stage")
	}
	testrig.WaitFor(t, 20*time.Second, "Docker to answer through the instance", func() bool { return ping() == nil })
	t.Logf("%6s: Docker answering", time.Since(start).Round(time.Millisecond))
}

// TestEventualConsistency: a new instance is missing from every listing for at least half the listing
// delay, and shows in all of them once the delay has passed; a terminated one leaves its group and is
// still shown by DescribeInstances, shutting-down and then terminated, before EC2 forgets it.
func TestEventualConsistency(t *testing.T) {
	const delay = time.Second
	// Each stage of a termination lasts long enough for polls to see it.
	s, c := start(t, Options{ListingDelay: delay, TerminateDelay: 500 * time.Millisecond, ShuttingDownFor: 500 * time.Millisecond, TerminatedFor: 500 * time.Millisecond},
		GroupSpec{Name: "g", MaxSize: 1, DesiredCapacity: 1, Boot: &local.BootModel{}})
	var id string
	testrig.WaitFor(t, 20*time.Second, "the instance to launch", func() bool {
		for _, in := range s.Instances("g") {
			id = in.ID
		}
		return id != ""
	})
	launched := time.Now()
	ctx := t.Context()
	_, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidInstanceID.NotFound" {
		t.Errorf("DescribeInstances(%s) just after launch = %v; want InvalidInstanceID.NotFound", id, err)
	}
	asi, err := c.asg.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{})
	if err != nil || len(asi.AutoScalingInstances) != 0 {
		t.Errorf("DescribeAutoScalingInstances just after launch = %+v, %v; want no instance", asi, err)
	}
	if m := groupMembers(t, c, "g"); len(m) != 0 || shownState(t, c, id) != "" {
		t.Errorf("just after launch the group lists %v and EC2 shows %q; want neither to show %s yet", m, shownState(t, c, id), id)
	}
	if time.Since(launched) > delay/2 {
		t.Logf("the checks above took %s, beyond half the listing delay; they proved less", time.Since(launched))
	}
	// Past the delay every listing shows it.
	testrig.WaitFor(t, 20*time.Second, "the listing delay to pass", func() bool { return time.Since(launched) > delay })
	for range 10 {
		if _, ok := groupMembers(t, c, "g")[id]; !ok || shownState(t, c, id) != "running" {
			t.Fatalf("%s after launch, %s is still missing from a listing", time.Since(launched), id)
		}
	}

	if _, err := c.asg.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(id), ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	testrig.WaitFor(t, 20*time.Second, "EC2 to forget the instance", func() bool {
		_, inGroup := groupMembers(t, c, "g")[id]
		st := fmt.Sprintf("in group %t, %s", inGroup, shownState(t, c, id))
		if len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
		}
		return st == "in group false, "
	})
	want := []string{"in group true, shutting-down", "in group false, shutting-down", "in group false, terminated", "in group false, "}
	if !slices.Equal(seen, want) {
		t.Errorf("after termination: %q; want %q", seen, want)
	}
}

// TestReplaceInstance: the group replaces an unhealthy instance, and rebalances one to another zone, at
// the same desired capacity, recording why; it does not rebalance a group that suspended AZRebalance.
func TestReplaceInstance(t *testing.T) {
	// Terminating for a second: long enough to be seen so.
	s, c := start(t, Options{ConsistentListings: true, TerminateDelay: time.Second},
		GroupSpec{Name: "g", MaxSize: 2, DesiredCapacity: 2, AZs: []string{"us-east-1a", "us-east-1b"}, Boot: &local.BootModel{}},
		GroupSpec{Name: "pinned", MaxSize: 1, DesiredCapacity: 1, SuspendAZRebalance: true, AZs: []string{"us-east-1a", "us-east-1b"}, Boot: &local.BootModel{}})
	old := waitInService(t, s, "g", 2)
	pinned := waitInService(t, s, "pinned", 1)
	if err := s.ReplaceInstance(pinned[0].ID, ReplaceAZRebalance); err == nil {
		t.Errorf("ReplaceInstance(%s, %s) in a group with AZRebalance suspended succeeded", pinned[0].ID, ReplaceAZRebalance)
	}
	if err := s.ReplaceInstance(old[0].ID, "cosmic-rays"); err == nil {
		t.Errorf("ReplaceInstance with an unknown reason succeeded")
	}
	if err := s.ReplaceInstance(old[0].ID, ReplaceUnhealthy); err != nil {
		t.Fatal(err)
	}
	if st := groupMembers(t, c, "g")[old[0].ID]; st != "Terminating/Unhealthy" {
		t.Errorf("instance replaced as unhealthy is listed %q; want Terminating/Unhealthy", st)
	}
	if err := s.ReplaceInstance(old[0].ID, ReplaceUnhealthy); err == nil {
		t.Errorf("replacing an instance already terminating succeeded")
	}
	if err := s.ReplaceInstance(old[1].ID, ReplaceAZRebalance); err != nil {
		t.Fatal(err)
	}
	now := waitInService(t, s, "g", 2)
	for _, in := range now {
		if in.ID == old[0].ID || in.ID == old[1].ID {
			t.Errorf("replaced instance %s is still in service", in.ID)
		}
	}
	if d := s.DesiredCapacity("g"); d != 2 {
		t.Errorf("desired capacity after replacements = %d; want 2", d)
	}
	out, err := c.asg.DescribeScalingActivities(t.Context(), &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: aws.String("g")})
	if err != nil {
		t.Fatal(err)
	}
	causes := map[string]string{}
	launches := 0
	for _, a := range out.Activities {
		desc := aws.ToString(a.Description)
		if id, ok := strings.CutPrefix(desc, "Terminating EC2 instance: "); ok {
			causes[id] = aws.ToString(a.Cause)
		}
		if strings.HasPrefix(desc, "Launching a new EC2 instance: ") && a.StatusCode == "Successful" {
			launches++
		}
	}
	if !strings.Contains(causes[old[0].ID], "status checks failure") || !strings.Contains(causes[old[1].ID], "Availability Zones") {
		t.Errorf("termination causes %q; want a status check failure for %s and a rebalance for %s", causes, old[0].ID, old[1].ID)
	}
	if launches != 4 {
		t.Errorf("%d successful launch activities; want 4 (2 at creation, 2 replacements): %+v", launches, out.Activities)
	}
}

// TestInsufficientCapacity: with EC2 out of capacity SetDesiredCapacity still succeeds, no instance
// appears, and each launch the group tries fails with a scaling activity saying why; once capacity is
// back the group reaches its desired capacity.
func TestInsufficientCapacity(t *testing.T) {
	s, c := start(t, Options{ConsistentListings: true, LaunchRetryDelay: 200 * time.Millisecond}, GroupSpec{Name: "g", MaxSize: 2, Boot: &local.BootModel{}})
	s.SetFaults(Faults{InsufficientCapacityRate: 1})
	if _, err := c.asg.SetDesiredCapacity(t.Context(), &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("g"), DesiredCapacity: aws.Int32(2)}); err != nil {
		t.Fatalf("SetDesiredCapacity without capacity = %v; want it accepted, as AWS does", err)
	}
	failed := func() []asgtypes.Activity {
		out, err := c.asg.DescribeScalingActivities(t.Context(), &autoscaling.DescribeScalingActivitiesInput{AutoScalingGroupName: aws.String("g")})
		if err != nil {
			t.Fatal(err)
		}
		var f []asgtypes.Activity
		for _, a := range out.Activities {
			if a.StatusCode == asgtypes.ScalingActivityStatusCodeFailed {
				f = append(f, a)
			}
		}
		return f
	}
	testrig.WaitFor(t, 20*time.Second, "the group to retry a failed launch", func() bool { return len(failed()) >= 2 })
	f := failed()
	if msg := aws.ToString(f[0].StatusMessage); !strings.Contains(msg, "do not have sufficient t3.micro capacity") || f[0].EndTime == nil {
		t.Errorf("failed launch activity %+v; want it ended, saying capacity was insufficient", f[0])
	}
	if in := s.Instances("g"); len(in) != 0 || s.DesiredCapacity("g") != 2 {
		t.Errorf("without capacity the group has %+v at desired %d; want no instance at desired 2", in, s.DesiredCapacity("g"))
	}
	s.SetFaults(Faults{})
	waitInService(t, s, "g", 2)
	t.Logf("%d launches failed before capacity came back", len(failed()))
}
