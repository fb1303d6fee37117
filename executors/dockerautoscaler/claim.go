package dockerautoscaler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// errClaimLost is why a provider whose group another manager claimed takes no job.
var errClaimLost = errors.New("another manager claimed this runner's group; this manager no longer scales it")

// claimMaxAge is how long this manager's claim on its group keeps other managers off it after its last
// refresh. The claim is refreshed every third of it (a minute), so two refreshes in a row may fail (an
// API hiccup) before it lapses, and the group of a manager that crashed is free after at most this
// long.
const claimMaxAge = 3 * time.Minute

// managerClaim is this manager's claim on its group, when the plugin can claim it
// (fleeting.GroupClaimer): another manager pointed at the group by mistake (another runner token, or
// the file state backend on another host) would terminate this one's instances and it theirs, as
// upstream's do (fleeting-plugin-aws#71).
type managerClaim struct {
	claimer fleeting.GroupClaimer
	claim   fleeting.Claim
}

// claimGroup claims the group for this manager before anything scales it, or returns an error that
// names the manager holding it. It returns nil without error for a plugin that cannot claim. With the
// runner's state lease (takeOver) the lease already decided that this manager scales the group, so
// the claim of the one before it, perhaps still fresh after a crash, is overwritten.
func claimGroup(ctx context.Context, group fleeting.InstanceGroup, info fleeting.ProviderInfo, systemID string, takeOver bool, log logrus.FieldLogger) (*managerClaim, error) {
	claimer, ok := group.(fleeting.GroupClaimer)
	if !ok {
		return nil, nil
	}
	host, _ := os.Hostname()
	c := &managerClaim{claimer: claimer, claim: fleeting.Claim{SystemID: systemID, Host: host, MaxAge: claimMaxAge, TakeOver: takeOver}}
	err := claimer.Claim(ctx, c.claim)
	if errors.Is(err, fleeting.ErrGroupClaimed) {
		return nil, fmt.Errorf("%w; this manager does not scale group %s meanwhile: stop that manager, point this runner's plugin_config at another group, "+
			"or for two managers of one runner (HA) use [runners.autoscaler.state_storage] backend \"dynamodb\"; the claim of a manager that crashed lapses %s after its last refresh",
			err, info.ID, claimMaxAge)
	}
	if err != nil {
		return nil, fmt.Errorf("claim group %s for this manager, so that no other manager scales it: %w", info.ID, err)
	}
	log.WithFields(logrus.Fields{"group": info.ID, "holder": c.claim.Holder(), "take_over": takeOver}).Info("claimed the group: other managers are refused it")
	return c, nil
}

// keepClaim refreshes the claim every third of claimMaxAge until Shutdown.
func (p *Provider) keepClaim() {
	defer close(p.claimDone)
	if p.groupClaim == nil {
		return
	}
	p.tick(claimMaxAge/3, p.refreshClaim)
}

// refreshClaim claims the group again, without taking it over: the takeover, if any, happened at
// start. Finding another manager's fresh claim means that manager took the group over (an operator
// started one with the dynamodb backend, or two started together): this one gives the group up rather
// than fight over it: it stops scaling, and Reserve sends the manager to build the provider again,
// which is refused with the other manager's name while its claim lasts. After a lost lease the new holder
// claims the group, and nothing here scales it any more.
func (p *Provider) refreshClaim() {
	if p.gaveUp.Load() != nil {
		return
	}
	refresh := p.groupClaim.claim
	refresh.TakeOver = false
	ctx, cancel := context.WithTimeout(p.bgCtx, claimMaxAge/3)
	err := p.groupClaim.claimer.Claim(ctx, refresh)
	cancel()
	var held *fleeting.GroupClaimedError
	switch {
	case err == nil:
	case errors.As(err, &held):
		p.giveUp(errClaimLost, err, "another manager ("+held.SystemID+" on "+held.Host+") claimed this runner's group, so that the two would remove each other's instances")
	case p.bgCtx.Err() == nil:
		p.log.WithError(err).Warn("could not refresh this manager's claim on the group; trying again (other managers may take the group once the claim is " + claimMaxAge.String() + " old)")
	}
}

// releaseClaim removes the claim after the group was let go, so that the next manager anywhere may
// claim it at once.
func (p *Provider) releaseClaim(ctx context.Context) error {
	if p.groupClaim == nil || p.gaveUp.Load() != nil {
		return nil
	}
	if err := p.groupClaim.claimer.Unclaim(ctx, p.groupClaim.claim); err != nil {
		return fmt.Errorf("remove this manager's claim on group %s (other managers may claim it once it is %s old): %w", p.info.ID, claimMaxAge, err)
	}
	p.log.WithField("group", p.info.ID).Info("released the claim on the group")
	return nil
}
