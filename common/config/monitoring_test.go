package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// monitoringConfig is validDA with a [runners.monitoring] table appended to its runner.
func monitoringConfig(entries string) string {
	return validDA + "  [runners.monitoring]\n" + entries
}

func TestMonitoringLoads(t *testing.T) {
	cfg, warns, err := Parse([]byte(monitoringConfig(`
    [[runners.monitoring.job_queuing_durations]]
      periods = ["* * * * * * *"]
      timezone = "UTC"
      threshold = "30s"
    [[runners.monitoring.job_queuing_durations]]
      periods = ["* 8-17 * * mon-fri"]
      timezone = "Europe/Berlin"
      threshold = "2m"
      jobs_running_for_project = "^0$"
`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Fatalf("warnings for an upstream [runners.monitoring] table: %v", warns)
	}
	d := cfg.Runners[0].Monitoring.JobQueuingDurations
	if len(d) != 2 || d[0].Threshold != 30*time.Second || d[1].Threshold != 2*time.Minute ||
		d[1].Timezone != "Europe/Berlin" || d[1].JobsRunningForProject != "^0$" {
		t.Fatalf("job_queuing_durations = %+v", d)
	}
}

func TestMonitoringInvalid(t *testing.T) {
	const p = "runners[0].monitoring.job_queuing_durations[1]."
	tests := []struct {
		name, entry, key, msg string
	}{
		{"regexp", `periods = ["* * * * *"]` + "\n" + `jobs_running_for_project = "(["`, p + "jobs_running_for_project", "invalid regexp"},
		{"period syntax", `periods = ["* * * * *", "61 * * * *"]`, p + "periods[1]", "invalid period"},
		{"too few fields", `periods = ["* * *"]`, p + "periods[0]", "3 fields"},
		{"year other than *", `periods = ["* * * * * * 2030"]`, p + "periods[0]", "year"},
		{"timezone", `periods = ["* * * * *"]` + "\n" + `timezone = "Mars/Olympus"`, p + "timezone", "Mars/Olympus"},
		{"negative threshold", `periods = ["* * * * *"]` + "\n" + `threshold = "-1s"`, p + "threshold", "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := monitoringConfig(`
    [[runners.monitoring.job_queuing_durations]]
      periods = ["* * * * *"]
    [[runners.monitoring.job_queuing_durations]]
` + tt.entry + "\n")
			_, _, err := Parse([]byte(text))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Key != tt.key || !strings.Contains(fe.Message, tt.msg) {
				t.Fatalf("error = %v, want %s: …%s…", err, tt.key, tt.msg)
			}
		})
	}
}

func TestMonitoringWithoutPeriodsIsWarned(t *testing.T) {
	_, warns, err := Parse([]byte(monitoringConfig(`
    [[runners.monitoring.job_queuing_durations]]
      threshold = "30s"
`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || warns[0].Key != "runners[0].monitoring.job_queuing_durations[0].periods" {
		t.Fatalf("warnings = %v, want one naming the entry's periods", warns)
	}
}

func TestActiveJobQueuingThreshold(t *testing.T) {
	// Saturday 2026-12-05 09:30:15 UTC, 10:30:15 in Berlin.
	now := time.Date(2026, 12, 5, 9, 30, 15, 0, time.UTC)
	always := JobQueuingDuration{Periods: []string{"* * * * * * *"}, Timezone: "UTC", Threshold: time.Minute}
	tests := []struct {
		name          string
		entries       []JobQueuingDuration
		wantOK        bool
		wantThreshold time.Duration
		wantRx        string
	}{
		{name: "no entries"},
		{name: "always", entries: []JobQueuingDuration{always}, wantOK: true, wantThreshold: time.Minute},
		{name: "5 fields, this minute", entries: []JobQueuingDuration{{Periods: []string{"30 9 * * sat"}, Timezone: "UTC", Threshold: time.Second}},
			wantOK: true, wantThreshold: time.Second},
		{name: "6 fields with year", entries: []JobQueuingDuration{{Periods: []string{"* 9 * * * *"}, Timezone: "UTC", Threshold: time.Second}},
			wantOK: true, wantThreshold: time.Second},
		{name: "7 fields, other second", entries: []JobQueuingDuration{{Periods: []string{"14 * * * * * *"}, Timezone: "UTC"}}},
		{name: "timezone shifts the hour", entries: []JobQueuingDuration{{Periods: []string{"* 9 * * *"}, Timezone: "Europe/Berlin"}}},
		{name: "timezone shifts the hour, matching", entries: []JobQueuingDuration{{Periods: []string{"* 10 * * *"}, Timezone: "Europe/Berlin", Threshold: 3 * time.Second}},
			wantOK: true, wantThreshold: 3 * time.Second},
		{name: "weekdays only", entries: []JobQueuingDuration{{Periods: []string{"* * * * mon-fri"}, Timezone: "UTC"}}},
		{name: "last active entry wins", entries: []JobQueuingDuration{
			always,
			{Periods: []string{"* * * * *"}, Timezone: "UTC", Threshold: 2 * time.Minute, JobsRunningForProject: "^0$"},
			{Periods: []string{"* * * * mon-fri"}, Timezone: "UTC", Threshold: 3 * time.Minute},
		}, wantOK: true, wantThreshold: 2 * time.Minute, wantRx: "^0$"},
		{name: "any period of an entry", entries: []JobQueuingDuration{{Periods: []string{"* * * * mon", "* * * * sat"}, Timezone: "UTC"}},
			wantOK: true},
		{name: "no periods is never in force", entries: []JobQueuingDuration{{Timezone: "UTC", Threshold: time.Second}}},
		{name: "an entry that does not compile is skipped", entries: []JobQueuingDuration{
			always, {Periods: []string{"* * * * *"}, JobsRunningForProject: "(["},
		}, wantOK: true, wantThreshold: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &RunnerConfig{}
			if tt.entries != nil {
				rc.Monitoring = &Monitoring{JobQueuingDurations: tt.entries}
			}
			th, ok := rc.ActiveJobQueuingThreshold(now)
			if ok != tt.wantOK || th.Threshold != tt.wantThreshold {
				t.Fatalf("= %+v, %v; want threshold %s, %v", th, ok, tt.wantThreshold, tt.wantOK)
			}
			rx := ""
			if th.JobsRunningForProject != nil {
				rx = th.JobsRunningForProject.String()
			}
			if rx != tt.wantRx {
				t.Fatalf("jobs_running_for_project = %q, want %q", rx, tt.wantRx)
			}
		})
	}
}
