package dockerautoscaler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state/dynamostate"
)

// errLeaseLost is why a provider that gave its fleet up (lose) takes no job.
var errLeaseLost = errors.New("this manager no longer holds the runner's state lease; it neither scales the group nor takes jobs, and waits on standby")

// runnerLease is the runner's lease on its fleet with state_storage backend "dynamodb": the provider
// scales the group, takes jobs and writes the state only while it holds it.
type runnerLease struct {
	lease state.Lease
	// base is the state store the lease fences.
	base  state.Store
	key   string
	table string
	// acquired is when the lease was taken, the first renewal's reference; token is its fencing token
	// and holder this manager, for the status.
	acquired time.Time
	token    state.Token
	holder   string
	duration time.Duration
}

// acquireLease takes the runner's lease in the DynamoDB state table. While another manager holds it,
// the error is an *executors.StandbyError: the manager asks again when that holder's claim runs out,
// so two managers never scale one group and a standby takes over a lost holder's fleet.
func acquireLease(ctx context.Context, runner *config.RunnerConfig, systemID string, log logrus.FieldLogger) (*runnerLease, error) {
	st := runner.Autoscaler.StateStorage
	table, err := dynamostate.New(ctx, dynamostate.Config{Table: st.DynamoDBTable, Region: st.DynamoDBRegion, Endpoint: st.DynamoDBEndpoint})
	if err != nil {
		return nil, fmt.Errorf("[runners.autoscaler.state_storage]: %w", err)
	}
	host, _ := os.Hostname()
	key := state.Key(stateRunner(runner))
	me := state.Holder{SystemID: systemID, Host: host, PID: os.Getpid()}
	lease := table.Lease(key, me, st.GetLeaseDuration())
	// Not the provider's background context: the last state is written after the background work
	// stopped; each call is bounded by the lease duration anyway.
	l := &runnerLease{key: key, table: st.DynamoDBTable, duration: st.GetLeaseDuration(), lease: lease, base: lease.Store(context.Background()), holder: me.String()}
	l.acquired = time.Now()
	token, err := l.lease.Acquire(ctx)
	l.token = token
	var held *state.LeaseError
	if errors.Is(err, state.ErrHeld) && errors.As(err, &held) {
		// Asked again a renewal interval later at the most, not only at the holder's expiry: a holder
		// that stops gracefully releases the lease at once, and the standby should not wait a lease out.
		retry := earliest(held.Current.Expires, time.Now().Add(state.RenewInterval(l.duration)))
		return nil, &executors.StandbyError{Holder: held.Current.Holder.String(), HolderSince: held.Current.Acquired, RetryAt: retry, Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("[runners.autoscaler.state_storage] dynamodb table %s: take the runner's lease: %w; check the table exists (deploy/aws/fleetrunner-state-table.yaml) and the manager may call dynamodb:GetItem and dynamodb:UpdateItem on it",
			st.DynamoDBTable, err)
	}
	log.WithFields(logrus.Fields{"table": st.DynamoDBTable, "state_key": key, "token": token, "lease": l.duration}).
		Info("holding the runner's state lease: this manager scales the group")
	return l, nil
}

// store is the taskscaler's state store bound to the lease: a write after another manager took the
// lease over is fenced off, and makes the provider give the fleet up at once (onFenced) rather than at
// its next renewal, so that it removes no instance the new holder manages meanwhile.
func (l *runnerLease) store(onFenced func(error)) state.Store {
	return fencedStore{Store: l.base, onFenced: onFenced}
}

type fencedStore struct {
	state.Store
	onFenced func(error)
}

func (s fencedStore) Save(snap *state.Snapshot) error {
	err := s.Store.Save(snap)
	if errors.Is(err, state.ErrFenced) {
		s.onFenced(err)
	}
	return err
}

// keepLease renews the lease every third of its duration until Shutdown. The provider gives the fleet
// up (lose) when another manager took the lease, or when no renewal got through by one interval
// before the lease runs out: a standby takes over at expiry by its own clock, and the margin covers
// the skew between the two clocks and this provider's next tick, so that two managers never scale
// the group at once.
func (p *Provider) keepLease() {
	defer close(p.leaseDone)
	if p.lease == nil {
		return
	}
	every := state.RenewInterval(p.lease.duration)
	renewed := p.lease.acquired
	p.tick(every, func() {
		if p.gaveUp.Load() != nil {
			return
		}
		giveUp := renewed.Add(p.lease.duration - every)
		ctx, cancel := context.WithDeadline(p.bgCtx, giveUp)
		sent := time.Now()
		err := p.lease.lease.Renew(ctx)
		cancel()
		switch {
		case err == nil:
			renewed = sent
		case p.bgCtx.Err() != nil:
		case errors.Is(err, state.ErrLost):
			p.giveUp(errLeaseLost, err, "lost the runner's state lease to another manager")
		case !time.Now().Before(giveUp):
			p.giveUp(errLeaseLost, err, "could not renew the runner's state lease before it runs out")
		default:
			p.log.WithError(err).Warn("could not renew the runner's state lease; trying again before it runs out")
		}
	})
}

// giveUp gives the fleet up once another manager has the right to it (reason: errLeaseLost or
// errClaimLost; err says how it was found): the taskscaler is abandoned at once without touching an
// instance or writing state, the lease and the claim are neither renewed nor released, and Reserve
// sends the manager to build the provider again once this one's running jobs ended, which waits on
// standby or is refused naming the other manager.
func (p *Provider) giveUp(reason, err error, what string) {
	if !p.gaveUp.CompareAndSwap(nil, &reason) {
		return
	}
	p.log.WithError(err).Error(what + ": this manager stops scaling the group and taking jobs for the runner; jobs running now go on")
	p.ts.Abandon()
}

// releaseLease hands the lease over after the last state was written, so a standby takes over at once.
func (p *Provider) releaseLease(ctx context.Context) error {
	if p.lease == nil || p.gaveUp.Load() != nil {
		return nil
	}
	if err := p.lease.lease.Release(ctx); err != nil {
		return fmt.Errorf("release the runner's state lease (another manager takes over once it expires, in %s): %w", p.lease.duration, err)
	}
	p.log.Info("released the runner's state lease")
	return nil
}

// usesLease reports whether the runner keeps its state under a lease.
func usesLease(ac *config.AutoscalerConfig) bool {
	return ac.StateStorageEnabled() && ac.StateStorage.GetBackend() == config.StateBackendDynamoDB
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
