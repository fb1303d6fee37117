package aws

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
)

// observed is what the plugin reads from one backend, with the values that differ by nature (IDs,
// ARNs, addresses) reduced to their form.
type observed struct {
	Group                 awsclient.Group
	Policies              int
	Instance              awsclient.Instance
	PrivateIPValid        bool
	PublicIPValid         bool
	ASGInstanceGroup      string
	ASGInstanceLifecycle  string
	ASGInstanceProtected  bool
	PushSuccess           bool
	MissingGroupNotFound  bool
	UnknownInstanceCode   string
	TerminateActivityGrp  string
	TerminateActivityCode string
	// ClaimTagged and ClaimUntagged are the group's tags after CreateOrUpdateTags and DeleteTags of the
	// claim's tag.
	ClaimTagged, ClaimUntagged map[string]string
}

func observe(t *testing.T, cfg awssdk.Config, name string) observed {
	t.Helper()
	ctx := t.Context()
	c := awsclient.New(cfg)
	var o observed
	grp, err := c.Group(ctx, name)
	if err != nil {
		t.Fatalf("Group: %v", err)
	}
	if len(grp.Members) != 1 {
		t.Fatalf("group has %d members, want 1", len(grp.Members))
	}
	id := grp.Members[0].ID
	grp.ARN, grp.Members[0].ID = "", ""
	// Launch template IDs are random in both; what must agree is that the member names the group's.
	for i, lt := range grp.Templates {
		if grp.Members[0].Template.ID == lt.ID {
			grp.Members[0].Template.ID = "the group's"
		}
		grp.Templates[i].ID = "the group's"
	}
	o.Group = grp
	pol, err := c.Policies(ctx, name)
	if err != nil {
		t.Fatalf("Policies: %v", err)
	}
	o.Policies = len(pol)

	insts, err := c.Instances(ctx, name, []string{id, "i-0123456789abcdef0"})
	if err != nil || len(insts) != 1 {
		t.Fatalf("Instances = %+v, %v; want the one member", insts, err)
	}
	o.Instance = insts[0]
	o.Instance.ID = map[bool]string{true: "member", false: insts[0].ID}[insts[0].ID == id]
	o.PrivateIPValid = netip.MustParseAddr(insts[0].PrivateIP).IsValid()
	_, perr := netip.ParseAddr(insts[0].PublicIP)
	o.PublicIPValid = perr == nil
	o.Instance.PrivateIP, o.Instance.PublicIP = "", ""

	asi, err := autoscaling.NewFromConfig(cfg).DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(asi.AutoScalingInstances) != 1 {
		t.Fatalf("DescribeAutoScalingInstances = %+v, %v", asi, err)
	}
	a := asi.AutoScalingInstances[0]
	o.ASGInstanceGroup, o.ASGInstanceLifecycle, o.ASGInstanceProtected = awssdk.ToString(a.AutoScalingGroupName), awssdk.ToString(a.LifecycleState), awssdk.ToBool(a.ProtectedFromScaleIn)

	_, pub, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	o.PushSuccess = c.SendSSHPublicKey(ctx, id, insts[0].AvailabilityZone, "ec2-user", pub) == nil

	_, err = c.Group(ctx, "no-such-group")
	o.MissingGroupNotFound = errors.Is(err, awsclient.ErrGroupNotFound)
	_, err = ec2.NewFromConfig(cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		o.UnknownInstanceCode = apiErr.ErrorCode()
	}

	if err := c.TagGroup(ctx, name, ClaimTag, "s_0123456789ab on host-1 at 2026-12-07T04:00:00Z"); err != nil {
		t.Fatalf("TagGroup: %v", err)
	}
	if o.ClaimTagged, err = tagsOf(ctx, c, name); err != nil {
		t.Fatal(err)
	}
	if err := c.UntagGroup(ctx, name, ClaimTag); err != nil {
		t.Fatalf("UntagGroup: %v", err)
	}
	if o.ClaimUntagged, err = tagsOf(ctx, c, name); err != nil {
		t.Fatal(err)
	}

	term, err := autoscaling.NewFromConfig(cfg).TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: awssdk.String(id), ShouldDecrementDesiredCapacity: awssdk.Bool(true),
	})
	if err != nil || term.Activity == nil {
		t.Fatalf("TerminateInstanceInAutoScalingGroup = %+v, %v", term, err)
	}
	o.TerminateActivityGrp, o.TerminateActivityCode = awssdk.ToString(term.Activity.AutoScalingGroupName), string(term.Activity.StatusCode)
	return o
}

// tagsOf reads the group's tags, never nil.
func tagsOf(ctx context.Context, c awsclient.Client, name string) (map[string]string, error) {
	grp, err := c.Group(ctx, name)
	if grp.Tags == nil {
		grp.Tags = map[string]string{}
	}
	return grp.Tags, err
}

// TestAWSSimAgreesWithMoto makes the same calls against awssim and moto and compares, field by field,
// what the SDK decoded for the fields the plugin reads.
func TestAWSSimAgreesWithMoto(t *testing.T) {
	sim := newSim(t, awssim.GroupSpec{
		Name: "agree", MaxSize: 2, DesiredCapacity: 1, ProtectFromScaleIn: true, SuspendAZRebalance: true, AZs: []string{"us-east-1a"},
	}, awssim.Options{PublicIP: true, Architecture: "x86_64"})
	// As createMotoGroup names moto's.
	if err := sim.SetGroupLaunchTemplate("agree", "$Latest", false); err != nil {
		t.Fatal(err)
	}
	m := startMoto(t)
	cfg := sdkConfig(t)
	if err := createMotoGroup(t.Context(), cfg, "agree", motoLinuxAMI, 2, 1); err != nil {
		t.Fatalf("set up moto: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		inst := sim.Instances("agree")
		if len(inst) == 1 && inst[0].LifecycleState == "InService" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("awssim instance not in service: %+v", inst)
		}
		time.Sleep(20 * time.Millisecond)
	}

	simCfg, motoCfg := cfg.Copy(), cfg.Copy()
	simCfg.BaseEndpoint, motoCfg.BaseEndpoint = awssdk.String(sim.URL()), awssdk.String(m.URL)
	got, want := observe(t, simCfg, "agree"), observe(t, motoCfg, "agree")
	t.Logf("awssim: %+v", got)
	t.Logf("moto:   %+v", want)
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		if g, w := gv.Field(i).Interface(), wv.Field(i).Interface(); !reflect.DeepEqual(g, w) {
			t.Errorf("%s: awssim %+v, moto %+v", gv.Type().Field(i).Name, g, w)
		}
	}
}
