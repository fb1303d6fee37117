package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Monitoring is [runners.monitoring], upstream's table of the runner's monitoring settings.
type Monitoring struct {
	JobQueuingDurations []JobQueuingDuration `toml:"job_queuing_durations,omitempty" json:"job_queuing_durations"`
}

// JobQueuingDuration is one [[runners.monitoring.job_queuing_durations]] entry: while one of its
// periods contains the current time, a job that waited in GitLab's queue longer than Threshold counts
// in gitlab_runner_acceptable_job_queuing_duration_exceeded_total. The last entry in force wins.
type JobQueuingDuration struct {
	Periods   []string      `toml:"periods" json:"periods"`
	Timezone  string        `toml:"timezone,omitempty" json:"timezone"`
	Threshold time.Duration `toml:"threshold" json:"threshold"`
	// JobsRunningForProject is a regexp matched against the payload's
	// job_info.project_jobs_running_on_instance_runners_count; empty matches every job.
	JobsRunningForProject string `toml:"jobs_running_for_project,omitempty" json:"jobs_running_for_project"`
}

// JobQueuingThreshold is the job_queuing_durations entry in force, compiled.
type JobQueuingThreshold struct {
	Threshold time.Duration
	// JobsRunningForProject is nil when the entry sets no regexp: every job is judged.
	JobsRunningForProject *regexp.Regexp
}

// ActiveJobQueuingThreshold returns the threshold of the last job_queuing_durations entry whose
// periods contain now; ok is false when none does (or the runner has no [runners.monitoring]).
// Entries that do not compile are never in force: Load refuses them, so only a config built in code
// without Validate can hold one.
func (r *RunnerConfig) ActiveJobQueuingThreshold(now time.Time) (JobQueuingThreshold, bool) {
	if r.Monitoring == nil {
		return JobQueuingThreshold{}, false
	}
	entries := r.Monitoring.JobQueuingDurations
	for i := len(entries) - 1; i >= 0; i-- {
		th, active, err := entries[i].resolve(now)
		if err == nil && active {
			return th, true
		}
	}
	return JobQueuingThreshold{}, false
}

func (d *JobQueuingDuration) resolve(now time.Time) (JobQueuingThreshold, bool, error) {
	loc, err := periodLocation(d.Timezone)
	if err != nil {
		return JobQueuingThreshold{}, false, err
	}
	active := false
	for _, s := range d.Periods {
		p, err := parseTimePeriod(s)
		if err != nil {
			return JobQueuingThreshold{}, false, err
		}
		active = active || p.contains(now.In(loc))
	}
	th := JobQueuingThreshold{Threshold: d.Threshold}
	if d.JobsRunningForProject != "" {
		if th.JobsRunningForProject, err = regexp.Compile(d.JobsRunningForProject); err != nil {
			return JobQueuingThreshold{}, false, err
		}
	}
	return th, active, nil
}

// secondsCronParser reads the 6 leading fields of upstream's 7-field periods, seconds first.
var secondsCronParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// timePeriod is one compiled period of job_queuing_durations.
type timePeriod struct {
	schedule cron.Schedule
	// unit is the span one match covers: a minute for 5-field periods, a second when seconds are given.
	unit time.Duration
}

// parseTimePeriod reads a period as upstream's cron library does for job_queuing_durations: 5 fields
// (minute hour day-of-month month day-of-week), 6 (the same and a year) or 7 (a second first, a year
// last). The year must be *: the cron parser the autoscaler policies use has no year field, and
// upstream's documented periods never set one.
func parseTimePeriod(s string) (timePeriod, error) {
	fields := strings.Fields(s)
	if len(fields) < 5 || len(fields) > 7 {
		return timePeriod{}, fmt.Errorf("%d fields (want 5: minute hour day-of-month month day-of-week; 6: and year; 7: second first, year last)", len(fields))
	}
	if len(fields) > 5 {
		if year := fields[len(fields)-1]; year != "*" {
			return timePeriod{}, fmt.Errorf("year %q is not supported (fleetrunner accepts only * in the year field)", year)
		}
		fields = fields[:len(fields)-1]
	}
	parser, unit := cronParser, time.Minute
	if len(fields) == 6 {
		parser, unit = secondsCronParser, time.Second
	}
	sched, err := parser.Parse(strings.Join(fields, " "))
	if err != nil {
		return timePeriod{}, err
	}
	return timePeriod{schedule: sched, unit: unit}, nil
}

// contains reports whether t falls in a minute (or second) the period matches; t carries the
// period's time zone.
func (p timePeriod) contains(t time.Time) bool {
	start := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, t.Location())
	if p.unit == time.Second {
		start = start.Add(time.Duration(t.Second()) * time.Second)
	}
	// The schedule's next activation after the instant just before that minute (or second) is the
	// minute itself when it matches.
	return p.schedule.Next(start.Add(-time.Second)).Equal(start)
}

func (d *JobQueuingDuration) problems(p string) []error {
	var errs []error
	add := func(key, format string, args ...any) { errs = append(errs, fieldErr(p+"."+key, format, args...)) }
	for i, s := range d.Periods {
		if _, err := parseTimePeriod(s); err != nil {
			add(fmt.Sprintf("periods[%d]", i), "invalid period %q: %v", s, err)
		}
	}
	if _, err := periodLocation(d.Timezone); err != nil {
		add("timezone", "%v", err)
	}
	if d.Threshold < 0 {
		add("threshold", "must not be negative, got %s", d.Threshold)
	}
	if _, err := regexp.Compile(d.JobsRunningForProject); err != nil {
		add("jobs_running_for_project", "invalid regexp %q: %v", d.JobsRunningForProject, err)
	}
	return errs
}
