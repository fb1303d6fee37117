package taskscaler

import "github.com/sirupsen/logrus"

// Drain takes instance id out of service on request (e.g. a spot interruption notice): it gets no new
// job, is removed at once when idle (or not ready yet), and otherwise when its last job releases. Its
// running jobs keep their slots, so they can finish if the instance lives long enough. It reports
// whether the instance was serving or starting; a second call, or one for an instance already being
// removed or unknown, changes nothing.
func (ts *Taskscaler) Drain(id, reason string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	in, ok := ts.instances[id]
	if !ok || in.state >= stRemove || in.drainReason != "" {
		return false
	}
	ts.accountLocked()
	in.drainReason = reason
	ts.counters.DrainRequested++
	ts.log.WithFields(logrus.Fields{"instance": id, "reason": reason, "state": in.state, "jobs": len(in.acq)}).Warn("draining instance")
	if (in.state != stReady && in.state != stDraining) || len(in.acq) == 0 {
		ts.condemnLocked(in, reason)
		return true
	}
	in.state = stDraining
	ts.markDirty()
	// A replacement may be wanted now rather than at the next update_interval.
	ts.poke()
	return true
}
