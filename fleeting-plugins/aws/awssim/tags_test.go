package awssim

import (
	"errors"
	"maps"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/smithy-go"
)

// CreateOrUpdateTags and DeleteTags change the group's tags as DescribeAutoScalingGroups shows them;
// only the tags propagated at launch reach its instances.
func TestGroupTags(t *testing.T) {
	s, c := start(t, Options{}, GroupSpec{Name: "g", MaxSize: 1, Tags: map[string]string{"team": "ci"}})
	ctx := t.Context()
	tag := func(key, value string, propagate bool) asgtypes.Tag {
		return asgtypes.Tag{ResourceId: aws.String("g"), ResourceType: aws.String("auto-scaling-group"), Key: aws.String(key), Value: aws.String(value), PropagateAtLaunch: aws.Bool(propagate)}
	}
	type shown struct {
		value     string
		propagate bool
	}
	steps := []struct {
		name         string
		call         func() error
		want         map[string]shown
		wantInstance map[string]string
	}{
		{"created", func() error {
			_, err := c.asg.CreateOrUpdateTags(ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: []asgtypes.Tag{tag("fleetrunner:manager", "a", false)}})
			return err
		}, map[string]shown{"team": {"ci", true}, "fleetrunner:manager": {"a", false}}, map[string]string{"team": "ci", "aws:autoscaling:groupName": "g"}},
		{"updated", func() error {
			_, err := c.asg.CreateOrUpdateTags(ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: []asgtypes.Tag{tag("fleetrunner:manager", "b", false), tag("team", "cd", true)}})
			return err
		}, map[string]shown{"team": {"cd", true}, "fleetrunner:manager": {"b", false}}, map[string]string{"team": "cd", "aws:autoscaling:groupName": "g"}},
		{"deleted", func() error {
			_, err := c.asg.DeleteTags(ctx, &autoscaling.DeleteTagsInput{Tags: []asgtypes.Tag{{ResourceId: aws.String("g"), ResourceType: aws.String("auto-scaling-group"), Key: aws.String("fleetrunner:manager")}}})
			return err
		}, map[string]shown{"team": {"cd", true}}, map[string]string{"team": "cd", "aws:autoscaling:groupName": "g"}},
	}
	for _, st := range steps {
		if err := st.call(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		out, err := c.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"g"}})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]shown{}
		for _, tg := range out.AutoScalingGroups[0].Tags {
			if aws.ToString(tg.ResourceId) != "g" || aws.ToString(tg.ResourceType) != "auto-scaling-group" {
				t.Errorf("%s: tag %+v names another resource", st.name, tg)
			}
			got[aws.ToString(tg.Key)] = shown{aws.ToString(tg.Value), aws.ToBool(tg.PropagateAtLaunch)}
		}
		if !maps.Equal(got, st.want) {
			t.Errorf("%s: group tags %v, want %v", st.name, got, st.want)
		}
		s.mu.Lock()
		onInstance := s.tags(&instance{group: "g"})
		s.mu.Unlock()
		if !maps.Equal(onInstance, st.wantInstance) {
			t.Errorf("%s: instance tags %v, want %v", st.name, onInstance, st.wantInstance)
		}
	}
}

// Tags on a group that does not exist, on another kind of resource or with an empty key fail as AWS
// fails them, and change nothing.
func TestGroupTagErrors(t *testing.T) {
	s, c := start(t, Options{}, GroupSpec{Name: "g", MaxSize: 1})
	ctx := t.Context()
	good := asgtypes.Tag{ResourceId: aws.String("g"), ResourceType: aws.String("auto-scaling-group"), Key: aws.String("k"), Value: aws.String("v")}
	tests := []struct {
		name string
		tags []asgtypes.Tag
	}{
		{"unknown group", []asgtypes.Tag{good, {ResourceId: aws.String("nope"), ResourceType: aws.String("auto-scaling-group"), Key: aws.String("k"), Value: aws.String("v")}}},
		{"other resource type", []asgtypes.Tag{{ResourceId: aws.String("g"), ResourceType: aws.String("instance"), Key: aws.String("k")}}},
		{"empty key", []asgtypes.Tag{{ResourceId: aws.String("g"), ResourceType: aws.String("auto-scaling-group"), Key: aws.String(""), Value: aws.String("v")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for op, call := range map[string]func() error{
				"CreateOrUpdateTags": func() error {
					_, err := c.asg.CreateOrUpdateTags(ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: tt.tags})
					return err
				},
				"DeleteTags": func() error {
					_, err := c.asg.DeleteTags(ctx, &autoscaling.DeleteTagsInput{Tags: tt.tags})
					return err
				},
			} {
				var apiErr smithy.APIError
				if err := call(); !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ValidationError" {
					t.Errorf("%s = %v, want a ValidationError", op, err)
				}
			}
			s.mu.Lock()
			_, tagged := s.groups["g"].tags["k"]
			s.mu.Unlock()
			if tagged {
				t.Error("a failed request tagged the group")
			}
		})
	}
}
