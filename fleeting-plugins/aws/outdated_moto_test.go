package aws

import (
	"slices"
	"strings"
	"testing"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// TestOutdatedMoto: moto reports the group's launch template (with "$Latest", as createMotoGroup names
// it), DescribeLaunchTemplates' latest and default version numbers, and a version number for each
// instance, so after CreateLaunchTemplateVersion the instances are reported outdated. moto (5.2) gets
// the instances' number wrong, though: it reports the template's current default version for every
// instance (autoscaling/models.py, InstanceState), not the version it was launched from, so an
// instance launched from version 2 still shows 1, and after a ModifyLaunchTemplate to default 2 the
// old ones show 2. What instances launched during a roll-out report is checked against awssim only
// (TestOutdated).
func TestOutdatedMoto(t *testing.T) {
	startMoto(t)
	cfg := sdkConfig(t)
	if err := createMotoGroup(t.Context(), cfg, "roll", motoLinuxAMI, 3, 2); err != nil {
		t.Fatalf("set up moto: %v", err)
	}
	g := &InstanceGroup{Name: "roll", Region: "us-east-1", maxAttempts: 1}
	if _, err := g.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
		t.Fatalf("Init = %v", err)
	}
	ids := waitRunning(t, g, 2)
	slices.Sort(ids)
	if got, err := g.Outdated(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("Outdated before a new version = %+v, %v; want none", got, err)
	}
	if _, err := ec2.NewFromConfig(cfg).CreateLaunchTemplateVersion(t.Context(), &ec2.CreateLaunchTemplateVersionInput{
		LaunchTemplateName: awssdk.String("roll"), LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: awssdk.String(motoWindowsAMI)},
	}); err != nil {
		t.Fatalf("CreateLaunchTemplateVersion: %v", err)
	}
	updateOnce(t, g)
	got, err := g.Outdated(t.Context())
	if err != nil {
		t.Fatalf("Outdated = %v", err)
	}
	var outdated []string
	for _, o := range got {
		outdated = append(outdated, o.Instance)
		if !strings.HasSuffix(o.Reason, "version 1, the group launches version 2") {
			t.Errorf("reason for %s = %q", o.Instance, o.Reason)
		}
	}
	if !slices.Equal(outdated, ids) {
		t.Errorf("Outdated after version 2 ($Latest) = %v; want %v", outdated, ids)
	}
}
