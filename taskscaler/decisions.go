package taskscaler

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
)

// decisionsKept bounds the decision history: enough to see the last few scale-ups and -downs on a status
// page without the history growing with uptime.
const decisionsKept = 20

// Scale decision actions.
const (
	ActionIncrease = "increase"
	ActionDecrease = "decrease"
	ActionNone     = "none"
)

// Decision is one scaling decision of a reconcile pass.
type Decision struct {
	At time.Time
	// Action is ActionIncrease, ActionDecrease or ActionNone.
	Action string
	// Count is the number of instances asked for or asked to be removed; 0 for ActionNone.
	Count int
	// Desired is the instance count the pass aimed for; Actual the live instances (requested, starting
	// or serving, not being removed) when the pass began.
	Desired, Actual int
	Reason          string
}

// Decisions returns the last scale decisions, newest last. A pass that changes nothing is recorded
// only when its reason differs from the previous decision's, so a steady fleet does not push the
// history out.
func (ts *Taskscaler) Decisions() []Decision {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.decisions)
}

// ActivePolicy returns the policy in force now and its index in the configured list; the index is -1
// (and the policy the zero one: no idle capacity) when none matches.
func (ts *Taskscaler) ActivePolicy() (int, Policy) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := ts.clock.Now()
	return capacity.ActiveIndex(ts.policies, now), ts.activeLocked(now)
}

// recordLocked appends d to the history, dropping the oldest beyond decisionsKept.
func (ts *Taskscaler) recordLocked(d Decision) {
	if d.Action == ActionNone && len(ts.decisions) > 0 && ts.decisions[len(ts.decisions)-1].Reason == d.Reason {
		return
	}
	ts.decisions = append(ts.decisions, d)
	if n := len(ts.decisions) - decisionsKept; n > 0 {
		ts.decisions = slices.Delete(ts.decisions, 0, n)
	}
}

// decideLocked records what planLocked chose: want is the creation capacity.ToCreate asked for, create
// what backoff and the throttle left of it, remove the instances to remove now and actual the live
// instances when the pass began.
func (ts *Taskscaler) decideLocked(now time.Time, want, create int, remove []string, actual int) {
	d := Decision{At: now, Desired: ts.desired, Actual: actual}
	if len(remove) > 0 {
		var reasons []string
		for _, id := range remove {
			if r := ts.instances[id].removeReason; !slices.Contains(reasons, r) {
				reasons = append(reasons, r)
			}
		}
		dec := d
		dec.Action, dec.Count, dec.Reason = ActionDecrease, len(remove), strings.Join(reasons, "; ")
		ts.recordLocked(dec)
	}
	switch {
	case create > 0:
		d.Action, d.Count = ActionIncrease, create
		d.Reason = fmt.Sprintf("the jobs and the idle target need %d more %s", want, plural(want, "instance"))
		if create < want {
			d.Reason += fmt.Sprintf("; the scale throttle allows %d now", create)
		}
	case want > 0 && now.Before(ts.blocked):
		d.Action, d.Reason = ActionNone, "instance creation is backing off after failures"
	case want > 0:
		d.Action, d.Reason = ActionNone, "the scale throttle allows no new instance now"
	case ts.desired > ts.liveLocked():
		d.Action, d.Reason = ActionNone, "max_instances reached"
	case len(remove) > 0:
		return
	default:
		d.Action, d.Reason = ActionNone, "the fleet is at its desired size"
	}
	ts.recordLocked(d)
}

// plural is noun for one of it, else noun+"s".
func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
