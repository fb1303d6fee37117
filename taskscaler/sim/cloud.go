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
type cloud struct {
	clock       *simClock
	bootDelay   time.Duration
	deleteDelay time.Duration
	kick        func()

	mu      sync.Mutex
	all     []*cloudInstance // in creation order; index+1 is the ID's number
	live    []*cloudInstance // not gone yet, in creation order
	peak    int
	updates int
}

type cloudInstance struct {
	id      string
	created time.Time
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
		case now.Sub(in.created) >= c.bootDelay:
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
		in := &cloudInstance{id: fmt.Sprintf("sim-%06d", len(c.all)+1), created: now}
		c.all = append(c.all, in)
		c.live = append(c.live, in)
	}
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

// usage is what the fleet cost from from to end: instance time from creation to the end of deletion
// (or to end for instances still there), booting included, and the instances created in that time.
func (c *cloud) usage(from, end time.Time) (total time.Duration, created, peak int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, in := range c.all {
		stop := end
		if !in.gone.IsZero() && in.gone.Before(end) {
			stop = in.gone
		}
		if begin := maxTime(in.created, from); stop.After(begin) {
			total += stop.Sub(begin)
		}
		if !in.created.Before(from) {
			created++
		}
	}
	return total, created, c.peak
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// alive counts the instances that exist at now, booting and deleting ones included.
func (c *cloud) alive(now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	return len(c.live)
}
