package dockerautoscaler

import (
	"cmp"
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// rollout drains the instances the plugin reports as outdated (launched from an older launch template
// version, say), at most pace of them at once: an instance counts from its drain until it has left the
// taskscaler, and an outdated one already draining or being removed for another reason counts too, so
// at most that many are out of service for the roll-out at any time. Idle ones go
// first, since they cost no job anything and leave at once; busy ones then take no new job and leave
// when their jobs end, so no job fails for a roll-out. The taskscaler replaces the capacity by its
// usual scaling, from what the group launches now.
type rollout struct {
	pace config.Pace
	// draining holds the instances drained for the roll-out that the taskscaler still knows.
	draining map[string]bool
	// outdated is how many instances the plugin reported outdated at the last check, for the metrics.
	outdated atomic.Int64
	// active is whether the last check found outdated instances, to log the roll-out's end once.
	active bool
	// failing is whether the last check failed, so that a lasting failure (a role without
	// ec2:DescribeLaunchTemplates) is a warning once, not one per check.
	failing bool
}

// watchRollout asks a plugin that reports outdated instances for them every interval, and drains
// them at the configured pace. Plugins without the report, and rollout_max_draining = 0, leave every
// instance to its natural end.
func (p *Provider) watchRollout(every time.Duration) {
	defer close(p.rolloutDone)
	reporter, ok := p.group.(fleeting.OutdatedReporter)
	if !ok || p.rollout.pace.Off() {
		return
	}
	p.tick(every, func() {
		ctx, cancel := context.WithTimeout(p.bgCtx, every)
		found, err := reporter.Outdated(ctx)
		cancel()
		if err != nil {
			log := p.log.WithError(err)
			if p.rollout.failing {
				log.Debug("the check for instances on an older launch configuration still fails")
			} else {
				log.Warn("could not check for instances on an older launch configuration; a roll-out waits until the check works again")
			}
			p.rollout.failing = true
			return
		}
		if p.rollout.failing {
			p.log.Info("the check for instances on an older launch configuration works again")
			p.rollout.failing = false
		}
		p.rollout.step(p.log, p.ts, found)
	})
}

// drainer is the part of the taskscaler a roll-out uses.
type drainer interface {
	Instances() []taskscaler.InstanceInfo
	Drain(id, reason string) bool
}

// step drains as many of the outdated instances as the pace has room for, idle ones first.
func (r *rollout) step(log logrus.FieldLogger, ts drainer, found []fleeting.Outdated) {
	instances := ts.Instances()
	known := make(map[string]taskscaler.InstanceInfo, len(instances))
	for _, in := range instances {
		known[in.ID] = in
	}
	for id := range r.draining {
		if _, ok := known[id]; !ok {
			delete(r.draining, id)
		}
	}
	r.outdated.Store(int64(len(found)))
	if len(found) == 0 {
		if r.active {
			log.Info("roll-out finished: no instance on an older launch configuration is left")
		}
		r.active = false
		return
	}
	r.active = true
	reasons := make(map[string]string, len(found))
	var waiting []taskscaler.InstanceInfo
	// Outdated instances on their way out for another reason, or drained before a restart, are out of
	// service too and take their share of the pace.
	out := len(r.draining)
	for _, o := range found {
		in, ok := known[o.Instance]
		switch {
		case !ok || r.draining[o.Instance]:
		case in.State == "ready":
			reasons[o.Instance] = o.Reason
			waiting = append(waiting, in)
		case in.State == "draining" || in.State == "remove" || in.State == "removing":
			out++
		}
		// One still starting is left until it serves.
	}
	slices.SortFunc(waiting, func(a, b taskscaler.InstanceInfo) int {
		return cmp.Or(cmp.Compare(a.Acquired, b.Acquired), cmp.Compare(a.ID, b.ID))
	})
	limit := r.pace.Of(len(instances))
	for _, in := range waiting {
		if out >= limit {
			break
		}
		reason := "roll-out: " + reasons[in.ID]
		if !ts.Drain(in.ID, reason) {
			continue
		}
		r.draining[in.ID] = true
		out++
		log.WithFields(logrus.Fields{"instance": in.ID, "reason": reasons[in.ID], "jobs": in.Acquired,
			"draining": out, "rollout_max_draining": limit, "outdated": len(found)}).
			Info("roll-out: draining an instance on an older launch configuration")
	}
}
