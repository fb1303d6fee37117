package taskscaler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
)

// fakeGroup is an in-memory cloud on a fake clock: instances boot for bootDelay, are deleted after
// deleteDelay, and it can fail or accept only part of an Increase.
type fakeGroup struct {
	clock       *clock.Fake
	bootDelay   time.Duration
	deleteDelay time.Duration

	mu            sync.Mutex
	next          int
	insts         map[string]*fakeInst
	increaseLimit int   // accept at most this many per Increase; 0 = all
	increaseErr   error // returned by every Increase while set
	increaseCalls []int
	increaseAt    []time.Time
	decreaseCalls [][]string
	maxAlive      int           // most instances in the group at once, deleting ones included
	updates       int           // Update calls so far
	connectInfos  int           // ConnectInfo calls so far
	connectTTL    time.Duration // credentials expire this long after ConnectInfo, like EC2 Instance Connect keys; 0 = never
}

type fakeInst struct {
	created   time.Time
	deleting  bool
	deletedAt time.Time
	timeout   bool
}

var _ fleeting.InstanceGroup = (*fakeGroup)(nil)

func newFakeGroup(c *clock.Fake) *fakeGroup {
	return &fakeGroup{clock: c, bootDelay: 10 * time.Second, deleteDelay: 5 * time.Second, insts: map[string]*fakeInst{}}
}

func (g *fakeGroup) Init(context.Context, logrus.FieldLogger, fleeting.Settings) (fleeting.ProviderInfo, error) {
	return fleeting.ProviderInfo{ID: "fake"}, nil
}

func (g *fakeGroup) Update(_ context.Context, fn func(string, fleeting.State)) error {
	g.mu.Lock()
	g.updates++
	now := g.clock.Now()
	states := map[string]fleeting.State{}
	for id, in := range g.insts {
		switch {
		case in.deleting && !now.Before(in.deletedAt):
			delete(g.insts, id)
		case in.deleting:
			states[id] = fleeting.StateDeleting
		case in.timeout:
			states[id] = fleeting.StateTimeout
		case now.Sub(in.created) >= g.bootDelay:
			states[id] = fleeting.StateRunning
		default:
			states[id] = fleeting.StateCreating
		}
	}
	g.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(states)) {
		fn(id, states[id])
	}
	return nil
}

func (g *fakeGroup) Increase(_ context.Context, n int) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.increaseCalls = append(g.increaseCalls, n)
	g.increaseAt = append(g.increaseAt, g.clock.Now())
	if g.increaseErr != nil {
		return 0, g.increaseErr
	}
	got := n
	if g.increaseLimit > 0 {
		got = min(n, g.increaseLimit)
	}
	for range got {
		g.addLocked(g.clock.Now())
	}
	if got < n {
		return got, fmt.Errorf("quota: only %d of %d instances launched", got, n)
	}
	return got, nil
}

func (g *fakeGroup) addLocked(created time.Time) string {
	g.next++
	id := fmt.Sprintf("i-%02d", g.next)
	g.insts[id] = &fakeInst{created: created}
	g.maxAlive = max(g.maxAlive, len(g.insts))
	return id
}

// addRunning puts an instance in the group behind the taskscaler's back.
func (g *fakeGroup) addRunning() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.addLocked(g.clock.Now().Add(-g.bootDelay))
}

// vanish removes an instance at once, as a cloud-side termination would.
func (g *fakeGroup) vanish(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.insts, id)
}

func (g *fakeGroup) Decrease(_ context.Context, ids []string) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.decreaseCalls = append(g.decreaseCalls, slices.Clone(ids))
	var ok []string
	var errs []error
	for _, id := range ids {
		in, found := g.insts[id]
		if !found {
			errs = append(errs, fmt.Errorf("instance %s not found", id))
			continue
		}
		if !in.deleting {
			in.deleting, in.deletedAt = true, g.clock.Now().Add(g.deleteDelay)
		}
		ok = append(ok, id)
	}
	return ok, errors.Join(errs...)
}

func (g *fakeGroup) ConnectInfo(_ context.Context, id string) (fleeting.ConnectInfo, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.connectInfos++
	if _, ok := g.insts[id]; !ok {
		return fleeting.ConnectInfo{}, fmt.Errorf("instance %s not found", id)
	}
	ci := fleeting.ConnectInfo{ID: id, InternalAddr: "127.0.1.1:22", ConnectorConfig: fleeting.ConnectorConfig{Username: "ci", Protocol: fleeting.ProtocolSSH}}
	if g.connectTTL > 0 {
		exp := g.clock.Now().Add(g.connectTTL)
		ci.Expires = &exp
	}
	return ci, nil
}

func (g *fakeGroup) Heartbeat(context.Context, string) error { return nil }
func (g *fakeGroup) Shutdown(context.Context) error          { return nil }

func (g *fakeGroup) ids() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Sorted(maps.Keys(g.insts))
}

func (g *fakeGroup) calls() ([]int, [][]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.increaseCalls), slices.Clone(g.decreaseCalls)
}

func (g *fakeGroup) decreased(id string) bool {
	_, dec := g.calls()
	for _, ids := range dec {
		if slices.Contains(ids, id) {
			return true
		}
	}
	return false
}

func (g *fakeGroup) updateCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.updates
}
