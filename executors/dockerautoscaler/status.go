package dockerautoscaler

import (
	"slices"

	"gitlab.com/fleetrunner/fleetrunner/executors"
)

var _ executors.FleetDescriber = (*Provider)(nil)

// FleetStatus describes the fleet for the status page (executors.FleetDescriber): the policy the
// taskscaler applies now, its instances and its last scale decisions.
func (p *Provider) FleetStatus() executors.FleetStatus {
	index, policy := p.ts.ActivePolicy()
	perInstance, maxInstances := p.ts.Capacity()
	decisions := p.ts.Decisions()
	out := executors.FleetStatus{
		PolicyIndex: index,
		Policy: executors.FleetPolicy{
			Periods: slices.Clone(policy.Periods), IdleCount: policy.IdleCount, IdleTime: policy.IdleTime,
			ScaleFactor: policy.ScaleFactor, ScaleFactorLimit: policy.ScaleFactorLimit, Preemptive: policy.Preemptive,
		},
		SlotsPerInstance: perInstance,
		MaxInstances:     maxInstances,
		Instances:        p.AutoscalerInstances(),
		Decisions:        make([]executors.ScaleDecision, 0, len(decisions)),
	}
	if p.lease != nil && p.gaveUp.Load() == nil {
		out.Lease = &executors.FleetLease{Holder: p.lease.holder, Since: p.lease.acquired, Token: int64(p.lease.token)}
	}
	for _, d := range decisions {
		out.Decisions = append(out.Decisions, executors.ScaleDecision{
			At: d.At, Action: d.Action, Count: d.Count, Desired: d.Desired, Actual: d.Actual, Reason: d.Reason,
		})
	}
	return out
}
