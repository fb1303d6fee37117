// Package capacity is the taskscaler's pure arithmetic: which policy is active at a given time, how many
// idle slots and instances that policy asks for, which instances may go, how fast new ones may be asked
// for. Nothing here reads a clock or talks to a cloud; every function takes "now" as an argument.
package capacity

import (
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

// DefaultPeriod is the period of a policy that names none: every minute.
const DefaultPeriod = "* * * * *"

// Policy is one compiled [[runners.autoscaler.policy]] entry.
type Policy struct {
	// Periods are 5-field cron expressions; the policy is active during every minute one of them matches.
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

// NewPolicy compiles one policy entry. An empty periods list means every minute, an empty timezone the
// system's local zone, and an unset preemptive_mode means idle_count > 0.
func NewPolicy(c config.AutoscalerPolicyConfig) (Policy, error) {
	p := Policy{
		Periods:          c.Periods,
		Location:         time.Local,
		IdleCount:        c.IdleCount,
		IdleTime:         c.IdleTime,
		ScaleFactor:      c.ScaleFactor,
		ScaleFactorLimit: c.ScaleFactorLimit,
		Preemptive:       c.IdleCount > 0,
	}
	if c.PreemptiveMode != nil {
		p.Preemptive = *c.PreemptiveMode
	}
	if len(p.Periods) == 0 {
		p.Periods = []string{DefaultPeriod}
	}
	var errs []error
	if c.Timezone != "" {
		loc, err := time.LoadLocation(c.Timezone)
		if err != nil {
			errs = append(errs, fmt.Errorf("timezone %q is not a known IANA zone (e.g. UTC, Europe/Berlin): %w", c.Timezone, err))
		} else {
			p.Location = loc
		}
	}
	for _, period := range p.Periods {
		s, err := cron.ParseStandard(period)
		if err != nil {
			errs = append(errs, fmt.Errorf("period %q is not a 5-field cron expression (minute hour day-of-month month day-of-week): %w", period, err))
			continue
		}
		p.schedules = append(p.schedules, s)
	}
	if c.IdleCount < 0 {
		errs = append(errs, fmt.Errorf("idle_count must not be negative, got %d", c.IdleCount))
	}
	if c.IdleTime < 0 {
		errs = append(errs, fmt.Errorf("idle_time must not be negative, got %s", c.IdleTime))
	}
	if c.ScaleFactor < 0 {
		errs = append(errs, fmt.Errorf("scale_factor must not be negative, got %g", c.ScaleFactor))
	}
	if c.ScaleFactorLimit < 0 {
		errs = append(errs, fmt.Errorf("scale_factor_limit must not be negative, got %d", c.ScaleFactorLimit))
	}
	return p, errors.Join(errs...)
}

// NewPolicies compiles a policy list, reporting every bad entry at once.
func NewPolicies(cs []config.AutoscalerPolicyConfig) ([]Policy, error) {
	ps := make([]Policy, 0, len(cs))
	var errs []error
	for i, c := range cs {
		p, err := NewPolicy(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("[[runners.autoscaler.policy]] entry %d: %w", i+1, err))
			continue
		}
		ps = append(ps, p)
	}
	return ps, errors.Join(errs...)
}

// Matches reports whether t falls in a minute that one of the policy's periods matches.
func (p Policy) Matches(t time.Time) bool {
	loc := p.Location
	if loc == nil {
		loc = time.Local
	}
	lt := t.In(loc)
	minute := time.Date(lt.Year(), lt.Month(), lt.Day(), lt.Hour(), lt.Minute(), 0, 0, loc)
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
