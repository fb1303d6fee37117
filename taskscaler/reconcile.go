package taskscaler

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
)

// healthCheckParallelism bounds concurrent health checks, so a large fleet does not open hundreds of
// connections at once.
const healthCheckParallelism = 16

func (ts *Taskscaler) loop(ctx context.Context) {
	defer close(ts.loopDone)
	for {
		ts.mu.Lock()
		wait := ts.opts.UpdateInterval
		if ts.expecting {
			wait = ts.opts.UpdateIntervalWhenExpecting
		}
		ts.mu.Unlock()
		t := ts.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-ts.wake:
			t.Stop()
			g := ts.clock.NewTimer(wakeGather)
			select {
			case <-ctx.Done():
				g.Stop()
				return
			case <-g.C():
			}
		}
		ts.reconcile(ctx)
	}
}

// reconcile is one pass: list, apply, scale. Cloud calls happen outside the lock.
func (ts *Taskscaler) reconcile(ctx context.Context) {
	seen := map[string]fleeting.State{}
	err := ts.group.Update(ctx, func(id string, st fleeting.State) { seen[id] = st })
	if err != nil {
		if ctx.Err() == nil {
			ts.mu.Lock()
			ts.counters.UpdateFailures++
			ts.expecting = true
			ts.mu.Unlock()
			ts.log.WithError(err).Warn("could not list the instance group; scaling paused until it answers")
		}
		return
	}

	ts.mu.Lock()
	ts.accountLocked()
	now := ts.clock.Now()
	gone := ts.applyLocked(seen, now)
	create, remove := ts.planLocked(now)
	ts.mu.Unlock()
	ts.tellGone(gone)

	if create > 0 {
		ts.increase(ctx, create)
	}
	if len(remove) > 0 {
		ts.decrease(ctx, remove)
	}
	ts.maybeHealthCheck()

	ts.mu.Lock()
	ts.expecting = ts.expectingLocked()
	ts.mu.Unlock()
	ts.markDirty()
}

// applyLocked folds one listing of the group into the instance table and returns the instances that
// left it.
func (ts *Taskscaler) applyLocked(seen map[string]fleeting.State, now time.Time) (gone []string) {
	restoring := ts.restored != nil
	for _, id := range slices.Sorted(maps.Keys(seen)) {
		st := seen[id]
		in, known := ts.instances[id]
		if !known {
			if st == fleeting.StateDeleted {
				continue
			}
			in = ts.newInstanceLocked(id, now)
			if restoring {
				ts.adoptLocked(in, st)
			} else {
				if asked, ok := ts.consumeRequestLocked(); ok {
					ts.observe(MeasureCreation, now.Sub(asked))
					in.askedAt = asked
				}
				ts.counters.InstancesCreated++
				ts.log.WithFields(logrus.Fields{"instance": id, "state": st}).Info("new instance")
			}
		}
		in.reported = st
		switch st {
		case fleeting.StateRunning:
			if in.state == stCreating {
				in.state, in.runningAt = stReadying, now
				ts.observe(MeasureIsRunning, now.Sub(in.createdAt))
				ts.startReadyUp(in.id)
			}
		case fleeting.StateCreating:
		case fleeting.StateTimeout:
			if in.state < stRemove {
				ts.condemnLocked(in, "the plugin reports it timed out")
			}
		case fleeting.StateDeleting:
			if in.state < stRemove {
				ts.counters.UnexpectedRemovals++
				ts.loseLocked(in, "instance unexpectedly removed")
				ts.log.WithField("instance", id).Warn("instance unexpectedly removed (being deleted outside the taskscaler)")
			}
			if in.state != stRemoving {
				in.state, in.removeAt = stRemoving, now
			}
		case fleeting.StateDeleted:
			ts.dropLocked(in)
			gone = append(gone, id)
		default:
			ts.log.WithFields(logrus.Fields{"instance": id, "state": st}).Warn("plugin reported an unknown instance state; ignoring it")
		}
	}
	for id, in := range ts.instances {
		if _, ok := seen[id]; !ok {
			ts.dropLocked(in)
			gone = append(gone, id)
		}
	}
	for _, in := range ts.instances {
		if (in.state == stCreating || in.state == stReadying) && now.Sub(in.createdAt) > ts.opts.CreationTimeout {
			ts.condemnLocked(in, fmt.Sprintf("not ready within %s", ts.opts.CreationTimeout))
		}
	}
	// Requests the plugin accepted but never listed would block scaling forever.
	ts.requests = slices.DeleteFunc(ts.requests, func(r request) bool {
		if now.Sub(r.at) > ts.opts.CreationTimeout {
			ts.log.WithField("count", r.n).Warn("the plugin accepted instances that never appeared; no longer waiting for them")
			return true
		}
		return false
	})
	if restoring {
		ts.restored, ts.restoredRan = nil, nil
	}
	return gone
}

// tellGone passes instances that left the group to the Gone hook; it is called without the lock.
func (ts *Taskscaler) tellGone(ids []string) {
	if ts.opts.Gone == nil {
		return
	}
	for _, id := range ids {
		ts.opts.Gone(id)
	}
}

// adoptLocked decides, on the first listing after start, what happens to an instance found in the group.
func (ts *Taskscaler) adoptLocked(in *instance, st fleeting.State) {
	saved, ok := ts.restored[in.id]
	log := ts.log.WithField("instance", in.id)
	if !ok {
		ts.counters.UnknownRemoved++
		ts.condemnLocked(in, "no data on pre-existing instance so removing for safety")
		return
	}
	in.useCount = saved.UseCount
	in.createdAt = saved.CreatedAt
	in.readyAt = saved.ReadyAt
	if !saved.IdleSince.IsZero() {
		in.idleSince = saved.IdleSince
	}
	in.data = saved.Data
	ran := ts.restoredRan[in.id]
	if ran > 0 && !ts.opts.KeepInstanceWithAcquisitions {
		ts.condemnLocked(in, fmt.Sprintf("had %d jobs in flight when the previous process stopped", ran))
		return
	}
	in.useCount += ran
	switch s := parseState(saved.State); {
	case s >= stRemove:
		ts.condemnLocked(in, "was being removed when the previous process stopped")
		return
	case (s == stReady || s == stDraining) && st == fleeting.StateRunning:
		// It passed its ready command before; it is serving again at once.
		in.state = stReady
		if ran > 0 {
			in.idleSince = ts.clock.Now()
		}
		ts.refreshDrainLocked(in)
		if in.state == stDraining {
			ts.condemnLocked(in, fmt.Sprintf("reached max_use_count (%d)", ts.opts.MaxUseCount))
			return
		}
	}
	ts.counters.InstancesAdopted++
	log.WithFields(logrus.Fields{"use_count": in.useCount, "state": in.state}).Info("adopted instance from saved state")
}

// consumeRequestLocked counts a newly listed instance against the oldest open request and returns
// when that request was accepted; false when the instance was asked for by nobody we know.
func (ts *Taskscaler) consumeRequestLocked() (time.Time, bool) {
	if len(ts.requests) == 0 {
		return time.Time{}, false
	}
	at := ts.requests[0].at
	ts.requests[0].n--
	if ts.requests[0].n <= 0 {
		ts.requests = ts.requests[1:]
	}
	return at, true
}

// dropLocked forgets an instance that is gone from the group.
func (ts *Taskscaler) dropLocked(in *instance) {
	now := ts.clock.Now()
	ts.observe(MeasureLife, now.Sub(in.createdAt))
	if !in.deleteAskedAt.IsZero() {
		ts.observe(MeasureDeletion, now.Sub(in.deleteAskedAt))
	}
	if in.state < stRemove {
		ts.counters.UnexpectedRemovals++
		ts.loseLocked(in, "instance unexpectedly removed")
		ts.log.WithField("instance", in.id).Warn("instance unexpectedly removed")
	} else {
		ts.counters.InstancesRemoved++
	}
	delete(ts.instances, in.id)
	ts.markDirty()
}

func (ts *Taskscaler) demandLocked() capacity.Demand {
	return capacity.Demand{
		Acquired:    len(ts.acquired),
		Reserved:    len(ts.reserved),
		Pending:     len(ts.waiters),
		Unavailable: ts.unavailableLocked(),
	}
}

func (ts *Taskscaler) fleet() capacity.Fleet {
	return capacity.Fleet{
		CapacityPerInstance:   ts.opts.CapacityPerInstance,
		MaxInstances:          ts.opts.MaxInstances,
		ReservationThrottling: ts.opts.ReservationThrottling,
	}
}

// planLocked picks instances to remove (marking them) and how many to create.
func (ts *Taskscaler) planLocked(now time.Time) (create int, remove []string) {
	p := ts.activeLocked(now)
	actual := ts.liveLocked()
	var views []capacity.InstanceView
	for _, in := range ts.instances {
		if in.state >= stRemove {
			continue
		}
		views = append(views, capacity.InstanceView{
			ID:          in.id,
			Ready:       in.state == stReady || in.state == stDraining,
			Acquired:    len(in.acq),
			Unavailable: ts.unavailableOnLocked(in),
			Retired:     in.state == stDraining || (ts.opts.MaxUseCount > 0 && in.useCount >= ts.opts.MaxUseCount),
			IdleSince:   in.idleSince,
		})
	}
	// The ID breaks ties so that which of two instances idle since the same instant goes is decided
	// the same way every time (the simulator relies on it).
	slices.SortFunc(views, func(a, b capacity.InstanceView) int {
		return cmp.Or(a.IdleSince.Compare(b.IdleSince), cmp.Compare(a.ID, b.ID))
	})
	for _, id := range capacity.SelectRemovals(now, ts.fleet(), p, ts.demandLocked(), ts.requestedLocked(), views) {
		in := ts.instances[id]
		reason := fmt.Sprintf("idle for %s beyond the idle target", now.Sub(in.idleSince).Round(time.Second))
		if in.state == stDraining || (ts.opts.MaxUseCount > 0 && in.useCount >= ts.opts.MaxUseCount) {
			reason = fmt.Sprintf("reached max_use_count (%d)", ts.opts.MaxUseCount)
		}
		ts.condemnLocked(in, reason)
	}

	// Instances just chosen for removal no longer count, nor do their unavailable slots.
	ts.desired = capacity.Desired(ts.fleet(), p, ts.demandLocked())
	total := len(ts.instances) + ts.requestedLocked()
	want := capacity.ToCreate(ts.fleet(), ts.desired, ts.liveLocked(), total)
	if want > 0 && now.Before(ts.blocked) {
		ts.log.WithFields(logrus.Fields{"wanted": want, "until": ts.blocked}).Debug("instance creation backing off after failures")
	} else {
		create = capacity.Throttled(ts.throttle, now, want)
	}

	for _, in := range ts.instances {
		retry := in.state == stRemoving && in.reported != fleeting.StateDeleting && now.Sub(in.removeAt) >= ts.opts.DeletionRetryInterval
		if in.state == stRemove || retry {
			remove = append(remove, in.id)
			in.state, in.removeAt = stRemoving, now
			if in.deleteAskedAt.IsZero() {
				in.deleteAskedAt = now
			}
		}
	}
	slices.Sort(remove)
	ts.decideLocked(now, want, create, remove, actual)
	return create, remove
}

func (ts *Taskscaler) increase(ctx context.Context, n int) {
	got, err := ts.group.Increase(ctx, n)
	got = min(max(got, 0), n)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.counters.IncreaseAsked += uint64(n)
	now := ts.clock.Now()
	if got > 0 {
		ts.requests = append(ts.requests, request{n: got, at: now})
	}
	ts.counters.InstancesRequested += uint64(got)
	log := ts.log.WithFields(logrus.Fields{"asked": n, "accepted": got})
	if err != nil || got < n {
		ts.counters.IncreaseFailures++
		ts.failedCreateLocked(now)
		log.WithError(err).WithField("retry_after", ts.blocked.Sub(now)).Warn("the plugin did not accept every new instance")
		return
	}
	log.Info("asked for new instances")
}

func (ts *Taskscaler) decrease(ctx context.Context, ids []string) {
	accepted, err := ts.group.Decrease(ctx, ids)
	ts.mu.Lock()
	ts.counters.DecreaseAsked += uint64(len(ids))
	ts.counters.DecreaseAccepted += uint64(len(accepted))
	ts.mu.Unlock()
	if err == nil && len(accepted) == len(ids) {
		ts.log.WithField("instances", ids).Info("asked to remove instances")
		return
	}
	ts.mu.Lock()
	ts.counters.DecreaseFailures++
	ts.mu.Unlock()
	ts.log.WithError(err).WithFields(logrus.Fields{"asked": ids, "accepted": accepted, "retry_after": ts.opts.DeletionRetryInterval}).
		Warn("the plugin did not accept every removal; retrying later")
}

func (ts *Taskscaler) failedCreateLocked(now time.Time) {
	ts.failStreak++
	ts.blocked = now.Add(capacity.Backoff(ts.failStreak, ts.opts.CreateBackoff, ts.opts.MaxCreateBackoff))
}

func (ts *Taskscaler) expectingLocked() bool {
	if len(ts.requests) > 0 || len(ts.waiters) > 0 || ts.liveLocked() < ts.desired {
		return true
	}
	for _, in := range ts.instances {
		if in.state != stReady && in.state != stDraining {
			return true
		}
	}
	return false
}

// startReadyUp runs the ReadyUp hook for a newly running instance in the background.
func (ts *Taskscaler) startReadyUp(id string) {
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		ctx, cancel := context.WithTimeout(ts.baseCtx, ts.opts.CreationTimeout)
		defer cancel()
		ci, err := ts.group.ConnectInfo(ctx, id)
		if err != nil {
			err = fmt.Errorf("connection details: %w", err)
		} else if ts.opts.ReadyUp != nil {
			err = ts.opts.ReadyUp(ctx, Instance{ID: id, ConnectInfo: ci, ts: ts})
		}
		ts.mu.Lock()
		defer ts.mu.Unlock()
		in, ok := ts.instances[id]
		if ts.closed || !ok || in.state != stReadying {
			return
		}
		now := ts.clock.Now()
		if err != nil {
			ts.counters.ReadyFailures++
			ts.failedCreateLocked(now)
			ts.log.WithError(err).WithFields(logrus.Fields{"instance": id, "retry_after": ts.blocked.Sub(now)}).
				Warn("instance did not become ready (connection, Docker Engine or instance_ready_command); removing it")
			ts.condemnLocked(in, "not ready")
			return
		}
		ts.failStreak = 0
		ts.accountLocked()
		ts.observe(MeasureReadiness, now.Sub(in.runningAt))
		in.connectInfo = &ci
		in.state = stReady
		in.readyAt, in.idleSince = now, now
		ts.counters.ReadyDuration += now.Sub(in.createdAt)
		ts.counters.InstancesReady++
		if ts.forecast != nil && !in.askedAt.IsZero() {
			ts.forecast.Booted(now.Sub(in.askedAt))
		}
		ts.log.WithFields(logrus.Fields{"instance": id, "after": now.Sub(in.createdAt)}).Info("instance ready")
		ts.assignLocked()
		ts.markDirty()
	}()
}

// maybeHealthCheck starts a round of health checks once per update_interval, in the background so that
// a slow instance never delays scaling.
func (ts *Taskscaler) maybeHealthCheck() {
	if ts.opts.HealthCheck == nil {
		return
	}
	ts.mu.Lock()
	now := ts.clock.Now()
	if ts.closed || ts.hbRunning || now.Sub(ts.lastHB) < ts.opts.UpdateInterval {
		ts.mu.Unlock()
		return
	}
	// The cached connection details go with each check: fetching fresh ones here would make a plugin
	// with short-lived credentials (EC2 Instance Connect) push a key to every instance on every pass.
	var ids []string
	var infos []fleeting.ConnectInfo
	for _, in := range ts.instances {
		if in.state == stReady || in.state == stDraining {
			ids = append(ids, in.id)
			var ci fleeting.ConnectInfo
			if in.connectInfo != nil {
				ci = *in.connectInfo
			}
			infos = append(infos, ci)
		}
	}
	ts.hbRunning, ts.lastHB = true, now
	ts.mu.Unlock()

	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		results := make([]error, len(ids))
		var g errgroup.Group
		g.SetLimit(healthCheckParallelism)
		for i, id := range ids {
			g.Go(func() error {
				ctx, cancel := context.WithTimeout(ts.baseCtx, ts.opts.UpdateInterval)
				defer cancel()
				results[i] = ts.opts.HealthCheck(ctx, Instance{ID: id, ConnectInfo: infos[i], ts: ts})
				return nil
			})
		}
		_ = g.Wait()
		ts.mu.Lock()
		defer ts.mu.Unlock()
		ts.hbRunning = false
		if ts.closed {
			return
		}
		for i, id := range ids {
			in, ok := ts.instances[id]
			if !ok || in.state >= stRemove {
				continue
			}
			if results[i] == nil {
				in.healthFailures = 0
				continue
			}
			in.healthFailures++
			ts.counters.HealthCheckFailures++
			ts.log.WithError(results[i]).WithFields(logrus.Fields{"instance": id, "failures": in.healthFailures, "threshold": ts.opts.FailureThreshold}).
				Warn("instance failed a health check")
			if in.healthFailures >= ts.opts.FailureThreshold {
				ts.counters.UnhealthyRemoved++
				ts.condemnLocked(in, fmt.Sprintf("failed %d health checks in a row", in.healthFailures))
			}
		}
	}()
}
