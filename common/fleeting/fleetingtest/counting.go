package fleetingtest

import (
	"context"
	"sync/atomic"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// CountingGroup wraps a group and counts what the taskscaler asks of it: scaling events (Increase and
// Decrease calls that asked for a change) and Update polls.
type CountingGroup struct {
	fleeting.InstanceGroup
	Increases, Decreases, Updates atomic.Int64
}

func (g *CountingGroup) Update(ctx context.Context, fn func(string, fleeting.State)) error {
	g.Updates.Add(1)
	return g.InstanceGroup.Update(ctx, fn)
}

func (g *CountingGroup) Increase(ctx context.Context, n int) (int, error) {
	if n > 0 {
		g.Increases.Add(1)
	}
	return g.InstanceGroup.Increase(ctx, n)
}

func (g *CountingGroup) Decrease(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) > 0 {
		g.Decreases.Add(1)
	}
	return g.InstanceGroup.Decrease(ctx, ids)
}
