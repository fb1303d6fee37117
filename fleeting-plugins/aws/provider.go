package aws

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
)

// stuckPendingAfter is how long an instance may stay in a Pending state before it counts as stuck: a
// launch template or user data that never finishes holds a group slot forever otherwise.
const stuckPendingAfter = 15 * time.Minute

// listingMaxAge is how old the last listing may be for Heartbeat and membership checks to trust it;
// the taskscaler lists every few seconds, so a fresh listing is normally at hand.
const listingMaxAge = 30 * time.Second

// listingLagGrace bounds how long a member that the group's listings leave out, while EC2 still shows
// it launching or running (or does not show it yet), is taken for one a lagging listing missed. Both
// services' listings are eventually consistent: a just-launched instance can show in one listing and be
// missing from the next for a few seconds.
const listingLagGrace = time.Minute

// remember records a listing that was requested when g.writes was writes, together with the members it
// left out that are still there (see stillThere). Members that left the group since the last listing
// wait in g.departed for Update to report them. Called with g.mu not held.
func (g *InstanceGroup) remember(grp awsclient.Group, writes uint64, kept []awsclient.Member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.writes == writes {
		g.desired = grp.DesiredCapacity
	}
	g.maxSize = grp.MaxSize
	g.launchConfig, g.templates = grp.LaunchConfigurationName, grp.Templates
	members := make(map[string]awsclient.Member, len(grp.Members)+len(kept))
	for _, m := range grp.Members {
		members[m.ID] = m
		delete(g.missing, m.ID)
		delete(g.departed, m.ID)
	}
	for _, m := range kept {
		members[m.ID] = m
		if _, ok := g.missing[m.ID]; !ok {
			g.missing[m.ID] = now
		}
	}
	for id := range g.members {
		if _, ok := members[id]; !ok {
			g.departed[id] = true
			delete(g.missing, id)
		}
	}
	for id, m := range members {
		if strings.HasPrefix(m.LifecycleState, "Pending") {
			if _, ok := g.pendingSince[id]; !ok {
				g.pendingSince[id] = now
			}
		} else {
			delete(g.pendingSince, id)
		}
	}
	for id := range g.pendingSince {
		if _, ok := members[id]; !ok {
			delete(g.pendingSince, id)
		}
	}
	for id := range g.details {
		if _, ok := members[id]; !ok {
			delete(g.details, id)
		}
	}
	g.members, g.listedAt = members, now
}

// list takes a fresh listing and returns every instance believed to be in the group: those listed, and
// those the listing left out that are still there.
func (g *InstanceGroup) list(ctx context.Context) ([]awsclient.Member, error) {
	g.mu.Lock()
	writes := g.writes
	g.mu.Unlock()
	grp, err := g.client.Group(ctx, g.Name)
	if err != nil {
		if errors.Is(err, awsclient.ErrGroupNotFound) {
			return nil, fmt.Errorf("%s: DescribeAutoScalingGroups no longer lists the group: it was deleted or renamed; recreate it or fix plugin_config name", g.where())
		}
		return nil, g.apiError("DescribeAutoScalingGroups", err)
	}
	grp = withoutWarmPool(grp)
	listed := make(map[string]bool, len(grp.Members))
	for _, m := range grp.Members {
		listed[m.ID] = true
	}
	g.mu.Lock()
	var left []awsclient.Member
	for id, m := range g.members {
		if !listed[id] {
			left = append(left, m)
		}
	}
	g.mu.Unlock()
	kept := g.stillThere(ctx, left)
	g.remember(grp, writes, kept)
	return append(slices.Clone(grp.Members), kept...), nil
}

// withoutWarmPool drops warm pool instances (Warmed:* lifecycle states) from a listing. AWS leaves
// them out of DescribeAutoScalingGroups and out of the desired capacity; were one ever listed, it is
// still not the runner's: no job can run on it until the group takes it (Pending, then InService), and
// counting it would make Increase and max_instances count capacity twice.
func withoutWarmPool(grp awsclient.Group) awsclient.Group {
	grp.Members = slices.DeleteFunc(slices.Clone(grp.Members), func(m awsclient.Member) bool {
		return strings.HasPrefix(m.LifecycleState, "Warmed:")
	})
	return grp
}

// leaving reports whether a lifecycle state is on the way out of the group, so that an instance last
// seen in it and then missing from a listing has left.
func leaving(lifecycleState string) bool {
	return strings.HasPrefix(lifecycleState, "Terminat") || strings.HasPrefix(lifecycleState, "Detach")
}

// stillThere returns the members, of those a listing left out, that are still in the group. One last
// seen leaving has left. For the others EC2 is the second opinion: shutting-down, terminated or stopped
// means the instance left; launching or running, or not shown at all, means the listing lagged, for up
// to listingLagGrace. Without EC2's answer they are kept, for the same while.
func (g *InstanceGroup) stillThere(ctx context.Context, left []awsclient.Member) []awsclient.Member {
	var ask []string
	for _, m := range left {
		if !leaving(m.LifecycleState) {
			ask = append(ask, m.ID)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	slices.Sort(ask)
	found, err := g.client.Instances(ctx, g.Name, ask)
	if err != nil {
		g.log.WithError(g.apiError("DescribeInstances", err)).WithField("instances", ask).
			Warn("could not ask EC2 about instances missing from the group's listing; taking them for still there")
	}
	ec2State := make(map[string]string, len(found))
	for _, f := range found {
		ec2State[f.ID] = f.State
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var kept []awsclient.Member
	for _, m := range left {
		st, shown := ec2State[m.ID]
		since, ok := g.missing[m.ID]
		if !ok {
			since = now
		}
		switch {
		case leaving(m.LifecycleState), shown && st != "pending" && st != "running":
		case now.Sub(since) > listingLagGrace:
			if shown {
				g.log.WithFields(logrus.Fields{"instance": m.ID, "ec2_state": st, "missing_for": now.Sub(since).Round(time.Second)}).
					Warn("instance left the group but still runs: it was detached outside the runner; terminate it by hand (aws ec2 terminate-instances) unless it is used elsewhere")
			}
		default:
			kept = append(kept, m)
		}
	}
	return kept
}

// Update lists the group's instances and reports each one's state. Instances that left the group since
// the last listing are reported deleted once, so the taskscaler notices removals from outside; one
// that a lagging listing left out is reported as last seen, since the taskscaler forgets an instance
// that is not reported.
func (g *InstanceGroup) Update(ctx context.Context, fn func(instance string, state fleeting.State)) error {
	members, err := g.list(ctx)
	if err != nil {
		return err
	}
	g.mu.Lock()
	pending := maps.Clone(g.pendingSince)
	var departed []string
	now := time.Now()
	for _, id := range slices.Sorted(maps.Keys(g.departed)) {
		// A lagging listing can show a departed instance once more, and the next one leave it out
		// again: it was reported deleted already.
		if _, reported := g.reportedGone[id]; !reported {
			departed = append(departed, id)
			g.reportedGone[id] = now
		}
	}
	clear(g.departed)
	gone := maps.Clone(g.reportedGone)
	maps.DeleteFunc(g.reportedGone, func(_ string, at time.Time) bool { return now.Sub(at) > listingLagGrace })
	g.mu.Unlock()
	for _, m := range members {
		if _, ok := gone[m.ID]; ok {
			continue
		}
		var pendingFor time.Duration
		if since, ok := pending[m.ID]; ok {
			pendingFor = now.Sub(since)
		}
		fn(m.ID, g.state(m, pendingFor))
	}
	for _, id := range departed {
		fn(id, fleeting.StateDeleted)
	}
	return nil
}

// state maps an Auto Scaling lifecycle state to a fleeting state. pendingFor is how long the instance
// has been seen in a Pending state.
func (g *InstanceGroup) state(m awsclient.Member, pendingFor time.Duration) fleeting.State {
	switch m.LifecycleState {
	case "Pending", "Pending:Wait", "Pending:Proceed":
		// Launching, or held by a launch lifecycle hook. Past stuckPendingAfter the boot is not slow but
		// broken, and the slot is better given to a fresh instance.
		if pendingFor > stuckPendingAfter {
			return fleeting.StateTimeout
		}
		return fleeting.StateCreating
	case "InService":
		// InService only says the group counts it; a failed EC2 or ELB health check marks it Unhealthy
		// before the group gets round to replacing it, and no job should land there meanwhile.
		if m.HealthStatus == "Unhealthy" {
			return fleeting.StateTimeout
		}
		return fleeting.StateRunning
	case "Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminating:Retained":
		// Retained: the group's instance lifecycle policy keeps the instance for an operator to
		// inspect; it has left service for good and terminating it again would only fail.
		return fleeting.StateDeleting
	case "Terminated":
		return fleeting.StateDeleted
	case "Standby", "EnteringStandby", "Detaching", "Detached":
		// Someone took the instance out of service by hand; it is no longer ours to run jobs on. Timeout
		// makes the taskscaler stop using it and terminate it (which ends Standby too).
		return fleeting.StateTimeout
	default:
		// States AWS adds later: not usable, let it be replaced. Warm pool states never get here
		// (withoutWarmPool): the group takes a pool instance through Pending → InService like a launch.
		g.log.WithFields(logrus.Fields{"instance": m.ID, "lifecycle_state": m.LifecycleState}).Warn("unexpected lifecycle state; reporting the instance as timed out")
		return fleeting.StateTimeout
	}
}

// Increase raises the desired capacity once for the whole step, capped by the group's MaxSize, and
// reports how many instances were granted.
func (g *InstanceGroup) Increase(ctx context.Context, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	g.scaleMu.Lock()
	defer g.scaleMu.Unlock()
	g.mu.Lock()
	desired, maxSize := g.desired, g.maxSize
	g.writes++
	g.mu.Unlock()
	target := min(desired+n, maxSize)
	granted := target - desired
	var capErr error
	if granted < n {
		capErr = fmt.Errorf("%s: at MaxSize %d (desired %d): granted %d of %d instances; raise the group's MaxSize or lower the runner's max_instances",
			g.where(), maxSize, desired, max(granted, 0), n)
	}
	if granted <= 0 {
		return 0, capErr
	}
	if err := g.client.SetDesiredCapacity(ctx, g.Name, target); err != nil {
		return 0, errors.Join(g.apiError("SetDesiredCapacity", err), capErr)
	}
	g.mu.Lock()
	g.desired = target
	g.writes++
	g.mu.Unlock()
	g.log.WithFields(logrus.Fields{"desired": target, "granted": granted}).Debug("desired capacity raised")
	return granted, capErr
}

// isMember reports whether id is in the group, listing again when the last listing is stale or does
// not know the instance (it may be newer than the listing).
func (g *InstanceGroup) isMember(ctx context.Context, id string) (awsclient.Member, error) {
	g.mu.Lock()
	m, ok := g.members[id]
	fresh := time.Since(g.listedAt) < listingMaxAge
	g.mu.Unlock()
	if ok && fresh {
		return m, nil
	}
	if _, err := g.list(ctx); err != nil {
		return awsclient.Member{}, err
	}
	g.mu.Lock()
	m, ok = g.members[id]
	g.mu.Unlock()
	if !ok {
		return m, fmt.Errorf("%s: instance %s is not in the group (per DescribeAutoScalingGroups): it was terminated or belongs elsewhere", g.where(), id)
	}
	return m, nil
}

// Decrease terminates exactly the named instances, decrementing the desired capacity so they are not
// replaced. Instances outside the group are refused without a call: terminating another group's
// instance would be worse than failing. Instances AWS is already terminating are accepted without a
// call: their removal is under way and no longer counts in the desired capacity.
func (g *InstanceGroup) Decrease(ctx context.Context, instances []string) ([]string, error) {
	g.scaleMu.Lock()
	defer g.scaleMu.Unlock()
	var accepted []string
	var errs []error
	for _, id := range instances {
		m, err := g.isMember(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if strings.HasPrefix(m.LifecycleState, "Terminat") {
			accepted = append(accepted, id)
			continue
		}
		g.mu.Lock()
		g.writes++
		g.mu.Unlock()
		if err := g.client.Terminate(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("instance %s: %w", id, g.apiError("TerminateInstanceInAutoScalingGroup", err)))
			continue
		}
		accepted = append(accepted, id)
		g.mu.Lock()
		g.desired--
		g.writes++
		if m, ok := g.members[id]; ok {
			m.LifecycleState = "Terminating"
			g.members[id] = m
		}
		g.mu.Unlock()
	}
	return accepted, errors.Join(errs...)
}

// Heartbeat reports an instance unhealthy unless the last listing shows it InService and Healthy.
func (g *InstanceGroup) Heartbeat(ctx context.Context, instance string) error {
	m, err := g.isMember(ctx, instance)
	if err != nil {
		return fmt.Errorf("%w: %w", fleeting.ErrInstanceUnhealthy, err)
	}
	if m.LifecycleState != "InService" || m.HealthStatus == "Unhealthy" {
		return fmt.Errorf("%w: %s: instance %s is %s/%s", fleeting.ErrInstanceUnhealthy, g.where(), instance, m.LifecycleState, m.HealthStatus)
	}
	return nil
}
