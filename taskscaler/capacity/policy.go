// Package capacity is the taskscaler's pure arithmetic: which policy is active at a given time, how many
// idle slots and instances that policy asks for, which instances may go, how fast new ones may be asked
// for. Nothing here reads a clock or talks to a cloud; every function takes "now" as an argument.
package capacity

import (
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Policy is one scaling policy. Its values come resolved (the periods and time zone included);
// NewPolicy checks them and compiles the periods.
type Policy struct {
	// Periods are 5-field cron expressions, at least one; the policy is active during every minute one
	// of them matches.
	Periods []string
	// Location is the time zone the periods are read in.
	Location *time.Location
	// IdleCount is the idle target in job slots (not instances).
	IdleCount int
	// IdleTime is how long an instance may sit idle before it may be removed.
	IdleTime time.Duration
	// ScaleFactor adds idle slots as a multiple of the slots in use.
	ScaleFactor float64
	// ScaleFactorLimit caps what ScaleFactor adds; 0 means no cap.
	ScaleFactorLimit int
	// Preemptive: Reserve succeeds only when a slot on a ready instance is free.
	Preemptive bool

	schedules []cron.Schedule
}

// NewPolicy checks p and compiles its periods, reporting every problem at once. Only a compiled policy
// matches any time.
func NewPolicy(p Policy) (Policy, error) {
	p.Periods = append([]string(nil), p.Periods...)
	p.schedules = nil
	var errs []error
	if len(p.Periods) == 0 {
		errs = append(errs, errors.New("no period: a policy needs at least one cron period (\"* * * * *\" is always)"))
	}
	if p.Location == nil {
		errs = append(errs, errors.New("no time zone for its periods"))
	}
	for _, period := range p.Periods {
		s, err := cron.ParseStandard(period)
		if err != nil {
			errs = append(errs, fmt.Errorf("period %q is not a 5-field cron expression (minute hour day-of-month month day-of-week): %w", period, err))
			continue
		}
		p.schedules = append(p.schedules, s)
	}
	if p.IdleCount < 0 {
		errs = append(errs, fmt.Errorf("idle_count must not be negative, got %d", p.IdleCount))
	}
	if p.IdleTime < 0 {
		errs = append(errs, fmt.Errorf("idle_time must not be negative, got %s", p.IdleTime))
	}
	if p.ScaleFactor < 0 {
		errs = append(errs, fmt.Errorf("scale_factor must not be negative, got %g", p.ScaleFactor))
	}
	if p.ScaleFactorLimit < 0 {
		errs = append(errs, fmt.Errorf("scale_factor_limit must not be negative, got %d", p.ScaleFactorLimit))
	}
	return p, errors.Join(errs...)
}

// NewPolicies compiles a policy list, reporting every bad entry at once.
func NewPolicies(ps []Policy) ([]Policy, error) {
	out := make([]Policy, 0, len(ps))
	var errs []error
	for i, p := range ps {
		c, err := NewPolicy(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy %d: %w", i+1, err))
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

// Matches reports whether t falls in a minute that one of the policy's periods matches.
func (p Policy) Matches(t time.Time) bool {
	if p.Location == nil {
		return false // not compiled, or refused
	}
	lt := t.In(p.Location)
	minute := time.Date(lt.Year(), lt.Month(), lt.Day(), lt.Hour(), lt.Minute(), 0, 0, p.Location)
	for _, s := range p.schedules {
		// A schedule "matches" a minute when its next activation after the instant just before that
		// minute is the minute itself.
		if s.Next(minute.Add(-time.Second)).Equal(minute) {
			return true
		}
	}
	return false
}

// Active returns the policy in force at now: the last one whose periods match. With no match (or no
// policies) it is the zero policy: no idle capacity, idle instances removed at once, not preemptive.
func Active(policies []Policy, now time.Time) Policy {
	if i := ActiveIndex(policies, now); i >= 0 {
		return policies[i]
	}
	return Policy{}
}

// ActiveIndex returns the index of the policy in force at now, or -1 when none matches.
func ActiveIndex(policies []Policy, now time.Time) int {
	for i := len(policies) - 1; i >= 0; i-- {
		if policies[i].Matches(now) {
			return i
		}
	}
	return -1
}
