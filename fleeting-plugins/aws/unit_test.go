package aws

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
)

// fakeClient is an in-memory group for unit tests of the plugin's bookkeeping. Group can be held
// mid-call (hold) to model a listing that AWS answered before a concurrent write landed.
type fakeClient struct {
	mu         sync.Mutex
	grp        awsclient.Group
	setCalls   []int
	terminated []string
	instances  []awsclient.Instance
	pushedAt   []time.Time
	// hold, when set, makes the next Group call snapshot the group, signal listed, and wait on release.
	hold    bool
	listed  chan struct{}
	release chan struct{}
}

func (f *fakeClient) Group(ctx context.Context, name string) (awsclient.Group, error) {
	f.mu.Lock()
	snap := f.grp
	snap.Members = slices.Clone(f.grp.Members)
	hold := f.hold
	f.hold = false
	f.mu.Unlock()
	if hold {
		close(f.listed)
		<-f.release
	}
	return snap, nil
}

func (f *fakeClient) Policies(context.Context, string) ([]string, error) { return nil, nil }

func (f *fakeClient) SetDesiredCapacity(_ context.Context, _ string, desired int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setCalls = append(f.setCalls, desired)
	f.grp.DesiredCapacity = desired
	return nil
}

func (f *fakeClient) Terminate(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.terminated = append(f.terminated, id)
	for i, m := range f.grp.Members {
		if m.ID == id && m.LifecycleState == "InService" {
			f.grp.Members[i].LifecycleState = "Terminating"
			f.grp.DesiredCapacity--
		}
	}
	return nil
}

func (f *fakeClient) Instances(context.Context, string, []string) ([]awsclient.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.instances), nil
}

// SendSSHPublicKey notes when AWS received the key (its 60 s start then) and answers a little later.
func (f *fakeClient) SendSSHPublicKey(context.Context, string, string, string, string) error {
	f.mu.Lock()
	f.pushedAt = append(f.pushedAt, time.Now())
	f.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	return nil
}

func (f *fakeClient) lastSet() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.setCalls) == 0 {
		return -1
	}
	return f.setCalls[len(f.setCalls)-1]
}

// newFakeGroup builds a plugin on a fake client, as Init would leave it after one listing.
func newFakeGroup(t *testing.T, f *fakeClient) *InstanceGroup {
	t.Helper()
	g := &InstanceGroup{
		Name: "jobs", region: "us-east-1", client: f, log: quietLog(),
		members: map[string]awsclient.Member{}, pendingSince: map[string]time.Time{}, details: map[string]awsclient.Instance{},
	}
	if _, _, err := g.list(t.Context()); err != nil {
		t.Fatal(err)
	}
	return g
}

// A listing that AWS answered before an Increase landed must not roll the plugin's desired capacity
// back: the next Increase would then lower the group instead of growing it.
func TestIncreaseNotUndoneByStaleListing(t *testing.T) {
	f := &fakeClient{grp: awsclient.Group{Name: "jobs", MaxSize: 10}}
	g := newFakeGroup(t, f)

	f.mu.Lock()
	f.hold, f.listed, f.release = true, make(chan struct{}), make(chan struct{})
	f.mu.Unlock()
	done := make(chan error, 1)
	go func() { _, _, err := g.list(context.Background()); done <- err }()
	<-f.listed // the listing has its answer (desired 0) but has not been recorded yet

	if got, err := g.Increase(t.Context(), 3); got != 3 || err != nil {
		t.Fatalf("Increase(3) = %d, %v", got, err)
	}
	close(f.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, err := g.Increase(t.Context(), 2); got != 2 || err != nil {
		t.Fatalf("Increase(2) = %d, %v", got, err)
	}
	if got := f.lastSet(); got != 5 {
		t.Fatalf("second SetDesiredCapacity = %d, want 5 (3 granted before plus 2)", got)
	}
}

// An instance AWS is already terminating does not lower the desired capacity again, so Decrease must
// accept it without counting it off the plugin's desired capacity (and without another call).
func TestDecreaseAlreadyTerminating(t *testing.T) {
	f := &fakeClient{grp: awsclient.Group{Name: "jobs", MaxSize: 10, DesiredCapacity: 2, Members: []awsclient.Member{
		{ID: "i-a", LifecycleState: "InService", HealthStatus: "Healthy"},
		{ID: "i-b", LifecycleState: "Terminating", HealthStatus: "Healthy"},
	}}}
	g := newFakeGroup(t, f)
	accepted, err := g.Decrease(t.Context(), []string{"i-a", "i-b"})
	if err != nil || !slices.Equal(accepted, []string{"i-a", "i-b"}) {
		t.Fatalf("Decrease = %v, %v; want both accepted", accepted, err)
	}
	if !slices.Equal(f.terminated, []string{"i-a"}) {
		t.Fatalf("TerminateInstanceInAutoScalingGroup called for %v, want only i-a", f.terminated)
	}
	if got, err := g.Increase(t.Context(), 1); got != 1 || err != nil {
		t.Fatalf("Increase(1) = %d, %v", got, err)
	}
	if got := f.lastSet(); got != 2 {
		t.Fatalf("SetDesiredCapacity = %d, want 2 (desired 1 after terminating i-a, plus 1)", got)
	}
}

// Every LifecycleState the SDK knows maps to a state the taskscaler acts on, and none leaves an
// instance that nobody ever removes.
func TestLifecycleStates(t *testing.T) {
	g := &InstanceGroup{Name: "jobs", log: quietLog()}
	cases := []struct {
		lifecycle, health string
		pendingFor        time.Duration
		want              fleeting.State
	}{
		{"Pending", "Healthy", 0, fleeting.StateCreating},
		{"Pending:Wait", "Healthy", 0, fleeting.StateCreating},
		{"Pending:Proceed", "Healthy", 0, fleeting.StateCreating},
		{"Pending", "Healthy", stuckPendingAfter + time.Second, fleeting.StateTimeout},
		{"InService", "Healthy", 0, fleeting.StateRunning},
		{"InService", "Unhealthy", 0, fleeting.StateTimeout},
		{"Terminating", "Healthy", 0, fleeting.StateDeleting},
		{"Terminating:Wait", "Healthy", 0, fleeting.StateDeleting},
		{"Terminating:Proceed", "Healthy", 0, fleeting.StateDeleting},
		// Retained by the group's instance lifecycle policy: AWS is removing it, terminating it again
		// would only fail; the taskscaler must not keep retrying Decrease.
		{"Terminating:Retained", "Healthy", 0, fleeting.StateDeleting},
		{"Terminated", "Healthy", 0, fleeting.StateDeleted},
		{"Standby", "Healthy", 0, fleeting.StateTimeout},
		{"EnteringStandby", "Healthy", 0, fleeting.StateTimeout},
		{"Detaching", "Healthy", 0, fleeting.StateTimeout},
		{"Detached", "Healthy", 0, fleeting.StateTimeout},
		{"Quarantined", "Healthy", 0, fleeting.StateTimeout},
		{"ReplacingRootVolume", "Healthy", 0, fleeting.StateTimeout},
		{"Warmed:Pending", "Healthy", 0, fleeting.StateCreating},
		{"Warmed:Running", "Healthy", 0, fleeting.StateCreating},
		{"Warmed:Terminating", "Healthy", 0, fleeting.StateTimeout},
		{"SomethingNew", "Healthy", 0, fleeting.StateTimeout},
	}
	for _, c := range cases {
		got := g.state(awsclient.Member{ID: "i-1", LifecycleState: c.lifecycle, HealthStatus: c.health}, c.pendingFor)
		if got != c.want {
			t.Errorf("state(%s/%s, pending %s) = %s, want %s", c.lifecycle, c.health, c.pendingFor, got, c.want)
		}
	}
}

// The CloudFormation template parses, and its manager policy is the one in iam-policy.json, covering
// every action the plugin calls, conditioned on the tag the group carries.
func TestDeployKit(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "aws")
	raw, err := os.ReadFile(filepath.Join(dir, "fleetrunner-asg.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tmpl struct {
		Resources map[string]struct {
			Type       string    `yaml:"Type"`
			Properties yaml.Node `yaml:"Properties"`
		} `yaml:"Resources"`
		Outputs map[string]any `yaml:"Outputs"`
	}
	if err := yaml.Unmarshal(raw, &tmpl); err != nil {
		t.Fatalf("fleetrunner-asg.yaml: %v", err)
	}
	grp, ok := tmpl.Resources["Group"]
	if !ok || grp.Type != "AWS::AutoScaling::AutoScalingGroup" {
		t.Fatalf("template has no AutoScalingGroup resource Group: %+v", tmpl.Resources)
	}
	var props struct {
		MinSize                          string `yaml:"MinSize"`
		DesiredCapacity                  string `yaml:"DesiredCapacity"`
		NewInstancesProtectedFromScaleIn bool   `yaml:"NewInstancesProtectedFromScaleIn"`
		Tags                             []struct {
			Key string `yaml:"Key"`
		} `yaml:"Tags"`
	}
	gp := grp.Properties
	if err := gp.Decode(&props); err != nil {
		t.Fatal(err)
	}
	if props.MinSize != "0" || props.DesiredCapacity != "0" || !props.NewInstancesProtectedFromScaleIn {
		t.Errorf("group properties %+v: want MinSize 0, DesiredCapacity 0, scale-in protection", props)
	}
	for _, r := range tmpl.Resources {
		if r.Type == "AWS::AutoScaling::ScalingPolicy" {
			t.Error("template attaches a scaling policy")
		}
	}
	for _, out := range []string{"GroupName", "Region", "ManagerInstanceProfile"} {
		if _, ok := tmpl.Outputs[out]; !ok {
			t.Errorf("template lacks output %s (docs/aws.md uses it)", out)
		}
	}
	tagKeys := map[string]bool{"aws:autoscaling:groupName": true} // AWS sets it on every instance
	for _, tag := range props.Tags {
		tagKeys[tag.Key] = true
	}

	var file struct {
		Statement []policyStatement `yaml:"Statement"`
	}
	rawPolicy, err := os.ReadFile(filepath.Join(dir, "iam-policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(rawPolicy, &file); err != nil {
		t.Fatalf("iam-policy.json: %v", err)
	}
	var managed struct {
		Properties struct {
			PolicyDocument struct {
				Statement []policyStatement `yaml:"Statement"`
			} `yaml:"PolicyDocument"`
		}
	}
	mp := tmpl.Resources["ManagerPolicy"].Properties
	if err := mp.Decode(&managed.Properties); err != nil {
		t.Fatalf("ManagerPolicy: %v", err)
	}
	// Exactly the calls the plugin makes (awsclient.API), no more.
	want := []string{
		"autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribePolicies", "autoscaling:SetDesiredCapacity",
		"autoscaling:TerminateInstanceInAutoScalingGroup", "ec2-instance-connect:SendSSHPublicKey", "ec2:DescribeInstances",
	}
	for name, stmts := range map[string][]policyStatement{"iam-policy.json": file.Statement, "ManagerPolicy": managed.Properties.PolicyDocument.Statement} {
		var actions []string
		for _, st := range stmts {
			actions = append(actions, st.Action...)
			for _, cond := range st.Condition {
				for key := range cond {
					tag := key[strings.Index(key, "/")+1:]
					if !tagKeys[tag] {
						t.Errorf("%s: condition on tag %s, which neither the template's group nor AWS sets", name, tag)
					}
				}
			}
		}
		slices.Sort(actions)
		if !slices.Equal(actions, want) {
			t.Errorf("%s allows %v, want exactly %v", name, actions, want)
		}
	}
}

type policyStatement struct {
	Action    []string                        `yaml:"Action"`
	Condition map[string]map[string]yaml.Node `yaml:"Condition"`
}

// The pushed key lives 60 s from when AWS took it, so Expires may not count from after the answer.
func TestConnectInfoExpiresWithTheKey(t *testing.T) {
	f := &fakeClient{
		grp:       awsclient.Group{Name: "jobs", MaxSize: 1, DesiredCapacity: 1, Members: []awsclient.Member{{ID: "i-a", LifecycleState: "InService", HealthStatus: "Healthy"}}},
		instances: []awsclient.Instance{{ID: "i-a", State: "running", PrivateIP: "10.0.0.1", Architecture: "arm64", AvailabilityZone: "us-east-1a"}},
	}
	g := newFakeGroup(t, f)
	info, err := g.ConnectInfo(t.Context(), "i-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.pushedAt) != 1 || info.Expires == nil || len(info.Key) == 0 || info.Username != "ec2-user" || info.Arch != "arm64" || info.InternalAddr != "10.0.0.1" {
		t.Fatalf("ConnectInfo = %+v after %d pushes", info, len(f.pushedAt))
	}
	if latest := f.pushedAt[0].Add(instanceConnectKeyTTL); info.Expires.After(latest) {
		t.Fatalf("Expires %s is after the key's end %s", info.Expires, latest)
	}
}
