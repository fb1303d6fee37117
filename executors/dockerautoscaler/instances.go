package dockerautoscaler

import (
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/metrics"
)

var _ metrics.InstanceLister = (*Provider)(nil)

// AutoscalerInstances lists the taskscaler's instances for the metrics server's
// /debug/autoscaler/instances (metrics.InstanceLister).
func (p *Provider) AutoscalerInstances() []metrics.Instance {
	infos := p.ts.Instances()
	out := make([]metrics.Instance, 0, len(infos))
	for _, in := range infos {
		var idle *time.Time
		// The taskscaler keeps an idle time only for an instance without jobs.
		if in.Acquired == 0 && !in.IdleSince.IsZero() {
			idle = &in.IdleSince
		}
		out = append(out, metrics.Instance{ID: in.ID, State: in.State, UseCount: in.UseCount, Acquired: in.Acquired, IdleSince: idle})
	}
	return out
}
