package aws

import (
	"context"
	"fmt"
	"slices"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

var _ fleeting.InterruptionReporter = (*InstanceGroup)(nil)

// interruptionCodes are the spot request status codes EC2 sets when it issues an interruption notice,
// two minutes before it terminates, stops or hibernates the instance.
var interruptionCodes = []string{"marked-for-termination", "marked-for-stop", "marked-for-hibernation"}

// Interruptions reports the group's instances that EC2 has given a spot interruption notice.
//
// Why DescribeSpotInstanceRequests as well as instance metadata (metadata.go): the status code of the
// instance's spot request is set when the notice is issued and costs one API call per 200 instances per
// poll (ec2:DescribeSpotInstanceRequests), for every member, connected or not — an instance still
// readying, or one whose image forbids the SSH forwarding metadata reads need, is seen too. Auto
// Scaling launches its spot instances through one-time spot requests, so every spot member has one;
// on-demand members have none and cost nothing here. Rebalance recommendations appear only in metadata.
//
// It asks about the members of the last listing that are in service or still launching.
func (g *InstanceGroup) Interruptions(ctx context.Context) ([]fleeting.Interruption, error) {
	g.mu.Lock()
	var ids []string
	for id, m := range g.members {
		if !leaving(m.LifecycleState) {
			ids = append(ids, id)
		}
	}
	g.mu.Unlock()
	if len(ids) == 0 {
		return nil, nil
	}
	slices.Sort(ids)
	reqs, err := g.client.SpotRequests(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("spot interruption notices: %w", g.apiError("DescribeSpotInstanceRequests", err))
	}
	var out []fleeting.Interruption
	for _, r := range reqs {
		if r.InstanceID == "" || !slices.Contains(interruptionCodes, r.Code) || !slices.Contains(ids, r.InstanceID) {
			continue
		}
		out = append(out, fleeting.Interruption{
			Instance:  r.InstanceID,
			Reason:    fmt.Sprintf("spot interruption notice (%s)", r.Code),
			NoticedAt: r.UpdatedAt,
		})
	}
	return out, nil
}
