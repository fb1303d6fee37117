package aws

import (
	"errors"
	"io"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/fleetingtest"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// isolateAWS points the SDK at endpoint with dummy credentials and keeps it away from this machine's
// AWS files and from the instance metadata service, which is not on loopback.
func isolateAWS(t *testing.T, endpoint string) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL":            endpoint,
		"AWS_ACCESS_KEY_ID":           "AKIAFLEETRUNNERTEST",
		"AWS_SECRET_ACCESS_KEY":       "fleetrunner-test-secret",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
		"AWS_DEFAULT_REGION":          "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// newSim starts awssim with one group, test-fast retries, and the SDK pointed at it.
func newSim(t *testing.T, spec awssim.GroupSpec, opts awssim.Options) *awssim.Server {
	t.Helper()
	testenv.RequireSSHD(t)
	sim, err := awssim.New(opts)
	if err != nil {
		t.Fatalf("awssim.New: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("awssim Close: %v", err)
		}
	})
	if spec.Name != "" {
		if err := sim.CreateGroup(spec); err != nil {
			t.Fatal(err)
		}
	}
	isolateAWS(t, sim.URL())
	return sim
}

func simGroup(name string) *InstanceGroup {
	return &InstanceGroup{Name: name, Region: "us-east-1", maxBackoff: 20 * time.Millisecond}
}

func currentUser(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func simSettings(t *testing.T, sim *awssim.Server) fleeting.Settings {
	return fleeting.Settings{ConnectorConfig: fleeting.ConnectorConfig{Username: currentUser(t), ProtocolPort: sim.SSHPort()}}
}

var simSpec = awssim.GroupSpec{
	Name: "runners", MaxSize: 3, BootDelay: 200 * time.Millisecond,
	ProtectFromScaleIn: true, SuspendAZRebalance: true, AZs: []string{"us-east-1a", "us-east-1b"},
}

// TestConformanceAWSSim runs the whole conformance suite, SSH included, against awssim's real sshd
// instances with keys pushed through EC2 Instance Connect.
func TestConformanceAWSSim(t *testing.T) {
	sim := newSim(t, simSpec, awssim.Options{})
	fleetingtest.Run(t, func(*testing.T) fleeting.InstanceGroup { return simGroup(simSpec.Name) }, fleetingtest.Config{
		Settings:       simSettings(t, sim),
		ExpectCreating: true,
	})
	for _, p := range sim.KeyPushes() {
		if p.Group != simSpec.Name || p.Err != "" {
			t.Errorf("SendSSHPublicKey for %s (group %q) answered %q; want only accepted pushes for group %s", p.InstanceID, p.Group, p.Err, simSpec.Name)
		}
	}
	if len(sim.KeyPushes()) == 0 {
		t.Errorf("no SendSSHPublicKey seen; the suite's ConnectInfo should push a key per connection")
	}
}

// TestStaticCredentials: with use_static_credentials the configured key logs in and nothing is pushed.
func TestStaticCredentials(t *testing.T) {
	key, pub, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	sim := newSim(t, simSpec, awssim.Options{StaticKeys: []string{pub}})
	settings := simSettings(t, sim)
	settings.UseStaticCredentials = true
	settings.Key = key
	fleetingtest.Run(t, func(*testing.T) fleeting.InstanceGroup { return simGroup(simSpec.Name) }, fleetingtest.Config{
		Settings: settings, ExpectCreating: true,
	})
	if n := len(sim.KeyPushes()); n != 0 {
		t.Errorf("%d SendSSHPublicKey calls with use_static_credentials; want none", n)
	}
}

func TestInitErrors(t *testing.T) {
	tests := []struct {
		name   string
		spec   awssim.GroupSpec
		faults awssim.Faults
		group  *InstanceGroup
		env    map[string]string
		want   []string
	}{
		{
			name: "missing group", group: simGroup("nope"),
			want: []string{`"nope"`, "DescribeAutoScalingGroups", "create it"},
		},
		{
			name: "access denied", spec: simSpec, group: simGroup(simSpec.Name),
			faults: awssim.Faults{AccessDenied: []string{"DescribeAutoScalingGroups"}},
			want:   []string{`"runners"`, "DescribeAutoScalingGroups", "AccessDenied", "autoscaling:DescribeAutoScalingGroups", "iam-policy.json"},
		},
		{
			name: "max size 0", spec: awssim.GroupSpec{Name: "empty"}, group: simGroup("empty"),
			want: []string{`"empty"`, "DescribeAutoScalingGroups", "MaxSize 0", "raise the group's MaxSize"},
		},
		{
			name: "missing region", spec: simSpec, group: &InstanceGroup{Name: simSpec.Name},
			want: []string{`"runners"`, "region", "AWS_REGION"},
		},
		{
			name: "missing credentials", spec: simSpec, group: simGroup(simSpec.Name),
			env:  map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
			want: []string{`"runners"`, "DescribeAutoScalingGroups", "credentials", "IAM role"},
		},
		{
			name: "missing name", group: &InstanceGroup{Region: "us-east-1"},
			want: []string{"name", "Auto Scaling group"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t, tt.spec, awssim.Options{})
			sim.SetFaults(tt.faults)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := tt.group.Init(t.Context(), quietLog(), fleeting.Settings{})
			if err == nil {
				t.Fatalf("Init = nil error; want one naming %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Init error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestInitWarnings: a group set up against the runner's advice still works, with a warning per problem
// naming its fix.
func TestInitWarnings(t *testing.T) {
	spec := awssim.GroupSpec{Name: "loose", MinSize: 1, DesiredCapacity: 1, MaxSize: 2, AZs: []string{"us-east-1a", "us-east-1b"}, Policies: []string{"cpu-target"}}
	newSim(t, spec, awssim.Options{})
	log, hook := logrus.New(), &captureHook{}
	log.SetOutput(io.Discard)
	log.AddHook(hook)
	info, err := simGroup(spec.Name).Init(t.Context(), log, fleeting.Settings{})
	if err != nil {
		t.Fatalf("Init = %v", err)
	}
	if info.ID != "aws/us-east-1/loose" || info.MaxSize != 2 {
		t.Errorf("ProviderInfo = %+v; want ID aws/us-east-1/loose, MaxSize 2", info)
	}
	for _, want := range []string{"--new-instances-protected-from-scale-in", "suspend-processes --scaling-processes AZRebalance", "delete-policy", "--min-size 0"} {
		if !hook.has(want) {
			t.Errorf("no warning containing %q in %q", want, hook.messages)
		}
	}
}

type captureHook struct{ messages []string }

func (h *captureHook) Levels() []logrus.Level { return []logrus.Level{logrus.WarnLevel} }
func (h *captureHook) Fire(e *logrus.Entry) error {
	h.messages = append(h.messages, e.Message)
	return nil
}
func (h *captureHook) has(s string) bool {
	for _, m := range h.messages {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// TestThrottling: with 30% of calls throttled, every plugin call still succeeds through the retryer.
func TestThrottling(t *testing.T) {
	sim := newSim(t, simSpec, awssim.Options{Seed: 7})
	g := simGroup(simSpec.Name)
	if _, err := g.Init(t.Context(), quietLog(), simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	sim.SetFaults(awssim.Faults{ThrottleRate: 0.3})
	if n, err := g.Increase(t.Context(), 2); n != 2 || err != nil {
		t.Fatalf("Increase(2) = %d, %v", n, err)
	}
	running := waitRunning(t, g, 2)
	for range 3 {
		for _, id := range running {
			if err := g.Heartbeat(t.Context(), id); err != nil {
				t.Errorf("Heartbeat(%s) = %v", id, err)
			}
			if _, err := g.ConnectInfo(t.Context(), id); err != nil {
				t.Errorf("ConnectInfo(%s) = %v", id, err)
			}
		}
	}
	if got, err := g.Decrease(t.Context(), running); err != nil || len(got) != 2 {
		t.Errorf("Decrease = %q, %v", got, err)
	}
	throttled := 0
	for _, n := range sim.Calls() {
		throttled += n
	}
	t.Logf("calls under 30%% throttling (attempts, throttled included): %v", sim.Calls())
	if throttled == 0 {
		t.Errorf("no calls recorded")
	}
}

// waitRunning polls Update until n instances run and returns their IDs.
func waitRunning(t *testing.T, g *InstanceGroup, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var running []string
		if err := g.Update(t.Context(), func(id string, st fleeting.State) {
			if st == fleeting.StateRunning {
				running = append(running, id)
			}
		}); err != nil {
			t.Fatalf("Update = %v", err)
		}
		if len(running) >= n {
			return running
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d instances running after 30s", len(running), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKeyPushes: one SendSSHPublicKey per ConnectInfo, only for instances of the group, and none for
// an instance of another group or an unknown one.
func TestKeyPushes(t *testing.T) {
	sim := newSim(t, simSpec, awssim.Options{})
	other := awssim.GroupSpec{Name: "other", MaxSize: 1, DesiredCapacity: 1, ProtectFromScaleIn: true}
	if err := sim.CreateGroup(other); err != nil {
		t.Fatal(err)
	}
	g := simGroup(simSpec.Name)
	if _, err := g.Init(t.Context(), quietLog(), simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	if _, err := g.Increase(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	ids := waitRunning(t, g, 2)
	var otherID string
	deadline := time.Now().Add(10 * time.Second)
	for otherID == "" && time.Now().Before(deadline) {
		for _, i := range sim.Instances("other") {
			otherID = i.ID
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, id := range []string{ids[0], ids[1], ids[0]} {
		info, err := g.ConnectInfo(t.Context(), id)
		if err != nil {
			t.Fatalf("ConnectInfo(%s) = %v", id, err)
		}
		if info.Expires == nil || time.Until(*info.Expires) < 50*time.Second || len(info.Key) == 0 {
			t.Errorf("ConnectInfo(%s) key %d bytes, expires %v; want a key valid ~60s", id, len(info.Key), info.Expires)
		}
		if n := len(sim.KeyPushes()); n != i+1 {
			t.Errorf("after %d ConnectInfo calls, %d pushes; want one each", i+1, n)
		}
	}
	if _, err := g.ConnectInfo(t.Context(), otherID); err == nil {
		t.Errorf("ConnectInfo for %s of another group succeeded", otherID)
	}
	if _, err := g.Decrease(t.Context(), []string{otherID}); err == nil {
		t.Errorf("Decrease of %s of another group succeeded", otherID)
	}
	if got := sim.Instances("other"); len(got) != 1 || got[0].LifecycleState != "InService" {
		t.Errorf("other group after a refused Decrease: %+v; want its instance untouched", got)
	}
	for _, p := range sim.KeyPushes() {
		if p.Group != simSpec.Name {
			t.Errorf("key pushed for %s of group %q", p.InstanceID, p.Group)
		}
	}
}

// TestUpdateStates: unhealthy instances are timeouts; one terminated from outside goes deleting and is
// replaced, and Heartbeat stops vouching for it.
func TestUpdateStates(t *testing.T) {
	sim := newSim(t, simSpec, awssim.Options{})
	g := simGroup(simSpec.Name)
	if _, err := g.Init(t.Context(), quietLog(), simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	if _, err := g.Increase(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	ids := waitRunning(t, g, 1)
	if err := sim.TerminateFromOutside(ids[0]); err != nil {
		t.Fatal(err)
	}
	states := map[string]fleeting.State{}
	if err := g.Update(t.Context(), func(id string, st fleeting.State) { states[id] = st }); err != nil {
		t.Fatal(err)
	}
	if states[ids[0]] != fleeting.StateDeleting && states[ids[0]] != fleeting.StateDeleted {
		t.Errorf("instance terminated from outside is %q; want deleting or deleted", states[ids[0]])
	}
	if err := g.Heartbeat(t.Context(), ids[0]); !errors.Is(err, fleeting.ErrInstanceUnhealthy) {
		t.Errorf("Heartbeat of a terminated instance = %v; want ErrInstanceUnhealthy", err)
	}
	replacement := waitRunning(t, g, 1)
	if replacement[0] == ids[0] {
		t.Errorf("no replacement launched")
	}

	sim.SetFaults(awssim.Faults{NeverHealthy: true})
	if _, err := g.Increase(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		timeouts := 0
		if err := g.Update(t.Context(), func(id string, st fleeting.State) {
			if st == fleeting.StateTimeout {
				timeouts++
				if err := g.Heartbeat(t.Context(), id); !errors.Is(err, fleeting.ErrInstanceUnhealthy) {
					t.Errorf("Heartbeat of unhealthy %s = %v; want ErrInstanceUnhealthy", id, err)
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		if timeouts == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unhealthy instance never reported as timeout")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
