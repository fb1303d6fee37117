package aws

import (
	"errors"
	"io"
	"maps"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/fleetingtest"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
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

// simListingDelay is how long listings lag in these tests unless one says otherwise: every test meets
// eventual consistency without waiting awssim's default second.
const simListingDelay = 200 * time.Millisecond

// newSim starts awssim with one group, test-fast retries, and the SDK pointed at it.
func newSim(t *testing.T, spec awssim.GroupSpec, opts awssim.Options) *awssim.Server {
	t.Helper()
	testenv.RequireSSHD(t)
	if opts.ListingDelay == 0 {
		opts.ListingDelay = simListingDelay
	}
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

// simSpec's instances stay pending well past the listing delay, so that the conformance suite sees
// them creating; their sshd listens once they run.
var simSpec = awssim.GroupSpec{
	Name: "runners", MaxSize: 3, Boot: &local.BootModel{Running: 3 * simListingDelay},
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
	t.Logf("calls under 30%% throttling (attempts, throttled included): %v", sim.Calls())
	if len(sim.Calls()) == 0 {
		t.Errorf("no calls recorded")
	}

	// The plugin's own count (fleeting.APICallCounter) agrees with what the sim answered, attempt by
	// attempt, and tells the throttled ones apart.
	perOperation := map[string]int{}
	outcomes := map[string]uint64{}
	for _, c := range g.APICalls() {
		perOperation[c.Operation] += int(c.Count)
		outcomes[c.Outcome] += c.Count
		if c.Service != "auto_scaling" && c.Service != "ec2" && c.Service != "ec2_instance_connect" {
			t.Errorf("unexpected service label %q", c.Service)
		}
	}
	if !maps.Equal(perOperation, sim.Calls()) {
		t.Errorf("the plugin counted %v, the sim answered %v", perOperation, sim.Calls())
	}
	if outcomes[fleeting.OutcomeThrottled] == 0 || outcomes[fleeting.OutcomeSuccess] == 0 {
		t.Errorf("outcomes under 30%% throttling: %v", outcomes)
	}
}

// waitRunning polls Update until n instances run and returns their IDs.
// runningSimGroup starts awssim with spec, the plugin on it, and n running instances.
func runningSimGroup(t *testing.T, spec awssim.GroupSpec, n int) (*awssim.Server, *InstanceGroup, []string) {
	t.Helper()
	sim := newSim(t, spec, awssim.Options{})
	g := simGroup(spec.Name)
	if _, err := g.Init(t.Context(), quietLog(), simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	if _, err := g.Increase(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	return sim, g, waitRunning(t, g, n)
}

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
	other := awssim.GroupSpec{Name: "other", MaxSize: 1, DesiredCapacity: 1, ProtectFromScaleIn: true, Boot: &local.BootModel{}}
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

// TestListingLag: with awssim's listings a second behind, instances launched by Increase show up, drop
// out of listings and come back, and run. The plugin never reports one deleted (none is terminated
// here), and ConnectInfo works as soon as one is reported running, though EC2 may not show it yet.
func TestListingLag(t *testing.T) {
	sim := newSim(t, awssim.GroupSpec{Name: "lag", MaxSize: 3, ProtectFromScaleIn: true, Boot: &local.BootModel{}}, awssim.Options{ListingDelay: time.Second})
	g := simGroup("lag")
	if _, err := g.Init(t.Context(), quietLog(), simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	if n, err := g.Increase(t.Context(), 3); n != 3 || err != nil {
		t.Fatalf("Increase(3) = %d, %v", n, err)
	}
	start := time.Now()
	running := map[string]bool{}
	polls := 0
	// Past the delay (when listings have caught up) and until all run.
	for time.Since(start) < 1500*time.Millisecond || len(running) < 3 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("%d of 3 instances running after 20s", len(running))
		}
		polls++
		for id, st := range updateOnce(t, g) {
			switch {
			case st == fleeting.StateDeleted:
				t.Errorf("%s after Increase, instance %s reported deleted; it is in the group: %+v", time.Since(start).Round(time.Millisecond), id, sim.Instances("lag"))
			case st == fleeting.StateRunning && !running[id]:
				running[id] = true
				if _, err := g.ConnectInfo(t.Context(), id); err != nil {
					t.Errorf("ConnectInfo(%s) as soon as it was reported running: %v", id, err)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	calls := sim.Calls()
	t.Logf("%d Update polls; DescribeAutoScalingGroups %d, DescribeInstances %d (asking EC2 about instances a listing missed, and ConnectInfo waiting for EC2)",
		polls, calls["DescribeAutoScalingGroups"], calls["DescribeInstances"])
}

// TestGroupReplacesInstances: instances the group replaces by itself (a failed health check, an AZ
// rebalance) are reported deleting, then deleted exactly once, and never again while DescribeInstances
// still shows them; their replacements are reported and run; the plugin's idea of the desired capacity
// stays right.
func TestGroupReplacesInstances(t *testing.T) {
	sim, g, old := runningSimGroup(t, awssim.GroupSpec{Name: "heal", MaxSize: 3, ProtectFromScaleIn: true, AZs: []string{"us-east-1a", "us-east-1b"}, Boot: &local.BootModel{}}, 2)
	if err := sim.ReplaceInstance(old[0], awssim.ReplaceUnhealthy); err != nil {
		t.Fatal(err)
	}
	if err := sim.ReplaceInstance(old[1], awssim.ReplaceAZRebalance); err != nil {
		t.Fatal(err)
	}
	seen := map[string][]fleeting.State{}
	deadline := time.Now().Add(20 * time.Second)
	for {
		running := 0
		for id, st := range updateOnce(t, g) {
			if s := seen[id]; len(s) == 0 || s[len(s)-1] != st {
				seen[id] = append(s, st)
			}
			if st == fleeting.StateRunning && id != old[0] && id != old[1] {
				running++
			}
		}
		gone := slices.Contains(seen[old[0]], fleeting.StateDeleted) && slices.Contains(seen[old[1]], fleeting.StateDeleted)
		if gone && running == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("states seen after the replacements: %v", seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Past the moment they left the group, EC2 still shows them for a while.
	for range 5 {
		for id := range updateOnce(t, g) {
			if id == old[0] || id == old[1] {
				t.Errorf("replaced instance %s reported again after it was reported deleted", id)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, id := range old {
		if s := seen[id]; s[len(s)-1] != fleeting.StateDeleted || slices.Contains(s, fleeting.StateCreating) {
			t.Errorf("replaced instance %s went %v; want it to end deleted", id, s)
		}
		if err := g.Heartbeat(t.Context(), id); !errors.Is(err, fleeting.ErrInstanceUnhealthy) {
			t.Errorf("Heartbeat of replaced %s = %v; want ErrInstanceUnhealthy", id, err)
		}
		if _, err := g.ConnectInfo(t.Context(), id); err == nil {
			t.Errorf("ConnectInfo of replaced %s succeeded", id)
		}
	}
	t.Logf("states seen: %v", seen)
	if n, err := g.Increase(t.Context(), 1); n != 1 || err != nil || sim.DesiredCapacity("heal") != 3 {
		t.Errorf("Increase(1) after the replacements = %d, %v with desired %d; want the group at 3", n, err, sim.DesiredCapacity("heal"))
	}
}

// TestInsufficientCapacity: while EC2 has no capacity Increase still succeeds, as SetDesiredCapacity
// does, and no instance is reported; the instances come once the group's retries succeed.
func TestInsufficientCapacity(t *testing.T) {
	sim := newSim(t, awssim.GroupSpec{Name: "scarce", MaxSize: 2, ProtectFromScaleIn: true, Boot: &local.BootModel{}}, awssim.Options{LaunchRetryDelay: 200 * time.Millisecond})
	g := simGroup("scarce")
	if _, err := g.Init(t.Context(), quietLog(), simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	sim.SetFaults(awssim.Faults{InsufficientCapacityRate: 1})
	if n, err := g.Increase(t.Context(), 2); n != 2 || err != nil {
		t.Fatalf("Increase(2) without EC2 capacity = %d, %v; want 2 granted", n, err)
	}
	failed := func() int {
		n := 0
		for _, a := range sim.Activities("scarce") {
			if a.Status == "Failed" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for failed() < 3 {
		if got := updateOnce(t, g); len(got) != 0 {
			t.Fatalf("without EC2 capacity Update reported %v; want nothing", got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group did not retry its failed launches: %+v", sim.Activities("scarce"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	sim.SetFaults(awssim.Faults{})
	waitRunning(t, g, 2)
	t.Logf("%d launches failed before EC2 had capacity again", failed())
}

// TestConnectWhileBooting: an instance is running before its sshd listens, as on EC2; the connector
// waits for it with the plugin's ConnectInfo (an EC2 Instance Connect key) and logs in.
func TestConnectWhileBooting(t *testing.T) {
	sim := newSim(t, awssim.GroupSpec{Name: "boot", MaxSize: 1, ProtectFromScaleIn: true,
		Boot: &local.BootModel{Running: 200 * time.Millisecond, SSHD: time.Second}}, awssim.Options{})
	g := simGroup("boot")
	if _, err := g.Init(t.Context(), quietLog(), simSettings(t, sim)); err != nil {
		t.Fatalf("Init = %v", err)
	}
	if _, err := g.Increase(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	id := waitRunning(t, g, 1)[0]
	info, err := g.ConnectInfo(t.Context(), id)
	if err != nil {
		t.Fatalf("ConnectInfo(%s) = %v", id, err)
	}
	start := time.Now()
	c, err := connector.Dial(t.Context(), info, connector.Config{Timeout: 20 * time.Second, Log: quietLog()})
	if err != nil {
		t.Fatalf("connect to %s, running but still booting: %v", id, err)
	}
	defer c.Close()
	t.Logf("connected %s after the instance was reported running", time.Since(start).Round(time.Millisecond))
	if out, code, err := c.Run(t.Context(), "echo booted"); err != nil || code != 0 || !strings.Contains(string(out), "booted") {
		t.Errorf("command on %s: %q, exit %d, %v", id, out, code, err)
	}
}
