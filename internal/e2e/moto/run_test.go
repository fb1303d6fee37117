package e2emoto_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// The fleet: an empty group that may grow to maxInstances of one slot each and shrinks back to nothing
// idleTime after the jobs are done.
const (
	groupName    = "fleetrunner-moto"
	region       = "us-east-1"
	maxInstances = 3
	capacity     = 1
	idleTime     = 5 * time.Second
	// motoAMI is Amazon Linux from moto's built-in catalogue.
	motoAMI = "ami-760aaa0f"
)

// Bounds of the waits, so that a broken runner fails the test instead of hanging it.
const (
	pipelineWithin = time.Minute
	scaleInWithin  = idleTime + 30*time.Second
	stopWithin     = time.Minute
)

// vpcCIDR is the loopback VPC. Each run picks one /24 of it for the group's subnet, so that a second
// run of this package on the machine (another checkout) does not meet this one's sshds on port 22.
const vpcCIDR = "127.0.0.0/16"

var subnetCIDR = fmt.Sprintf("127.0.%d.0/24", 1+rand.IntN(254))

// pipeline is two stages: three jobs in parallel take the group to its maximum, and two more run on
// the instances the first ones leave idle.
var pipeline = []struct{ stage, name string }{
	{"build", "build-1"}, {"build", "build-2"}, {"build", "build-3"},
	{"test", "test-1"}, {"test", "test-2"},
}

// connectedRE matches the job log line naming the instance a job ran on.
var connectedRE = regexp.MustCompile(`Instance (i-[0-9a-f]+) connected`)

// TestRunOnMoto runs `fleetrunner run`, the real binary, with plugin = "aws" on an Auto Scaling group
// that moto keeps and whose instances the backer makes real, once per boot delay (moto reports an
// instance running at once; its sshd answers that much later). A five-job pipeline succeeds, the group
// grows from 0 and returns to 0 idle_time after the last job, and after SIGQUIT nothing of the jobs or
// the instances is left.
func TestRunOnMoto(t *testing.T) {
	testenv.RequireSSHD(t)
	testenv.RequireRoot(t, "sshd on port 22 of each instance's address, as on EC2,")
	cli, image := testrig.Engine(t)
	moto := testenv.StartMoto(t)
	bin := testrig.BuildFleetrunner(t)
	keyPath, authorizedKeys := clientKey(t)
	hideDocker := testenv.DockerSocket()
	if err := local.DockerGateAvailable(); err != nil {
		t.Logf("Docker answers as soon as sshd does: %v", err)
		hideDocker = ""
	}

	for _, b := range []boot{
		{},
		{SSHD: 3 * time.Second, Docker: 2 * time.Second},
		{SSHD: 15 * time.Second},
	} {
		t.Run(fmt.Sprintf("sshd_after_%s", b.SSHD), func(t *testing.T) {
			moto.Reset(t)
			w := newWorld(t, moto.URL)
			gl, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = gl.Close() })
			_, token := gl.CreateRunner(gitlabsim.RunnerOptions{Description: "moto e2e " + t.Name()})
			t.Cleanup(func() { testrig.RemoveJobLeftovers(t, cli, token, false) })
			hide := hideDocker
			if b.Docker == 0 {
				hide = ""
			}
			bk := startBacker(t, w.ec2, authorizedKeys, b, hide)

			dir := t.TempDir()
			configPath := filepath.Join(dir, "config.toml")
			runnerConfig(t, configPath, gl.URL(), token, image, keyPath)
			r := startRunner(t, bin, configPath, runnerEnv(moto.URL, dir))

			var specs []gitlabsim.JobSpec
			for _, j := range pipeline {
				specs = append(specs, gitlabsim.JobSpec{Name: j.name, Stage: j.stage, Image: image,
					Script: []string{"echo job $CI_JOB_NAME", "sleep 1"}})
			}
			queued := time.Now()
			p, err := gl.CreatePipeline(specs)
			if err != nil {
				t.Fatal(err)
			}
			firstRun := waitPipeline(t, gl, p, bk, r, pipelineWithin+b.SSHD+b.Docker)

			perInstance := map[string]int{}
			var failed []gitlabsim.JobSnapshot
			for _, id := range p.JobIDs {
				snap, _ := gl.Job(id)
				if snap.Status != gitlabsim.StatusSuccess {
					failed = append(failed, snap)
				}
				if on := connectedRE.FindAllSubmatch(snap.Trace, -1); len(on) == 1 {
					perInstance[string(on[0][1])]++
				} else if snap.Status == gitlabsim.StatusSuccess {
					t.Errorf("job %s: its log names %d instances, want one", snap.Name, len(on))
				}
			}
			firstJob := "never"
			if !firstRun.IsZero() {
				firstJob = firstRun.Sub(queued).Round(100 * time.Millisecond).String()
			}
			launched := bk.launchedIDs()
			// The first figure is as fine as gitlabsim's trace update interval (1 s).
			t.Logf("boot: sshd %s after running, Docker %s later: first job queued → first instance running a job %s; "+
				"%d instances launched for %d jobs (%.2f launches per job); jobs per instance %v; launched but ran no job: %v",
				b.SSHD, b.Docker, firstJob, len(launched), len(p.JobIDs), float64(len(launched))/float64(len(p.JobIDs)),
				perInstance, ranNothing(launched, perInstance))
			for _, snap := range failed {
				t.Errorf("job %s: %s %s; trace:\n%s", snap.Name, snap.Status, snap.FailureReason, snap.Trace)
			}
			if t.Failed() {
				t.FailNow()
			}

			testrig.WaitFor(t, scaleInWithin, "the group to return to 0 instances", func() bool {
				bk.check(t)
				desired, instances := w.groupSize(t)
				return desired == 0 && instances == 0
			})
			testrig.WaitFor(t, 10*time.Second, "the backer to stop every instance's sshd", func() bool {
				bk.check(t)
				return len(bk.alive()) == 0
			})
			if err := r.stop(syscall.SIGQUIT, stopWithin); err != nil {
				t.Errorf("SIGQUIT: %v", err)
			}
			if left := testrig.JobLeftovers(t, cli, token); len(left) > 0 {
				t.Errorf("the jobs left on the engine: %v", left)
			}
			bk.check(t)

			launched = bk.launchedIDs()
			for id := range perInstance {
				if !slices.Contains(launched, id) {
					t.Errorf("a job ran on instance %s, which moto never listed", id)
				}
			}
			// Three jobs at once on an empty group: each of the three instances is asked for by a job
			// that waits for it, so none is launched for nothing when nothing is broken.
			if idle := ranNothing(launched, perInstance); len(idle) > 0 {
				t.Errorf("instances %v were launched and removed without running a job", idle)
			}
		})
	}
}

// ranNothing lists the launched instances no job ran on.
func ranNothing(launched []string, perInstance map[string]int) []string {
	var idle []string
	for _, id := range launched {
		if perInstance[id] == 0 {
			idle = append(idle, id)
		}
	}
	return idle
}

// clientKey writes the rig's client key pair: the private key for connector_config key_path and the
// authorized_keys file every instance's sshd accepts it from.
func clientKey(t *testing.T) (keyPath, authorizedKeys string) {
	priv, pub, err := local.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPath, authorizedKeys = filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(authorizedKeys, []byte(pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return keyPath, authorizedKeys
}

// world is moto with a loopback VPC and the group launched into it.
type world struct {
	ec2 *ec2.Client
	asg *autoscaling.Client
}

// sdkConfig points the SDK at moto. It is a literal, not LoadDefaultConfig, so that nothing in this
// machine's environment (AWS_ENDPOINT_URL, profiles) redirects the rig's own calls.
func sdkConfig(motoURL string) awssdk.Config {
	return awssdk.Config{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider("AKIAFLEETRUNNERMOTO", "fleetrunner-moto-secret", ""),
		BaseEndpoint: awssdk.String(motoURL),
		// moto answers some errors with HTML 500 pages, which the SDK would retry.
		RetryMaxAttempts: 1,
	}
}

// newWorld sets up the group as deploy/aws does (empty, new instances protected from scale-in), in a
// subnet of the loopback VPC so that its instances get 127.0.x.y addresses.
func newWorld(t *testing.T, motoURL string) *world {
	t.Helper()
	cfg := sdkConfig(motoURL)
	w := &world{ec2: ec2.NewFromConfig(cfg), asg: autoscaling.NewFromConfig(cfg)}
	ctx := t.Context()
	vpc, err := w.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: awssdk.String(vpcCIDR)})
	if err != nil {
		t.Fatalf("CreateVpc: %v", err)
	}
	sub, err := w.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: awssdk.String(subnetCIDR),
		AvailabilityZone: awssdk.String(region + "a")})
	if err != nil {
		t.Fatalf("CreateSubnet: %v", err)
	}
	if _, err := w.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: awssdk.String(groupName),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: awssdk.String(motoAMI), InstanceType: ec2types.InstanceTypeT3Micro},
	}); err != nil {
		t.Fatalf("CreateLaunchTemplate: %v", err)
	}
	if _, err := w.asg.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName:             awssdk.String(groupName),
		LaunchTemplate:                   &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: awssdk.String(groupName), Version: awssdk.String("$Latest")},
		MinSize:                          awssdk.Int32(0),
		MaxSize:                          awssdk.Int32(maxInstances),
		DesiredCapacity:                  awssdk.Int32(0),
		VPCZoneIdentifier:                sub.Subnet.SubnetId,
		NewInstancesProtectedFromScaleIn: awssdk.Bool(true),
	}); err != nil {
		t.Fatalf("CreateAutoScalingGroup: %v", err)
	}
	if desired, instances := w.groupSize(t); desired != 0 || instances != 0 {
		t.Fatalf("the new group has desired capacity %d and %d instances, want an empty group", desired, instances)
	}
	return w
}

// groupSize is the group's desired capacity and instance count as DescribeAutoScalingGroups reports them.
func (w *world) groupSize(t *testing.T) (desired, instances int) {
	t.Helper()
	out, err := w.asg.DescribeAutoScalingGroups(t.Context(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{groupName}})
	if err != nil {
		t.Fatalf("DescribeAutoScalingGroups: %v", err)
	}
	if len(out.AutoScalingGroups) != 1 {
		t.Fatalf("DescribeAutoScalingGroups lists %d groups named %s, want 1", len(out.AutoScalingGroups), groupName)
	}
	g := out.AutoScalingGroups[0]
	return int(awssdk.ToInt32(g.DesiredCapacity)), len(g.Instances)
}

// runnerConfig is the config.toml an operator writes for docker-autoscaler on this group with a key of
// their own on the image (use_static_credentials, so no EC2 Instance Connect), job containers on the
// host network to reach gitlabsim on loopback.
func runnerConfig(t *testing.T, path, url, token, image, keyPath string) {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	preemptive := false
	cfg := &config.Config{
		Concurrent:      capacity * maxInstances,
		CheckInterval:   1,
		ShutdownTimeout: 30,
		Runners: []*config.RunnerConfig{{
			Name:               "moto-e2e",
			RunnerCredentials:  config.RunnerCredentials{URL: url, Token: token},
			Executor:           config.ExecutorDockerAutoscaler,
			RequestConcurrency: capacity * maxInstances,
			Docker: &config.DockerConfig{
				Image:       image,
				Host:        "unix://" + testenv.DockerSocket(),
				PullPolicy:  config.StringOrSlice{"if-not-present"},
				NetworkMode: "host",
			},
			Autoscaler: &config.AutoscalerConfig{
				Plugin:                      "aws",
				CapacityPerInstance:         capacity,
				MaxInstances:                maxInstances,
				UpdateInterval:              time.Second,
				UpdateIntervalWhenExpecting: 200 * time.Millisecond,
				PluginConfig:                config.PluginConfig{"name": groupName, "region": region},
				ConnectorConfig: config.ConnectorConfig{
					Username: u.Username, KeyPath: keyPath, UseStaticCredentials: true,
					ProtocolPort: 22, Timeout: 2 * time.Minute,
				},
				Policy: []config.AutoscalerPolicyConfig{{IdleCount: 0, IdleTime: idleTime, PreemptiveMode: &preemptive}},
			},
		}},
	}
	if err := config.Save(path, cfg); err != nil {
		t.Fatal(err)
	}
}

// runnerEnv is the runner's environment: this one without its AWS settings, plus moto's endpoint and
// dummy credentials, and shared config files that do not exist so that ~/.aws is not read.
func runnerEnv(motoURL, dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"AWS_ENDPOINT_URL="+motoURL,
		"AWS_ACCESS_KEY_ID=AKIAFLEETRUNNERMOTO",
		"AWS_SECRET_ACCESS_KEY=fleetrunner-moto-secret",
		"AWS_REGION="+region,
		"AWS_CONFIG_FILE="+filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "no-aws-credentials"),
		// No instance metadata service on loopback: never wait for one.
		"AWS_EC2_METADATA_DISABLED=true",
		// The plugin's default of 10 attempts with backoff would spend the test's time on one of moto's
		// HTML 500 answers; three still ride over a hiccup.
		"AWS_MAX_ATTEMPTS=3",
	)
}

// runner is the `fleetrunner run` child process.
type runner struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error // Wait's error, once exited is closed
}

// startRunner starts `bin run` on configPath with env. Its log is shown when the test fails (all of it
// with -v); a runner still running at the end is killed.
func startRunner(t *testing.T, bin, configPath string, env []string) *runner {
	t.Helper()
	r := &runner{logPath: filepath.Join(t.TempDir(), "fleetrunner.log"), exited: make(chan struct{})}
	logf, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	r.cmd = exec.Command(bin, "run", "--config", configPath, "--log-level", "debug")
	r.cmd.Env = env
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start %s run: %v", bin, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("fleetrunner log (%s):\n%s", r.logPath, logTail(r.logPath, t.Failed() && !testing.Verbose()))
		}
	})
	return r
}

// stop sends sig and waits up to within for the runner to exit; it reports an unclean exit.
func (r *runner) stop(sig syscall.Signal, within time.Duration) error {
	select {
	case <-r.exited:
		return fmt.Errorf("fleetrunner exited before it was stopped: %v", r.err)
	default:
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-r.exited:
		return r.err
	case <-time.After(within):
		return fmt.Errorf("fleetrunner did not exit within %s", within)
	}
}

// logTail returns the runner's log, only its end when short.
func logTail(path string, short bool) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const tail = 64 << 10
	if short && len(b) > tail {
		b = b[len(b)-tail:]
	}
	return string(b)
}

// waitPipeline waits for every job of p to finish and returns when a job's log first named its
// instance (to within gitlabsim's trace update interval; zero if none did). It fails at once when the backer broke or
// the runner exited.
func waitPipeline(t *testing.T, gl *gitlabsim.Server, p gitlabsim.Pipeline, bk *backer, r *runner, within time.Duration) time.Time {
	t.Helper()
	var firstRun time.Time
	deadline := time.Now().Add(within)
	for {
		bk.check(t)
		select {
		case <-r.exited:
			t.Fatalf("fleetrunner exited while the pipeline ran: %v", r.err)
		default:
		}
		done := 0
		var states []string
		for _, id := range p.JobIDs {
			snap, ok := gl.Job(id)
			if !ok {
				t.Fatalf("job %d vanished from gitlabsim", id)
			}
			if firstRun.IsZero() && connectedRE.Match(snap.Trace) {
				firstRun = time.Now()
			}
			if snap.Finished() {
				done++
			}
			states = append(states, snap.Name+":"+snap.Status)
		}
		if done == len(p.JobIDs) {
			return firstRun
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline did not finish within %s: %s; moto launched %d instances", within, strings.Join(states, " "), len(bk.launchedIDs()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
