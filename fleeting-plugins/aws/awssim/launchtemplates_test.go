package awssim

import (
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// TestLaunchTemplates: DescribeLaunchTemplates answers the group's template with its latest and default
// versions by ID and by name, and fails for one that does not exist, as EC2 does; a group named by a
// MixedInstancesPolicy reports its template there and no LaunchTemplate of its own.
func TestLaunchTemplates(t *testing.T) {
	s, c := start(t, Options{}, GroupSpec{Name: "lt", MaxSize: 1, Boot: &local.BootModel{}})
	if _, err := s.NewLaunchTemplateVersion("lt"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewLaunchTemplateVersion("lt"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDefaultLaunchTemplateVersion("lt", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDefaultLaunchTemplateVersion("lt", 4); err == nil {
		t.Error("default version 4 of a template with 3 versions was accepted")
	}
	byName, err := c.ec2.DescribeLaunchTemplates(t.Context(), &ec2.DescribeLaunchTemplatesInput{LaunchTemplateNames: []string{"lt"}})
	if err != nil || len(byName.LaunchTemplates) != 1 {
		t.Fatalf("DescribeLaunchTemplates by name = %+v, %v", byName, err)
	}
	lt := byName.LaunchTemplates[0]
	if aws.ToInt64(lt.LatestVersionNumber) != 3 || aws.ToInt64(lt.DefaultVersionNumber) != 2 {
		t.Errorf("latest %d default %d, want 3 and 2", aws.ToInt64(lt.LatestVersionNumber), aws.ToInt64(lt.DefaultVersionNumber))
	}
	byID, err := c.ec2.DescribeLaunchTemplates(t.Context(), &ec2.DescribeLaunchTemplatesInput{LaunchTemplateIds: []string{aws.ToString(lt.LaunchTemplateId)}})
	if err != nil || len(byID.LaunchTemplates) != 1 || aws.ToString(byID.LaunchTemplates[0].LaunchTemplateName) != "lt" {
		t.Errorf("DescribeLaunchTemplates by ID = %+v, %v", byID, err)
	}
	_, err = c.ec2.DescribeLaunchTemplates(t.Context(), &ec2.DescribeLaunchTemplatesInput{LaunchTemplateIds: []string{"lt-0000000000000000"}})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidLaunchTemplateId.NotFound" {
		t.Errorf("DescribeLaunchTemplates for an unknown ID = %v, want InvalidLaunchTemplateId.NotFound", err)
	}

	if err := s.SetGroupLaunchTemplate("lt", "$Latest", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGroupLaunchTemplate("lt", "7", false); err == nil {
		t.Error("version 7 of a template with 3 versions was accepted")
	}
	out, err := c.asg.DescribeAutoScalingGroups(t.Context(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"lt"}})
	if err != nil || len(out.AutoScalingGroups) != 1 {
		t.Fatalf("DescribeAutoScalingGroups = %+v, %v", out, err)
	}
	g := out.AutoScalingGroups[0]
	if g.LaunchTemplate != nil {
		t.Errorf("a group on a MixedInstancesPolicy reports LaunchTemplate %+v", g.LaunchTemplate)
	}
	if g.MixedInstancesPolicy == nil || g.MixedInstancesPolicy.LaunchTemplate == nil ||
		aws.ToString(g.MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.Version) != "$Latest" ||
		aws.ToString(g.MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.LaunchTemplateId) != aws.ToString(lt.LaunchTemplateId) {
		t.Errorf("MixedInstancesPolicy = %+v, want the group's template at $Latest", g.MixedInstancesPolicy)
	}
}
