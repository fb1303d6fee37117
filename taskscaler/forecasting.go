package taskscaler

import (
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
)

// activeLocked is the policy in force at now, its idle count replaced by the forecast's (and its
// idle_time capped at the forecast's hold) when forecasting is on and the coming hours have a past. The
// forecast looks one update_interval further ahead: the next pass may come that late. A time no policy matches keeps the zero policy:
// the operator asked for no idle capacity then.
func (ts *Taskscaler) activeLocked(now time.Time) Policy {
	p := capacity.Active(ts.policies, now)
	if ts.forecast == nil || capacity.ActiveIndex(ts.policies, now) < 0 {
		return p
	}
	ts.forecast.Watch(now)
	n, ok := ts.forecast.Idle(now, ts.opts.UpdateInterval)
	if !ok {
		n = -1
	} else {
		p.IdleCount = n
		p.IdleTime = min(p.IdleTime, ts.forecast.Hold())
	}
	if n != ts.forecastN {
		ts.forecastN = n
		ts.log.WithFields(logrus.Fields{"idle_count": p.IdleCount, "from_history": ok, "lead": ts.forecast.Lead()}).
			Info("forecast idle count")
	}
	return p
}
