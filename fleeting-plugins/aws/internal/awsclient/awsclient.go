// Package awsclient narrows aws-sdk-go-v2 to the few Auto Scaling, EC2 and EC2 Instance Connect calls the
// aws fleeting plugin makes, and turns their answers into plain structs. Paging lives here, so the plugin
// sees one call per question.
package awsclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2instanceconnect"
)

// Client is what the plugin needs from AWS. Every method is one API operation (paged to the end).
type Client interface {
	// Group is DescribeAutoScalingGroups for one group, with its instances; ErrGroupNotFound when AWS lists
	// no such group.
	Group(ctx context.Context, name string) (Group, error)
	// Policies is DescribePolicies: the names of the scaling policies attached to the group.
	Policies(ctx context.Context, group string) ([]string, error)
	// SetDesiredCapacity sets the group's desired capacity, ignoring its cooldown.
	SetDesiredCapacity(ctx context.Context, group string, desired int) error
	// Terminate is TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity, so the group
	// does not replace the instance.
	Terminate(ctx context.Context, instanceID string) error
	// Instances is DescribeInstances for these IDs, restricted to instances tagged as members of group.
	// IDs that do not exist (or belong elsewhere) are simply absent from the result.
	Instances(ctx context.Context, group string, ids []string) ([]Instance, error)
	// SendSSHPublicKey pushes an OpenSSH public key for osUser with EC2 Instance Connect (valid 60 s).
	SendSSHPublicKey(ctx context.Context, instanceID, az, osUser, publicKey string) error
	// WarmPool is DescribeWarmPool: the group's warm pool and its instances (Configured false without one).
	WarmPool(ctx context.Context, group string) (WarmPool, error)
	// SpotRequests is DescribeSpotInstanceRequests for the spot requests of these instance IDs (one call
	// per 200 IDs). On-demand instances have none and are absent from the result.
	SpotRequests(ctx context.Context, ids []string) ([]SpotRequest, error)
	// LaunchTemplates is DescribeLaunchTemplates for these launch template IDs: their latest and default
	// version numbers.
	LaunchTemplates(ctx context.Context, ids []string) ([]LaunchTemplate, error)
	// TagGroup is CreateOrUpdateTags for one tag on the group, not propagated to its instances.
	TagGroup(ctx context.Context, group, key, value string) error
	// UntagGroup is DeleteTags for one tag key of the group.
	UntagGroup(ctx context.Context, group, key string) error
}

// TemplateSpec names a launch template and a version of it. In a group's spec Version is a number,
// "$Latest" or "$Default" (AWS takes an empty one for "$Default"); an instance reports the number it
// was launched from.
type TemplateSpec struct {
	ID, Name, Version string
}

// LaunchTemplate is a launch template's version numbers.
type LaunchTemplate struct {
	ID, Name        string
	Latest, Default int64
}

// SpotRequest is the status of the spot request behind one instance. EC2 sets Code to
// marked-for-termination, marked-for-stop or marked-for-hibernation when it issues the interruption
// notice, two minutes before the instance goes.
type SpotRequest struct {
	InstanceID string
	Code       string
	// UpdatedAt is when Code was last set.
	UpdatedAt time.Time
}

// WarmPool is an Auto Scaling warm pool: pre-initialised instances beside the group, outside its
// desired capacity and its DescribeAutoScalingGroups listing, that the group starts first when it grows.
type WarmPool struct {
	Configured bool
	MinSize    int
	// MaxGroupPreparedCapacity is -1 when unset: the pool then fills up to the group's MaxSize.
	MaxGroupPreparedCapacity int
	// PoolState is Stopped, Running or Hibernated; Status is PendingDelete while the pool is deleted.
	PoolState, Status string
	ReuseOnScaleIn    bool
	// Instances are in Warmed:* lifecycle states.
	Instances []Member
}

// ErrGroupNotFound is returned by Group when DescribeAutoScalingGroups does not list the group.
var ErrGroupNotFound = errors.New("auto scaling group not found")

// GroupTag is the tag Auto Scaling puts on every instance it launches, naming its group.
const GroupTag = "aws:autoscaling:groupName"

// Group is the part of an Auto Scaling group the plugin reads.
type Group struct {
	Name                string
	ARN                 string
	MinSize, MaxSize    int
	DesiredCapacity     int
	ProtectNewInstances bool
	AvailabilityZones   []string
	SuspendedProcesses  []string
	// LaunchConfigurationName is set when the group launches from a launch configuration.
	LaunchConfigurationName string
	// Templates are the launch templates the group launches from: its LaunchTemplate, or its
	// MixedInstancesPolicy's and the overrides' that name one of their own.
	Templates []TemplateSpec
	// Tags are the group's own tags, by key.
	Tags    map[string]string
	Members []Member
}

// Member is one instance as the group sees it.
type Member struct {
	ID               string
	AvailabilityZone string
	// LifecycleState is the Auto Scaling lifecycle state, e.g. Pending, InService, Terminating:Wait.
	LifecycleState string
	// HealthStatus is Healthy or Unhealthy.
	HealthStatus string
	// LaunchConfigurationName or Template is what the instance was launched from; both are empty when
	// AWS does not say.
	LaunchConfigurationName string
	Template                TemplateSpec
}

// Instance is the part of an EC2 instance the plugin reads to connect to it.
type Instance struct {
	ID               string
	State            string
	PrivateIP        string
	PublicIP         string
	Architecture     string
	Platform         string
	AvailabilityZone string
}

// API is the subset of the three SDK clients used; the SDK clients satisfy it.
type API struct {
	AutoScaling     *autoscaling.Client
	EC2             *ec2.Client
	InstanceConnect *ec2instanceconnect.Client
}

var _ Client = (*API)(nil)

// New builds the three SDK clients from one configuration (region, credentials, retryer, endpoints).
func New(cfg aws.Config) *API {
	return &API{
		AutoScaling:     autoscaling.NewFromConfig(cfg),
		EC2:             ec2.NewFromConfig(cfg),
		InstanceConnect: ec2instanceconnect.NewFromConfig(cfg),
	}
}

// Group implements Client.
func (a *API) Group(ctx context.Context, name string) (Group, error) {
	p := autoscaling.NewDescribeAutoScalingGroupsPaginator(a.AutoScaling, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{name},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return Group{}, err
		}
		for _, g := range page.AutoScalingGroups {
			if aws.ToString(g.AutoScalingGroupName) != name {
				continue
			}
			out := Group{
				Name:                    name,
				ARN:                     aws.ToString(g.AutoScalingGroupARN),
				MinSize:                 int(aws.ToInt32(g.MinSize)),
				MaxSize:                 int(aws.ToInt32(g.MaxSize)),
				DesiredCapacity:         int(aws.ToInt32(g.DesiredCapacity)),
				ProtectNewInstances:     aws.ToBool(g.NewInstancesProtectedFromScaleIn),
				AvailabilityZones:       g.AvailabilityZones,
				LaunchConfigurationName: aws.ToString(g.LaunchConfigurationName),
				Templates:               groupTemplates(g),
			}
			for _, t := range g.Tags {
				if out.Tags == nil {
					out.Tags = map[string]string{}
				}
				out.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
			for _, sp := range g.SuspendedProcesses {
				out.SuspendedProcesses = append(out.SuspendedProcesses, aws.ToString(sp.ProcessName))
			}
			for _, i := range g.Instances {
				out.Members = append(out.Members, Member{
					ID:                      aws.ToString(i.InstanceId),
					AvailabilityZone:        aws.ToString(i.AvailabilityZone),
					LifecycleState:          string(i.LifecycleState),
					HealthStatus:            aws.ToString(i.HealthStatus),
					LaunchConfigurationName: aws.ToString(i.LaunchConfigurationName),
					Template:                templateSpec(i.LaunchTemplate),
				})
			}
			return out, nil
		}
	}
	return Group{}, ErrGroupNotFound
}

// groupTemplates lists the launch templates a group launches from, each once.
func groupTemplates(g asgtypes.AutoScalingGroup) []TemplateSpec {
	specs := []*asgtypes.LaunchTemplateSpecification{g.LaunchTemplate}
	if mip := g.MixedInstancesPolicy; mip != nil && mip.LaunchTemplate != nil {
		specs = append(specs, mip.LaunchTemplate.LaunchTemplateSpecification)
		for _, o := range mip.LaunchTemplate.Overrides {
			specs = append(specs, o.LaunchTemplateSpecification)
		}
	}
	var out []TemplateSpec
	for _, s := range specs {
		if t := templateSpec(s); (t.ID != "" || t.Name != "") && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

func templateSpec(s *asgtypes.LaunchTemplateSpecification) TemplateSpec {
	if s == nil {
		return TemplateSpec{}
	}
	return TemplateSpec{ID: aws.ToString(s.LaunchTemplateId), Name: aws.ToString(s.LaunchTemplateName), Version: aws.ToString(s.Version)}
}

// Policies implements Client.
func (a *API) Policies(ctx context.Context, group string) ([]string, error) {
	var names []string
	p := autoscaling.NewDescribePoliciesPaginator(a.AutoScaling, &autoscaling.DescribePoliciesInput{
		AutoScalingGroupName: aws.String(group),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, sp := range page.ScalingPolicies {
			names = append(names, aws.ToString(sp.PolicyName))
		}
	}
	return names, nil
}

// SetDesiredCapacity implements Client.
func (a *API) SetDesiredCapacity(ctx context.Context, group string, desired int) error {
	_, err := a.AutoScaling.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: aws.String(group),
		DesiredCapacity:      aws.Int32(int32(desired)),
		HonorCooldown:        aws.Bool(false),
	})
	return err
}

// Terminate implements Client.
func (a *API) Terminate(ctx context.Context, instanceID string) error {
	_, err := a.AutoScaling.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId:                     aws.String(instanceID),
		ShouldDecrementDesiredCapacity: aws.Bool(true),
	})
	return err
}

// maxFilterValues is EC2's limit on the values of one filter.
const maxFilterValues = 200

// Instances implements Client. Filters, not InstanceIds, so that one vanished ID does not fail the
// whole batch with InvalidInstanceID.NotFound.
func (a *API) Instances(ctx context.Context, group string, ids []string) ([]Instance, error) {
	var out []Instance
	for len(ids) > 0 {
		batch := ids[:min(len(ids), maxFilterValues)]
		ids = ids[len(batch):]
		p := ec2.NewDescribeInstancesPaginator(a.EC2, &ec2.DescribeInstancesInput{
			Filters: []ec2types.Filter{
				{Name: aws.String("instance-id"), Values: batch},
				{Name: aws.String("tag:" + GroupTag), Values: []string{group}},
			},
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, r := range page.Reservations {
				for _, i := range r.Instances {
					inst := Instance{
						ID:           aws.ToString(i.InstanceId),
						PrivateIP:    aws.ToString(i.PrivateIpAddress),
						PublicIP:     aws.ToString(i.PublicIpAddress),
						Architecture: string(i.Architecture),
						Platform:     string(i.Platform),
					}
					if i.State != nil {
						inst.State = string(i.State.Name)
					}
					if i.Placement != nil {
						inst.AvailabilityZone = aws.ToString(i.Placement.AvailabilityZone)
					}
					out = append(out, inst)
				}
			}
		}
	}
	return out, nil
}

// WarmPool implements Client.
func (a *API) WarmPool(ctx context.Context, group string) (WarmPool, error) {
	out := WarmPool{MaxGroupPreparedCapacity: -1}
	p := autoscaling.NewDescribeWarmPoolPaginator(a.AutoScaling, &autoscaling.DescribeWarmPoolInput{AutoScalingGroupName: aws.String(group)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return WarmPool{}, err
		}
		if c := page.WarmPoolConfiguration; c != nil {
			out.Configured = true
			out.MinSize = int(aws.ToInt32(c.MinSize))
			if c.MaxGroupPreparedCapacity != nil {
				out.MaxGroupPreparedCapacity = int(*c.MaxGroupPreparedCapacity)
			}
			out.PoolState, out.Status = string(c.PoolState), string(c.Status)
			if c.InstanceReusePolicy != nil {
				out.ReuseOnScaleIn = aws.ToBool(c.InstanceReusePolicy.ReuseOnScaleIn)
			}
		}
		for _, i := range page.Instances {
			out.Instances = append(out.Instances, Member{
				ID:               aws.ToString(i.InstanceId),
				AvailabilityZone: aws.ToString(i.AvailabilityZone),
				LifecycleState:   string(i.LifecycleState),
				HealthStatus:     aws.ToString(i.HealthStatus),
			})
		}
	}
	return out, nil
}

// SpotRequests implements Client. Filters, not SpotInstanceRequestIds: the plugin knows instances, and a
// filter value that matches nothing is no error.
func (a *API) SpotRequests(ctx context.Context, ids []string) ([]SpotRequest, error) {
	var out []SpotRequest
	for len(ids) > 0 {
		batch := ids[:min(len(ids), maxFilterValues)]
		ids = ids[len(batch):]
		p := ec2.NewDescribeSpotInstanceRequestsPaginator(a.EC2, &ec2.DescribeSpotInstanceRequestsInput{
			Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: batch}},
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, r := range page.SpotInstanceRequests {
				req := SpotRequest{InstanceID: aws.ToString(r.InstanceId)}
				if r.Status != nil {
					req.Code = aws.ToString(r.Status.Code)
					req.UpdatedAt = aws.ToTime(r.Status.UpdateTime)
				}
				out = append(out, req)
			}
		}
	}
	return out, nil
}

// LaunchTemplates implements Client.
func (a *API) LaunchTemplates(ctx context.Context, ids []string) ([]LaunchTemplate, error) {
	var out []LaunchTemplate
	p := ec2.NewDescribeLaunchTemplatesPaginator(a.EC2, &ec2.DescribeLaunchTemplatesInput{LaunchTemplateIds: ids})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, t := range page.LaunchTemplates {
			out = append(out, LaunchTemplate{
				ID: aws.ToString(t.LaunchTemplateId), Name: aws.ToString(t.LaunchTemplateName),
				Latest: aws.ToInt64(t.LatestVersionNumber), Default: aws.ToInt64(t.DefaultVersionNumber),
			})
		}
	}
	return out, nil
}

// groupResourceType is the ResourceType of an Auto Scaling group's tags.
const groupResourceType = "auto-scaling-group"

// TagGroup implements Client.
func (a *API) TagGroup(ctx context.Context, group, key, value string) error {
	_, err := a.AutoScaling.CreateOrUpdateTags(ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: []asgtypes.Tag{{
		ResourceId: aws.String(group), ResourceType: aws.String(groupResourceType),
		Key: aws.String(key), Value: aws.String(value), PropagateAtLaunch: aws.Bool(false),
	}}})
	return err
}

// UntagGroup implements Client.
func (a *API) UntagGroup(ctx context.Context, group, key string) error {
	_, err := a.AutoScaling.DeleteTags(ctx, &autoscaling.DeleteTagsInput{Tags: []asgtypes.Tag{{
		ResourceId: aws.String(group), ResourceType: aws.String(groupResourceType), Key: aws.String(key),
	}}})
	return err
}

// SendSSHPublicKey implements Client.
func (a *API) SendSSHPublicKey(ctx context.Context, instanceID, az, osUser, publicKey string) error {
	in := &ec2instanceconnect.SendSSHPublicKeyInput{
		InstanceId:     aws.String(instanceID),
		InstanceOSUser: aws.String(osUser),
		SSHPublicKey:   aws.String(publicKey),
	}
	if az != "" {
		in.AvailabilityZone = aws.String(az)
	}
	out, err := a.InstanceConnect.SendSSHPublicKey(ctx, in)
	if err != nil {
		return err
	}
	if !out.Success {
		return fmt.Errorf("EC2 Instance Connect did not accept the key (request %s)", aws.ToString(out.RequestId))
	}
	return nil
}
