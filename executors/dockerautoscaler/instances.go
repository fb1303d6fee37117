package dockerautoscaler

import (
	"time"

	"gitlab.com/fleetrunner/fleetrunner/executors"
)

var _ executors.InstanceLister = (*Provider)(nil)

// AutoscalerInstances lists the taskscaler's instances for the metrics server's
// /debug/autoscaler/instances (executors.InstanceLister).
func (p *Provider) AutoscalerInstances() []executors.AutoscaledInstance {
	infos := p.ts.Instances()
	out := make([]executors.AutoscaledInstance, 0, len(infos))
	for _, in := range infos {
		var idle *time.Time
		// The taskscaler keeps an idle time only for an instance without jobs.
		if in.Acquired == 0 && !in.IdleSince.IsZero() {
			idle = &in.IdleSince
		}
		out = append(out, executors.AutoscaledInstance{ID: in.ID, State: in.State, UseCount: in.UseCount,
			Acquired: in.Acquired, IdleSince: idle, CreatedAt: in.CreatedAt, Jobs: in.Jobs})
	}
	return out
}
