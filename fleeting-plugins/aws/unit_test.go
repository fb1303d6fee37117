package aws

import (
	"context"
	"maps"
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
	// templates answer LaunchTemplates; templateCalls counts the calls.
	templates     []awsclient.LaunchTemplate
	templateCalls int
	// describeCalls counts Instances calls; the first hideFor of them show no instance, as a lagging
	// EC2 listing does.
	describeCalls, hideFor int
	// warmPool is DescribeWarmPool's answer, warmPoolErr its error.
	warmPool    awsclient.WarmPool
	warmPoolErr error
	// hold, when set, makes the next Group call snapshot the group, signal listed, and wait on release.
	hold    bool
	listed  chan struct{}
	release chan struct{}
}

func (f *fakeClient) Group(ctx context.Context, name string) (awsclient.Group, error) {
	f.mu.Lock()
	snap := f.grp
	snap.Members = slices.Clone(f.grp.Members)
	snap.Tags = maps.Clone(f.grp.Tags)
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

func (f *fakeClient) Instances(_ context.Context, _ string, ids []string) ([]awsclient.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.describeCalls++
	if f.describeCalls <= f.hideFor {
		return nil, nil
	}
	var out []awsclient.Instance
	for _, i := range f.instances {
		if slices.Contains(ids, i.ID) {
			out = append(out, i)
		}
	}
	return out, nil
}

// set replaces the group's members and EC2's instances.
func (f *fakeClient) set(members []awsclient.Member, instances ...awsclient.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grp.Members, f.instances = members, instances
}

func (f *fakeClient) describes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.describeCalls
}

// SendSSHPublicKey notes when AWS received the key (its 60 s start then) and answers a little later.
func (f *fakeClient) SendSSHPublicKey(context.Context, string, string, string, string) error {
	f.mu.Lock()
	f.pushedAt = append(f.pushedAt, time.Now())
	f.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	return nil
}

func (f *fakeClient) WarmPool(context.Context, string) (awsclient.WarmPool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.warmPool, f.warmPoolErr
}

// SpotRequests: the fake's instances are on-demand, so none has a spot request.
func (f *fakeClient) TagGroup(_ context.Context, _, key, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.grp.Tags == nil {
		f.grp.Tags = map[string]string{}
	}
	f.grp.Tags[key] = value
	return nil
}

func (f *fakeClient) UntagGroup(_ context.Context, _, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.grp.Tags, key)
	return nil
}

func (f *fakeClient) SpotRequests(context.Context, []string) ([]awsclient.SpotRequest, error) {
	return nil, nil
}

// LaunchTemplates answers from the fake's templates.
func (f *fakeClient) LaunchTemplates(_ context.Context, ids []string) ([]awsclient.LaunchTemplate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.templateCalls++
	var out []awsclient.LaunchTemplate
	for _, t := range f.templates {
		if slices.Contains(ids, t.ID) {
			out = append(out, t)
		}
	}
	return out, nil
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
	g := &InstanceGroup{Name: "jobs", region: "us-east-1", client: f, log: quietLog()}
	g.resetState()
	if _, err := g.list(t.Context()); err != nil {
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
	go func() { _, err := g.list(context.Background()); done <- err }()
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
	// Exactly the calls the plugin makes (awsclient.API), no more; the warm pool and launch template
	// reads serve the warm pool listing and the draining of instances of an older template version, the
	// tag writes the manager's claim on the group (claim.go).
	want := []string{
		"autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags",
		"autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribePolicies", "autoscaling:DescribeWarmPool",
		"autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup",
		"ec2-instance-connect:SendSSHPublicKey", "ec2:DescribeInstances",
		"ec2:DescribeLaunchTemplates", "ec2:DescribeSpotInstanceRequests",
	}
	for name, stmts := range map[string][]policyStatement{"iam-policy.json": file.Statement, "ManagerPolicy": managed.Properties.PolicyDocument.Statement} {
		var actions []string
		for _, st := range stmts {
			actions = append(actions, st.Action...)
			for _, cond := range st.Condition {
				for key, values := range cond {
					if key == "aws:TagKeys" {
						// The tag keys a request may write: the claim's only.
						var keys []string
						if err := values.Decode(&keys); err != nil || !slices.Equal(keys, []string{ClaimTag}) {
							t.Errorf("%s: aws:TagKeys %v (%v), want exactly [%s]", name, keys, err, ClaimTag)
						}
						continue
					}
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

// updateOnce runs Update and returns the states it reported, failing on an instance reported twice.
func updateOnce(t *testing.T, g *InstanceGroup) map[string]fleeting.State {
	t.Helper()
	got := map[string]fleeting.State{}
	if err := g.Update(t.Context(), func(id string, st fleeting.State) {
		if _, dup := got[id]; dup {
			t.Errorf("Update reported %s twice", id)
		}
		got[id] = st
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// Auto Scaling's and EC2's listings are eventually consistent: a just-launched instance can show in one
// listing and be missing from the next. Reported deleted, it would be forgotten by the taskscaler and
// counted again when it came back; so it is reported as last seen while EC2 does not say it is gone, and
// deleted once, when EC2 does.
func TestLaggingListingKeepsNewInstance(t *testing.T) {
	pending := awsclient.Member{ID: "i-new", LifecycleState: "Pending", HealthStatus: "Healthy"}
	f := &fakeClient{grp: awsclient.Group{Name: "jobs", MaxSize: 2, DesiredCapacity: 1, Members: []awsclient.Member{pending}}}
	g := newFakeGroup(t, f)
	steps := []struct {
		name      string
		members   []awsclient.Member
		instances []awsclient.Instance
		want      fleeting.State // "" for not reported
	}{
		{"listed pending", []awsclient.Member{pending}, nil, fleeting.StateCreating},
		{"missing from both listings", nil, nil, fleeting.StateCreating},
		{"missing, EC2 shows it pending", nil, []awsclient.Instance{{ID: "i-new", State: "pending"}}, fleeting.StateCreating},
		{"listed in service", []awsclient.Member{{ID: "i-new", LifecycleState: "InService", HealthStatus: "Healthy"}}, nil, fleeting.StateRunning},
		{"missing, EC2 shows it running", nil, []awsclient.Instance{{ID: "i-new", State: "running"}}, fleeting.StateRunning},
		{"missing, EC2 shows it shutting down", nil, []awsclient.Instance{{ID: "i-new", State: "shutting-down"}}, fleeting.StateDeleted},
		{"gone, EC2 still shows it terminated", nil, []awsclient.Instance{{ID: "i-new", State: "terminated"}}, ""},
	}
	for _, st := range steps {
		f.set(st.members, st.instances...)
		got := updateOnce(t, g)
		if got["i-new"] != st.want {
			t.Errorf("%s: Update reported %v; want i-new %q", st.name, got, st.want)
		}
	}
	if f.describes() != 4 {
		t.Errorf("%d DescribeInstances calls; want one per listing that missed the instance while it was not known to be leaving (4)", f.describes())
	}
}

// A member missing from the listings for longer than listingLagGrace is gone, whatever EC2 says (it
// may not answer at all); one last seen terminating is gone at once, without asking EC2.
func TestMissingMemberGivesUp(t *testing.T) {
	f := &fakeClient{grp: awsclient.Group{Name: "jobs", MaxSize: 2, DesiredCapacity: 2, Members: []awsclient.Member{
		{ID: "i-lost", LifecycleState: "InService", HealthStatus: "Healthy"},
		{ID: "i-going", LifecycleState: "Terminating", HealthStatus: "Healthy"},
	}}}
	g := newFakeGroup(t, f)
	f.set(nil)
	if got := updateOnce(t, g); got["i-lost"] != fleeting.StateRunning || got["i-going"] != fleeting.StateDeleted {
		t.Fatalf("first listing without either: %v; want i-lost still running, i-going deleted", got)
	}
	g.mu.Lock()
	g.missing["i-lost"] = time.Now().Add(-listingLagGrace - time.Second)
	g.mu.Unlock()
	if got := updateOnce(t, g); got["i-lost"] != fleeting.StateDeleted || len(got) != 1 {
		t.Fatalf("after %s missing: %v; want only i-lost, deleted", listingLagGrace, got)
	}
	if f.describes() != 2 {
		t.Errorf("%d DescribeInstances calls; want 2, both for i-lost", f.describes())
	}
}

// A listing taken for Heartbeat or ConnectInfo can be the one that sees an instance gone; Update still
// reports it deleted, once.
func TestDepartureNoticedOutsideUpdate(t *testing.T) {
	f := &fakeClient{grp: awsclient.Group{Name: "jobs", MaxSize: 2, DesiredCapacity: 1, Members: []awsclient.Member{
		{ID: "i-a", LifecycleState: "InService", HealthStatus: "Healthy"},
	}}}
	g := newFakeGroup(t, f)
	if accepted, err := g.Decrease(t.Context(), []string{"i-a"}); err != nil || len(accepted) != 1 {
		t.Fatalf("Decrease = %v, %v", accepted, err)
	}
	f.set(nil)
	g.mu.Lock()
	g.listedAt = time.Time{} // stale: Heartbeat lists again
	g.mu.Unlock()
	if err := g.Heartbeat(t.Context(), "i-a"); err == nil {
		t.Errorf("Heartbeat of a departed instance = nil")
	}
	if got := updateOnce(t, g); got["i-a"] != fleeting.StateDeleted {
		t.Errorf("Update after Heartbeat's listing saw i-a gone: %v; want i-a deleted", got)
	}
	if got := updateOnce(t, g); len(got) != 0 {
		t.Errorf("second Update: %v; want nothing", got)
	}
}

// An instance reported deleted stays deleted while lagging listings flicker: shown again (as last
// seen, Terminating) and then left out again, it is not reported a second time.
func TestDepartedInstanceReportedOnce(t *testing.T) {
	terminating := awsclient.Member{ID: "i-old", LifecycleState: "Terminating", HealthStatus: "Unhealthy"}
	f := &fakeClient{grp: awsclient.Group{Name: "jobs", MaxSize: 2, DesiredCapacity: 1, Members: []awsclient.Member{terminating}}}
	g := newFakeGroup(t, f)
	reports := 0
	for i, members := range [][]awsclient.Member{nil, {terminating}, nil, {terminating}, nil} {
		f.set(members)
		got := updateOnce(t, g)
		if st, ok := got["i-old"]; ok {
			reports++
			if st != fleeting.StateDeleted || i != 0 {
				t.Errorf("listing %d: Update reported i-old %q; want it deleted on the first listing without it, then never again", i, st)
			}
		}
	}
	if reports != 1 {
		t.Errorf("i-old reported %d times; want once", reports)
	}
}

// ConnectInfo asks EC2 again while it does not show an instance the group lists yet.
func TestConnectInfoWaitsForEC2(t *testing.T) {
	f := &fakeClient{
		grp:       awsclient.Group{Name: "jobs", MaxSize: 1, DesiredCapacity: 1, Members: []awsclient.Member{{ID: "i-a", LifecycleState: "InService", HealthStatus: "Healthy"}}},
		instances: []awsclient.Instance{{ID: "i-a", State: "running", PrivateIP: "10.0.0.1", Architecture: "x86_64"}},
		hideFor:   2,
	}
	g := newFakeGroup(t, f)
	info, err := g.ConnectInfo(t.Context(), "i-a")
	if err != nil || info.InternalAddr != "10.0.0.1" {
		t.Fatalf("ConnectInfo while EC2 lags = %+v, %v; want it once EC2 shows the instance", info, err)
	}
	if f.describes() != 3 {
		t.Errorf("%d DescribeInstances calls; want 3 (two lagging, one showing it)", f.describes())
	}
}
