package sim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// cloud is the simulated instance group: an instance boots for bootDelay after the Increase that asked
// for it and takes deleteDelay to go away after Decrease. It keeps every instance's life for billing.
//
// With a warm pool (warmPool > 0) it also keeps that many stopped instances beside the group, as an
// Auto Scaling warm pool does: each boots once (bootDelay, billed as running) and then waits stopped
// (billed as warm). Increase takes stopped pool instances first; they run warmStartDelay later. The
// pool is refilled with fresh instances at once. Pool instances are not in the group: Update does not
// list them, as DescribeAutoScalingGroups does not.
type cloud struct {
	clock          *simClock
	bootDelay      time.Duration
	deleteDelay    time.Duration
	warmPool       int
	warmStartDelay time.Duration
	kick           func()

	mu         sync.Mutex
	all        []*cloudInstance // in creation order; index+1 is the ID's number
	live       []*cloudInstance // in the group and not gone yet, in creation order
	pool       []*cloudInstance // in the warm pool, in creation order
	peak       int
	updates    int
	warmStarts int
}

type cloudInstance struct {
	id      string
	created time.Time
	// ready is when it runs: bootDelay after creation, or warmStartDelay after it left the pool.
	ready time.Time
	// warmFrom is when a pool instance finished its first boot and stopped, warmUntil when the group
	// took it (zero while it is still in the pool); both zero for an instance launched into the group.
	warmFrom, warmUntil time.Time
	// deleting is when Decrease accepted it; gone when it stopped existing (and being billed).
	deleting, gone time.Time
}

var _ fleeting.InstanceGroup = (*cloud)(nil)

func (c *cloud) Init(context.Context, logrus.FieldLogger, fleeting.Settings) (fleeting.ProviderInfo, error) {
	return fleeting.ProviderInfo{ID: "sim", Version: "sim"}, nil
}

func (c *cloud) Update(_ context.Context, fn func(string, fleeting.State)) error {
	c.mu.Lock()
	c.updates++
	now := c.clock.Now()
	type listed struct {
		id string
		st fleeting.State
	}
	var out []listed
	c.pruneLocked(now)
	for _, in := range c.live {
		switch {
		case !in.deleting.IsZero():
			out = append(out, listed{in.id, fleeting.StateDeleting})
		case !now.Before(in.ready):
			out = append(out, listed{in.id, fleeting.StateRunning})
		default:
			out = append(out, listed{in.id, fleeting.StateCreating})
		}
	}
	c.mu.Unlock()
	for _, l := range out {
		fn(l.id, l.st)
	}
	return nil
}

func (c *cloud) Increase(_ context.Context, n int) (int, error) {
	c.mu.Lock()
	now := c.clock.Now()
	c.pruneLocked(now)
	for range n {
		in := c.takeWarmLocked(now)
		if in == nil {
			in = c.newInstanceLocked(now)
			in.ready = now.Add(c.bootDelay)
		}
		c.live = append(c.live, in)
	}
	c.fillPoolLocked(now)
	c.peak = max(c.peak, len(c.live))
	c.mu.Unlock()
	c.kick()
	return n, nil
}

func (c *cloud) Decrease(_ context.Context, ids []string) ([]string, error) {
	c.mu.Lock()
	now := c.clock.Now()
	var accepted []string
	for _, id := range ids {
		in := c.lookupLocked(id)
		if in == nil || !in.deleting.IsZero() {
			continue
		}
		in.deleting, in.gone = now, now.Add(c.deleteDelay)
		accepted = append(accepted, id)
	}
	c.pruneLocked(now)
	c.mu.Unlock()
	c.kick()
	if len(accepted) < len(ids) {
		return accepted, fmt.Errorf("%d of %d instances are unknown or already being deleted", len(ids)-len(accepted), len(ids))
	}
	return accepted, nil
}

func (c *cloud) ConnectInfo(_ context.Context, id string) (fleeting.ConnectInfo, error) {
	return fleeting.ConnectInfo{ID: id, ConnectorConfig: fleeting.ConnectorConfig{OS: "linux", Arch: "amd64", Protocol: fleeting.ProtocolSSH}}, nil
}

func (c *cloud) Heartbeat(context.Context, string) error { return nil }

func (c *cloud) Shutdown(context.Context) error { return nil }

func (c *cloud) newInstanceLocked(now time.Time) *cloudInstance {
	in := &cloudInstance{id: fmt.Sprintf("sim-%06d", len(c.all)+1), created: now}
	c.all = append(c.all, in)
	return in
}

// takeWarmLocked moves the oldest stopped pool instance into the group, starting now, or returns nil
// when none has finished its first boot (the group then launches a fresh one, as Auto Scaling does).
func (c *cloud) takeWarmLocked(now time.Time) *cloudInstance {
	i := slices.IndexFunc(c.pool, func(in *cloudInstance) bool { return !now.Before(in.warmFrom) })
	if i < 0 {
		return nil
	}
	in := c.pool[i]
	c.pool = slices.Delete(c.pool, i, i+1)
	in.warmUntil, in.ready = now, now.Add(c.warmStartDelay)
	c.warmStarts++
	return in
}

// fillPoolLocked launches pool instances up to warmPool; each stops once its first boot is over.
func (c *cloud) fillPoolLocked(now time.Time) {
	for len(c.pool) < c.warmPool {
		in := c.newInstanceLocked(now)
		in.warmFrom = now.Add(c.bootDelay)
		c.pool = append(c.pool, in)
	}
}

// pruneLocked forgets instances whose deletion has finished by now.
func (c *cloud) pruneLocked(now time.Time) {
	c.live = slices.DeleteFunc(c.live, func(in *cloudInstance) bool { return !in.gone.IsZero() && !now.Before(in.gone) })
}

// lookupLocked finds an instance by the number in its ID.
func (c *cloud) lookupLocked(id string) *cloudInstance {
	var n int
	if _, err := fmt.Sscanf(id, "sim-%d", &n); err != nil || n < 1 || n > len(c.all) {
		return nil
	}
	return c.all[n-1]
}

// nextDeletion is the earliest deletion still to finish after now, so that the instance count the
// simulator plots drops when the cloud is done rather than when the taskscaler next looks.
func (c *cloud) nextDeletion(now time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, in := range c.live {
		if !in.gone.IsZero() && in.gone.After(now) && (next.IsZero() || in.gone.Before(next)) {
			next = in.gone
		}
	}
	return next, !next.IsZero()
}

// usage is what the fleet cost from from to end: running instance time from creation to the end of
// deletion (or to end for instances still there), booting included, less the time pool instances
// spent stopped, which is warm; and the instances created in that time (pool instances included).
func (c *cloud) usage(from, end time.Time) (running, warm time.Duration, created, peak int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, in := range c.all {
		stop := end
		if !in.gone.IsZero() && in.gone.Before(end) {
			stop = in.gone
		}
		life := overlap(in.created, stop, from, end)
		if !in.warmFrom.IsZero() {
			warmStop := stop
			if !in.warmUntil.IsZero() {
				warmStop = in.warmUntil
			}
			stopped := overlap(in.warmFrom, warmStop, from, end)
			warm += stopped
			life -= stopped
		}
		running += life
		if !in.created.Before(from) {
			created++
		}
	}
	return running, warm, created, c.peak
}

// overlap is how much of [a, b) lies within [from, end).
func overlap(a, b, from, end time.Time) time.Duration {
	a, b = maxTime(a, from), minTime(b, end)
	if !b.After(a) {
		return 0
	}
	return b.Sub(a)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// alive counts the group's instances that exist at now, booting and deleting ones included (not the
// warm pool's).
func (c *cloud) alive(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	return len(c.live)
}
