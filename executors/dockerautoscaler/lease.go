package dockerautoscaler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state/dynamostate"
)

// errLeaseLost is why a provider whose state lease another manager took takes no job.
var errLeaseLost = errors.New("this manager lost the runner's state lease to another manager; it neither scales the group nor takes jobs until restarted")

// runnerLease is the runner's lease on its fleet with state_storage backend "dynamodb": the provider
// scales the group, takes jobs and writes the state only while it holds it.
type runnerLease struct {
	lease    *dynamostate.Lease
	key      string
	table    string
	duration time.Duration
	// lost is set once a renewal found another holder: the taskscaler is abandoned, Reserve refuses.
	lost atomic.Bool
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
	l := &runnerLease{key: key, table: st.DynamoDBTable, duration: st.GetLeaseDuration(),
		lease: table.Lease(key, state.Holder{SystemID: systemID, Host: host, PID: os.Getpid()}, st.GetLeaseDuration())}
	token, err := l.lease.Acquire(ctx)
	var held *state.LeaseError
	if errors.Is(err, state.ErrHeld) && errors.As(err, &held) {
		return nil, &executors.StandbyError{Holder: held.Current.Holder.String(), RetryAt: held.Current.Expires, Err: err}
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
// lease over is fenced off.
func (l *runnerLease) store() state.Store {
	// Not the provider's background context: the last state is written after the background work
	// stopped; each call is bounded by the lease duration anyway.
	return l.lease.Store(context.Background())
}

// keepLease renews the lease every third of its duration until Shutdown. When another manager took it
// (this one was paused or cut off for longer than the lease), the taskscaler is abandoned at once
// without touching an instance: the new holder scales the group now, and its state is fenced against
// this manager's writes.
func (p *Provider) keepLease() {
	defer close(p.leaseDone)
	if p.lease == nil {
		return
	}
	p.tick(state.RenewInterval(p.lease.duration), func() {
		ctx, cancel := context.WithTimeout(p.bgCtx, p.lease.duration)
		err := p.lease.lease.Renew(ctx)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, state.ErrLost):
			if p.lease.lost.CompareAndSwap(false, true) {
				p.log.WithError(err).Error("lost the runner's state lease to another manager: no more scaling or jobs here; jobs running now finish on their instances")
				p.ts.Abandon()
			}
		case p.bgCtx.Err() == nil:
			p.log.WithError(err).Warn("could not renew the runner's state lease; trying again (it is lost if no renewal gets through before it expires)")
		}
	})
}

// releaseLease hands the lease over after the last state was written, so a standby takes over at once.
func (p *Provider) releaseLease(ctx context.Context) error {
	if p.lease == nil || p.lease.lost.Load() {
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
