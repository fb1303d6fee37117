package aws

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
)

var _ fleeting.GroupClaimer = (*InstanceGroup)(nil)

// ClaimTag is the group tag that names the manager scaling it, e.g.
// "s_0123456789ab on host-1 at 2026-12-07T04:00:00Z". It is not propagated to instances; the
// manager's IAM policy lets it write this one tag key only.
const ClaimTag = "fleetrunner:manager"

// maxTagValue is the longest tag value Auto Scaling accepts.
const maxTagValue = 256

// groupClaim is a claim as read from the tag.
type groupClaim struct {
	SystemID, Host string
	At             time.Time
}

// claimValue is the tag value for c claimed at. A host name too long for the tag is cut (on a
// character boundary): it only tells the operator where to look.
func claimValue(c fleeting.Claim, at time.Time) string {
	prefix, suffix := c.SystemID+" on ", " at "+at.UTC().Format(time.RFC3339)
	host := c.Host
	if room := max(maxTagValue-len(prefix)-len(suffix), 0); len(host) > room {
		// Cut at a character boundary, so that a multi-byte character is not split.
		for room > 0 && !utf8.RuneStart(host[room]) {
			room--
		}
		host = host[:room]
	}
	return prefix + host + suffix
}

// parseClaim reads a claim tag value; an error means it is not one claimValue wrote.
func parseClaim(v string) (groupClaim, error) {
	rest, at, ok := cutLast(v, " at ")
	if !ok {
		return groupClaim{}, fmt.Errorf("no %q", " at ")
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return groupClaim{}, fmt.Errorf("claim time: %w", err)
	}
	id, host, ok := strings.Cut(rest, " on ")
	if !ok || id == "" || strings.ContainsAny(id, " \t\n") {
		return groupClaim{}, errors.New(`not "SYSTEM_ID on HOST"`)
	}
	return groupClaim{SystemID: id, Host: host, At: t}, nil
}

func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// Claim implements fleeting.GroupClaimer with the ClaimTag tag on the group: a
// DescribeAutoScalingGroups of its own reads the claim in force (the last listing may predate another
// manager's claim by up to update_interval), CreateOrUpdateTags writes this manager's, and without
// TakeOver a second DescribeAutoScalingGroups reads it back: of two managers that started together and
// both found the group free, the one whose write landed last keeps it. Three calls a refresh, once a
// minute, whatever the jobs. A value that is no claim (edited by hand) counts as stale and is
// overwritten.
func (g *InstanceGroup) Claim(ctx context.Context, c fleeting.Claim) error {
	tags, err := g.groupTags(ctx)
	if err != nil {
		return err
	}
	if err := g.claimedByOther(tags, c); err != nil {
		return err
	}
	value := claimValue(c, time.Now())
	if err := g.client.TagGroup(ctx, g.Name, ClaimTag, value); err != nil {
		return fmt.Errorf("claim the group for this manager (tag %s): %w", ClaimTag, g.apiError("CreateOrUpdateTags", err))
	}
	if !c.TakeOver {
		if tags, err = g.groupTags(ctx); err != nil {
			return err
		}
		if err := g.claimedByOther(tags, c); err != nil {
			return err
		}
	}
	g.log.WithField("claim", value).Debug("group claimed")
	return nil
}

// claimedByOther returns the error for a claim in tags that keeps c's manager from claiming the group,
// or nil.
func (g *InstanceGroup) claimedByOther(tags map[string]string, c fleeting.Claim) error {
	v, ok := tags[ClaimTag]
	if !ok || c.TakeOver {
		return nil
	}
	held, err := parseClaim(v)
	if err != nil {
		g.log.WithError(err).WithFields(logrus.Fields{"tag": ClaimTag, "value": v}).
			Warn("the group's claim tag holds no claim fleetrunner wrote; taking it for a stale claim and overwriting it")
		return nil
	}
	if held.SystemID == c.SystemID || time.Since(held.At) > c.MaxAge {
		return nil
	}
	return &fleeting.GroupClaimedError{Group: g.where(), SystemID: held.SystemID, Host: held.Host, ClaimedAt: held.At}
}

// Unclaim implements fleeting.GroupClaimer: DeleteTags, only while the tag still names c's manager.
func (g *InstanceGroup) Unclaim(ctx context.Context, c fleeting.Claim) error {
	tags, err := g.groupTags(ctx)
	if err != nil {
		return err
	}
	v, ok := tags[ClaimTag]
	if !ok {
		return nil
	}
	// Another manager's claim, or a value edited by hand: neither is this manager's to remove.
	held, perr := parseClaim(v)
	if mine := perr == nil && held.SystemID == c.SystemID; !mine {
		g.log.WithFields(logrus.Fields{"tag": ClaimTag, "value": v}).Info("the group's claim is not this manager's any more; leaving it")
		return nil
	}
	if err := g.client.UntagGroup(ctx, g.Name, ClaimTag); err != nil {
		return fmt.Errorf("remove this manager's claim on the group (tag %s; another manager may claim it once it is %s old): %w",
			ClaimTag, c.MaxAge, g.apiError("DeleteTags", err))
	}
	g.log.Debug("group claim removed")
	return nil
}

// groupTags reads the group's tags with a DescribeAutoScalingGroups of their own.
func (g *InstanceGroup) groupTags(ctx context.Context) (map[string]string, error) {
	grp, err := g.client.Group(ctx, g.Name)
	if errors.Is(err, awsclient.ErrGroupNotFound) {
		return nil, fmt.Errorf("%s: DescribeAutoScalingGroups no longer lists the group: it was deleted or renamed; recreate it or fix plugin_config name", g.where())
	}
	if err != nil {
		return nil, g.apiError("DescribeAutoScalingGroups", err)
	}
	return grp.Tags, nil
}
