package awssim

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// XML shapes of the Auto Scaling answers (awsQuery: PascalCase elements, lists of <member>).

type asgLaunchTemplate struct {
	LaunchTemplateID   string `xml:"LaunchTemplateId"`
	LaunchTemplateName string `xml:"LaunchTemplateName"`
	Version            string `xml:"Version"`
}

type asgInstance struct {
	InstanceID           string            `xml:"InstanceId"`
	InstanceType         string            `xml:"InstanceType"`
	AvailabilityZone     string            `xml:"AvailabilityZone"`
	LifecycleState       string            `xml:"LifecycleState"`
	HealthStatus         string            `xml:"HealthStatus"`
	LaunchTemplate       asgLaunchTemplate `xml:"LaunchTemplate"`
	ProtectedFromScaleIn bool              `xml:"ProtectedFromScaleIn"`
}

type asgSuspended struct {
	ProcessName      string `xml:"ProcessName"`
	SuspensionReason string `xml:"SuspensionReason"`
}

type asgTag struct {
	ResourceID        string `xml:"ResourceId"`
	ResourceType      string `xml:"ResourceType"`
	Key               string `xml:"Key"`
	Value             string `xml:"Value"`
	PropagateAtLaunch bool   `xml:"PropagateAtLaunch"`
}

type asgGroup struct {
	AutoScalingGroupName             string            `xml:"AutoScalingGroupName"`
	AutoScalingGroupARN              string            `xml:"AutoScalingGroupARN"`
	LaunchTemplate                   optLaunchTemplate `xml:"LaunchTemplate"`
	MixedInstancesPolicy             *asgMixedPolicy   `xml:"MixedInstancesPolicy,omitempty"`
	MinSize                          int               `xml:"MinSize"`
	MaxSize                          int               `xml:"MaxSize"`
	DesiredCapacity                  int               `xml:"DesiredCapacity"`
	DefaultCooldown                  int               `xml:"DefaultCooldown"`
	AvailabilityZones                []string          `xml:"AvailabilityZones>member"`
	HealthCheckType                  string            `xml:"HealthCheckType"`
	HealthCheckGracePeriod           int               `xml:"HealthCheckGracePeriod"`
	Instances                        []asgInstance     `xml:"Instances>member"`
	CreatedTime                      string            `xml:"CreatedTime"`
	SuspendedProcesses               []asgSuspended    `xml:"SuspendedProcesses>member"`
	Tags                             []asgTag          `xml:"Tags>member"`
	TerminationPolicies              []string          `xml:"TerminationPolicies>member"`
	NewInstancesProtectedFromScaleIn bool              `xml:"NewInstancesProtectedFromScaleIn"`
	ServiceLinkedRoleARN             string            `xml:"ServiceLinkedRoleARN"`

	// Present only for a group with a warm pool (warmpool.go).
	WarmPoolConfiguration *asgWarmPoolConfig `xml:"WarmPoolConfiguration,omitempty"`
	WarmPoolSize          *int               `xml:"WarmPoolSize,omitempty"`
}

type describeGroupsResult struct {
	AutoScalingGroups []asgGroup `xml:"AutoScalingGroups>member"`
	NextToken         string     `xml:"NextToken,omitempty"`
}

type asgInstanceDetails struct {
	InstanceID           string            `xml:"InstanceId"`
	InstanceType         string            `xml:"InstanceType"`
	AutoScalingGroupName string            `xml:"AutoScalingGroupName"`
	AvailabilityZone     string            `xml:"AvailabilityZone"`
	LifecycleState       string            `xml:"LifecycleState"`
	HealthStatus         string            `xml:"HealthStatus"`
	LaunchTemplate       asgLaunchTemplate `xml:"LaunchTemplate"`
	ProtectedFromScaleIn bool              `xml:"ProtectedFromScaleIn"`
}

type describeInstancesResult struct {
	AutoScalingInstances []asgInstanceDetails `xml:"AutoScalingInstances>member"`
	NextToken            string               `xml:"NextToken,omitempty"`
}

type asgPolicy struct {
	AutoScalingGroupName string `xml:"AutoScalingGroupName"`
	PolicyName           string `xml:"PolicyName"`
	PolicyARN            string `xml:"PolicyARN"`
	PolicyType           string `xml:"PolicyType"`
	AdjustmentType       string `xml:"AdjustmentType"`
	ScalingAdjustment    int    `xml:"ScalingAdjustment"`
	Enabled              bool   `xml:"Enabled"`
}

type describePoliciesResult struct {
	ScalingPolicies []asgPolicy `xml:"ScalingPolicies>member"`
	NextToken       string      `xml:"NextToken,omitempty"`
}

type asgActivity struct {
	ActivityID           string `xml:"ActivityId"`
	AutoScalingGroupName string `xml:"AutoScalingGroupName"`
	AutoScalingGroupARN  string `xml:"AutoScalingGroupARN"`
	Description          string `xml:"Description"`
	Cause                string `xml:"Cause"`
	StartTime            string `xml:"StartTime"`
	EndTime              string `xml:"EndTime,omitempty"`
	StatusCode           string `xml:"StatusCode"`
	StatusMessage        string `xml:"StatusMessage,omitempty"`
	Progress             int    `xml:"Progress"`
	Details              string `xml:"Details"`
}

type terminateResult struct {
	Activity asgActivity `xml:"Activity"`
}

type describeActivitiesResult struct {
	Activities []asgActivity `xml:"Activities>member"`
	NextToken  string        `xml:"NextToken,omitempty"`
}

func activityXML(g *group, a *Activity) asgActivity {
	out := asgActivity{
		ActivityID: a.ID, AutoScalingGroupName: g.spec.Name, AutoScalingGroupARN: g.arn, Description: a.Description,
		Cause: a.Cause, StartTime: awsTime(a.Start), StatusCode: a.Status, StatusMessage: a.StatusMessage, Details: a.Details,
	}
	if !a.End.IsZero() {
		out.EndTime, out.Progress = awsTime(a.End), 100
	}
	return out
}

// sortedActivities lists g's activities as AWS does: those in progress first, then newest first.
// Called with s.mu held.
func sortedActivities(g *group) []*Activity {
	out := slices.Clone(g.activities)
	slices.Reverse(out)
	slices.SortStableFunc(out, func(a, b *Activity) int {
		ia, ib := a.Status == "InProgress", b.Status == "InProgress"
		switch {
		case ia == ib:
			return b.Start.Compare(a.Start)
		case ia:
			return -1
		}
		return 1
	})
	return out
}

// autoScaling answers one Auto Scaling action; a nil result means an answer without a Result element.
func (s *Server) autoScaling(action string, form url.Values) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if result, err, ok := s.warmPoolAction(action, form); ok {
		return result, err
	}
	if result, err, ok := s.tagAction(action, form); ok {
		return result, err
	}
	switch action {
	case "DescribeAutoScalingGroups":
		return s.describeGroups(form)
	case "DescribeAutoScalingInstances":
		return s.describeASGInstances(form)
	case "DescribePolicies":
		return s.describePolicies(form)
	case "DescribeScalingActivities":
		return s.describeActivities(form)
	case "SetDesiredCapacity":
		return nil, s.setDesiredCapacity(form)
	case "TerminateInstanceInAutoScalingGroup":
		return s.terminateInstance(form)
	case "SetInstanceProtection":
		return struct {
		}{}, s.setInstanceProtection(form)
	}
	return nil, &apiError{http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version %s", action, autoScalingVersion)}
}

func (s *Server) groupNames() []string {
	names := make([]string, 0, len(s.groups))
	for n := range s.groups {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (s *Server) describeGroups(form url.Values) (any, *apiError) {
	size, err := maxRecords(form, 50, 100)
	if err != nil {
		return nil, err
	}
	names := queryList(form, "AutoScalingGroupNames.member")
	if len(names) == 0 {
		names = s.groupNames()
	}
	cutoff := s.listingCutoff()
	var groups []asgGroup
	for _, n := range names {
		g, ok := s.groups[n]
		if !ok {
			continue // AWS leaves unknown names out rather than failing.
		}
		out := asgGroup{
			AutoScalingGroupName: n, AutoScalingGroupARN: g.arn,
			MinSize: g.spec.MinSize, MaxSize: g.spec.MaxSize, DesiredCapacity: g.desired,
			DefaultCooldown: 300, AvailabilityZones: g.spec.AZs, HealthCheckType: "EC2", HealthCheckGracePeriod: 300,
			CreatedTime: awsTime(g.created), TerminationPolicies: []string{"Default"},
			NewInstancesProtectedFromScaleIn: g.spec.ProtectFromScaleIn,
			ServiceLinkedRoleARN:             fmt.Sprintf("arn:aws:iam::%s:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling", s.opts.AccountID),
		}
		out.WarmPoolConfiguration, out.WarmPoolSize = s.warmPoolXML(g)
		s.groupLaunchTemplateLocked(g, &out)
		if g.spec.SuspendAZRebalance {
			out.SuspendedProcesses = []asgSuspended{{ProcessName: "AZRebalance", SuspensionReason: "User suspended at " + awsTime(g.created)}}
		}
		out.Tags = groupTagsXML(n, g)
		for _, inst := range s.sortedInstances() {
			if inst.group == n && inst.lifecycle != lifecycleTerminated && !warmed(inst) && listed(inst, cutoff) {
				out.Instances = append(out.Instances, asgInstance{
					InstanceID: inst.id, InstanceType: "t3.micro", AvailabilityZone: inst.az,
					LifecycleState: inst.lifecycle, HealthStatus: inst.health,
					LaunchTemplate: s.instanceLaunchTemplate(inst), ProtectedFromScaleIn: inst.protected,
				})
			}
		}
		groups = append(groups, out)
	}
	groups, next, err := page(groups, form.Get("NextToken"), size)
	if err != nil {
		return nil, err
	}
	return describeGroupsResult{AutoScalingGroups: groups, NextToken: next}, nil
}

func (s *Server) describeASGInstances(form url.Values) (any, *apiError) {
	size, err := maxRecords(form, 50, 50)
	if err != nil {
		return nil, err
	}
	ids := queryList(form, "InstanceIds.member")
	cutoff := s.listingCutoff()
	var out []asgInstanceDetails
	for _, inst := range s.sortedInstances() {
		if inst.group == "" || inst.lifecycle == lifecycleTerminated || !listed(inst, cutoff) || len(ids) > 0 && !slices.Contains(ids, inst.id) {
			continue
		}
		out = append(out, asgInstanceDetails{
			InstanceID: inst.id, InstanceType: "t3.micro", AutoScalingGroupName: inst.group, AvailabilityZone: inst.az,
			LifecycleState: inst.lifecycle, HealthStatus: upperHealth(inst.health),
			LaunchTemplate: s.instanceLaunchTemplate(inst), ProtectedFromScaleIn: inst.protected,
		})
	}
	out, next, err := page(out, form.Get("NextToken"), size)
	if err != nil {
		return nil, err
	}
	return describeInstancesResult{AutoScalingInstances: out, NextToken: next}, nil
}

// upperHealth is DescribeAutoScalingInstances' spelling of health (HEALTHY, UNHEALTHY), which differs
// from DescribeAutoScalingGroups' (Healthy, Unhealthy).
func upperHealth(h string) string {
	if h == "Unhealthy" {
		return "UNHEALTHY"
	}
	return "HEALTHY"
}

func (s *Server) describePolicies(form url.Values) (any, *apiError) {
	name := form.Get("AutoScalingGroupName")
	var out []asgPolicy
	for _, n := range s.groupNames() {
		if name != "" && n != name {
			continue
		}
		for _, p := range s.groups[n].spec.Policies {
			out = append(out, asgPolicy{
				AutoScalingGroupName: n, PolicyName: p, PolicyType: "SimpleScaling", AdjustmentType: "ChangeInCapacity", ScalingAdjustment: 1, Enabled: true,
				PolicyARN: fmt.Sprintf("arn:aws:autoscaling:%s:%s:scalingPolicy:%s:autoScalingGroupName/%s:policyName/%s", s.opts.Region, s.opts.AccountID, newUUID(s.rng), n, p),
			})
		}
	}
	size, err := queryInt(form, "MaxRecords", 50)
	if err != nil {
		return nil, err
	}
	out, next, err := page(out, form.Get("NextToken"), max(size, 1))
	if err != nil {
		return nil, err
	}
	return describePoliciesResult{ScalingPolicies: out, NextToken: next}, nil
}

func (s *Server) group(name string) (*group, *apiError) {
	if name == "" {
		return nil, validationError("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	}
	g, ok := s.groups[name]
	if !ok {
		return nil, validationError("AutoScalingGroup name not found - AutoScalingGroup %s not found", name)
	}
	return g, nil
}

func (s *Server) setDesiredCapacity(form url.Values) *apiError {
	g, err := s.group(form.Get("AutoScalingGroupName"))
	if err != nil {
		return err
	}
	desired, err := queryInt(form, "DesiredCapacity", -1)
	if err != nil {
		return err
	}
	switch {
	case desired < 0:
		return validationError("1 validation error detected: Value null at 'desiredCapacity' failed to satisfy constraint: Member must not be null")
	case desired > g.spec.MaxSize:
		return validationError("New SetDesiredCapacity value %d is above max value %d for the AutoScalingGroup.", desired, g.spec.MaxSize)
	case desired < g.spec.MinSize:
		return validationError("New SetDesiredCapacity value %d is below min value %d for the AutoScalingGroup.", desired, g.spec.MinSize)
	}
	g.desired = desired
	s.kickLocked()
	return nil
}

func (s *Server) terminateInstance(form url.Values) (any, *apiError) {
	id := form.Get("InstanceId")
	decrement, perr := strconv.ParseBool(form.Get("ShouldDecrementDesiredCapacity"))
	if perr != nil {
		return nil, validationError("1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null")
	}
	inst, ok := s.instances[id]
	if !ok || inst.group == "" || inst.lifecycle == lifecycleTerminated {
		return nil, validationError("Instance Id not found - No managed instance found for instance ID: %s", id)
	}
	g := s.groups[inst.group]
	if inst.lifecycle != lifecycleTerminating {
		cause := fmt.Sprintf("At %s instance %s was taken out of service in response to a user request", awsTime(time.Now()), id)
		if decrement {
			if g.desired-1 < g.spec.MinSize {
				return nil, validationError("Currently, desiredSize equals minSize (%d). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.", g.spec.MinSize)
			}
			g.desired--
			cause += fmt.Sprintf(", shrinking the capacity from %d to %d", g.desired+1, g.desired)
		}
		s.terminateLocked(inst, cause+".")
	}
	return terminateResult{Activity: activityXML(g, inst.termination)}, nil
}

func (s *Server) describeActivities(form url.Values) (any, *apiError) {
	size, err := maxRecords(form, 100, 100)
	if err != nil {
		return nil, err
	}
	names := s.groupNames()
	if name := form.Get("AutoScalingGroupName"); name != "" {
		names = []string{name} // an unknown group has no activities, and AWS does not fail
	}
	ids := queryList(form, "ActivityIds.member")
	var out []asgActivity
	for _, n := range names {
		g, ok := s.groups[n]
		if !ok {
			continue
		}
		for _, a := range sortedActivities(g) {
			if len(ids) == 0 || slices.Contains(ids, a.ID) {
				out = append(out, activityXML(g, a))
			}
		}
	}
	out, next, err := page(out, form.Get("NextToken"), size)
	if err != nil {
		return nil, err
	}
	return describeActivitiesResult{Activities: out, NextToken: next}, nil
}

func (s *Server) setInstanceProtection(form url.Values) *apiError {
	g, err := s.group(form.Get("AutoScalingGroupName"))
	if err != nil {
		return err
	}
	protect, perr := strconv.ParseBool(form.Get("ProtectedFromScaleIn"))
	if perr != nil {
		return validationError("1 validation error detected: Value null at 'protectedFromScaleIn' failed to satisfy constraint: Member must not be null")
	}
	ids := queryList(form, "InstanceIds.member")
	for _, id := range ids {
		inst, ok := s.instances[id]
		if !ok || inst.group != g.spec.Name || inst.lifecycle == lifecycleTerminated {
			return validationError("The instance %s is not part of Auto Scaling group %s.", id, g.spec.Name)
		}
	}
	for _, id := range ids {
		s.instances[id].protected = protect
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
