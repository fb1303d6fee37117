package dockerautoscaler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// errReclaimNotice is the cause given to a job moved off an instance the cloud announced it reclaims.
var errReclaimNotice = errors.New("the cloud is reclaiming the instance")

// noticeMemory is how long a notice is remembered after it was seen: past the reclaim (two minutes on
// EC2), so a job that learns late of its instance's end still tells it was reclaimed.
const noticeMemory = 10 * time.Minute

// notices tracks the interruption notices the plugin reported and the attempts on each instance whose
// script has not started, so that they can move away at once.
type notices struct {
	mu       sync.Mutex
	seen     map[string]notice
	attempts map[string]map[*scriptWatch]context.CancelCauseFunc
}

type notice struct {
	reason string
	seenAt time.Time
}

// reclaimed returns the reason of the notice for instance id, if one was seen.
func (n *notices) reclaimed(id string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.seen[id]
	return r.reason, ok
}

// track registers an attempt on id; cancel moves it away when a notice comes before its script starts.
// The returned func unregisters it. An attempt that begins on an already noticed instance is moved at
// once.
func (n *notices) track(id string, w *scriptWatch, cancel context.CancelCauseFunc) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r, ok := n.seen[id]; ok {
		cancel(fmt.Errorf("instance %s: %s: %w", id, r.reason, errReclaimNotice))
	}
	if n.attempts[id] == nil {
		n.attempts[id] = map[*scriptWatch]context.CancelCauseFunc{}
	}
	n.attempts[id][w] = cancel
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.attempts[id], w)
		if len(n.attempts[id]) == 0 {
			delete(n.attempts, id)
		}
	}
}

// note records a notice; it reports false for one already seen. The attempts on the instance whose
// script has not started are cancelled, so they move to another instance.
func (n *notices) note(in fleeting.Interruption, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, r := range n.seen {
		if now.Sub(r.seenAt) > noticeMemory {
			delete(n.seen, id)
		}
	}
	if _, ok := n.seen[in.Instance]; ok {
		return false
	}
	n.seen[in.Instance] = notice{reason: in.Reason, seenAt: now}
	for w, cancel := range n.attempts[in.Instance] {
		if !w.started.Load() {
			cancel(fmt.Errorf("instance %s: %s: %w", in.Instance, in.Reason, errReclaimNotice))
		}
	}
	return true
}

// watchInterruptions asks the plugin for interruption notices every interval, through the group's API
// (InterruptionReporter) and from inside each connected instance (InstanceNoticeReader), and drains
// each noticed instance: it takes no new job, goes at once when idle, and its jobs whose script has not
// started move elsewhere. Plugins with neither are left alone.
func (p *Provider) watchInterruptions(every time.Duration) {
	defer close(p.interruptionsDone)
	reporter, _ := p.group.(fleeting.InterruptionReporter)
	reader, _ := p.group.(fleeting.InstanceNoticeReader)
	if reporter == nil && reader == nil {
		return
	}
	var warnedAt time.Time
	p.tick(every, func() {
		ctx, cancel := context.WithTimeout(p.bgCtx, every)
		defer cancel()
		var found []fleeting.Interruption
		if reporter != nil {
			listed, err := reporter.Interruptions(ctx)
			if err != nil {
				p.log.WithError(err).Warn("could not check for interruption notices; instances the cloud reclaims will fail their jobs without warning")
			}
			found = listed
		}
		if reader != nil {
			read, errs := p.readNotices(ctx, reader)
			found = append(found, read...)
			// Every instance fails alike when its image forbids forwarding: say so once in a while, not
			// once per instance per poll.
			if len(errs) > 0 && time.Since(warnedAt) > noticeMemory {
				warnedAt = time.Now()
				p.log.WithError(errs[0]).WithField("instances", len(errs)).Warn("could not read notices from instances' metadata; rebalance recommendations go unseen there")
			}
		}
		now := time.Now()
		for _, in := range found {
			if !p.notices.note(in, now) {
				continue
			}
			fields := logrus.Fields{"instance": in.Instance, "reason": in.Reason}
			if !in.NoticedAt.IsZero() {
				fields["notice_age"] = now.Sub(in.NoticedAt).Round(time.Millisecond)
			}
			p.log.WithFields(fields).Warn("interruption notice: draining the instance")
			p.ts.Drain(in.Instance, in.Reason)
		}
	})
}

// metadataReadsAtOnce bounds the instances read at once, so a large fleet's poll does not open a
// channel on every connection in the same instant.
const metadataReadsAtOnce = 8

// readNotices asks reader about every serving instance the pool holds a connection to and that has
// no notice yet; an instance without a connection costs nothing (a booting one is read once ready).
func (p *Provider) readNotices(ctx context.Context, reader fleeting.InstanceNoticeReader) ([]fleeting.Interruption, []error) {
	var (
		mu    sync.Mutex
		found []fleeting.Interruption
		errs  []error
		g     errgroup.Group
	)
	g.SetLimit(metadataReadsAtOnce)
	for _, in := range p.ts.Instances() {
		if in.State != "ready" && in.State != "draining" {
			continue
		}
		if _, noticed := p.notices.reclaimed(in.ID); noticed {
			continue
		}
		lease, ok := p.pool.Connected(in.ID)
		if !ok {
			continue
		}
		g.Go(func() error {
			defer lease.Release()
			notice, err := reader.ReadNotice(ctx, in.ID, lease.DialFrom)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case notice != nil:
				found = append(found, *notice)
			}
			return nil
		})
	}
	_ = g.Wait()
	return found, errs
}
