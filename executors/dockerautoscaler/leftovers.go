package dockerautoscaler

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
)

// Why an instance's engine may hold the containers, networks and volumes of jobs this process does not
// run (docker.RemoveLeftovers): adopted instances may have run jobs of the previous process (a kill -9
// leaves them running, and keep_instance_with_acquisitions keeps such instances); a new instance may be
// a static host or share an engine with a removed one; a connection lost while a job used it kept that
// job's cleanup from reaching the engine.
const (
	leftoversAdopted = "adopted at start"
	leftoversNew     = "new instance"
	leftoversLost    = "connection lost during a job"
)

// leftoverMark is an instance whose engine may hold leftovers. It stays until a removal that started
// after the latest mark succeeded, or the instance leaves the group; an instance that cannot be reached
// is tried again every update_interval.
type leftoverMark struct {
	why     string
	gen     int // bumped by every mark, so a removal that started before the latest one does not clear it
	running bool
}

// markLeftovers notes that the instance's engine may hold leftovers and starts removing them.
func (p *Provider) markLeftovers(id, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.markLeftoversLocked(id, why)
}

func (p *Provider) markLeftoversLocked(id, why string) {
	m := p.leftovers[id]
	if m == nil {
		m = &leftoverMark{}
		p.leftovers[id] = m
	}
	m.why = why
	m.gen++
	p.startLeftoverRemovalLocked(id, m)
}

// startLeftoverRemovalLocked starts one removal per instance at a time, none once Shutdown began.
func (p *Provider) startLeftoverRemovalLocked(id string, m *leftoverMark) {
	if m.running || p.bgCtx.Err() != nil {
		return
	}
	m.running = true
	p.bg.Add(1)
	go p.removeLeftovers(id, m.why, m.gen)
}

// retryLeftovers tries the marks again once per update_interval, until Shutdown begins.
func (p *Provider) retryLeftovers(every time.Duration) {
	defer close(p.retried)
	p.tick(every, func() {
		states := map[string]string{}
		for _, in := range p.ts.Instances() {
			states[in.ID] = in.State
		}
		p.mu.Lock()
		p.retryLeftoversLocked(states)
		p.mu.Unlock()
	})
}

// tick calls fn every interval until the background work stops (Shutdown).
func (p *Provider) tick(every time.Duration, fn func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.bgCtx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// leftoversOrphaned is why an instance is swept for another's leftovers.
const leftoversOrphaned = "an instance left before its leftovers were removed"

// retryLeftoversLocked tries the marked instances serving slots again. The mark of an instance that left
// the group or is being removed moves to one that serves slots: a cloud machine takes its containers
// with it, but a static host or the local plugin's shared engine keeps them, and a sweep of an engine
// without any costs one listing.
func (p *Provider) retryLeftoversLocked(states map[string]string) {
	var serving []string
	for id, st := range states {
		if st == "ready" || st == "draining" {
			serving = append(serving, id)
		}
	}
	slices.Sort(serving)
	orphaned := false
	for id, m := range p.leftovers {
		switch states[id] {
		case "ready", "draining":
			p.startLeftoverRemovalLocked(id, m)
		case "creating", "readying":
			// Its ready hook marks it again once its engine answers.
		default:
			delete(p.leftovers, id)
			orphaned = orphaned || m.why != leftoversOrphaned
		}
	}
	if orphaned && len(serving) > 0 {
		p.markLeftoversLocked(serving[0], leftoversOrphaned)
	}
}

func (p *Provider) removeLeftovers(id, why string, gen int) {
	defer p.bg.Done()
	ctx, cancel := context.WithTimeout(p.bgCtx, docker.CleanupTimeout)
	defer cancel()
	removed, err := p.removeLeftoversOn(ctx, id)

	p.mu.Lock()
	if m := p.leftovers[id]; m != nil {
		m.running = false
		switch {
		case err != nil:
		case m.gen == gen:
			delete(p.leftovers, id)
		default:
			// Marked again while this removal ran: what the latest mark is about may have come after the
			// listings.
			p.startLeftoverRemovalLocked(id, m)
		}
	}
	p.mu.Unlock()

	if err != nil && p.bgCtx.Err() != nil {
		return
	}
	docker.LogLeftovers(p.log.WithFields(logrus.Fields{"instance": id, "reason": why}), removed, err)
}

func (p *Provider) removeLeftoversOn(ctx context.Context, id string) (docker.Leftovers, error) {
	lease, err := p.pool.Get(ctx, id)
	if err != nil {
		return docker.Leftovers{}, fmt.Errorf("instance %s cannot be reached; tried again every update_interval while it is in the group: %w", id, err)
	}
	defer lease.Release()
	cli, closeCli, err := lease.DockerClient()
	if err != nil {
		return docker.Leftovers{}, err
	}
	defer closeCli()
	p.mu.Lock()
	runner := p.runnerShort
	p.mu.Unlock()
	return docker.RemoveLeftovers(ctx, cli, runner, p.systemID, docker.Running)
}

// noteRunner keeps the runner's short token as the latest job knows it: a rotated token labels the jobs
// from then on.
func (p *Provider) noteRunner(rc *config.RunnerConfig) {
	if rc == nil || rc.Token == "" {
		return
	}
	p.mu.Lock()
	p.runnerShort = config.ShortToken(rc.Token)
	p.mu.Unlock()
}
