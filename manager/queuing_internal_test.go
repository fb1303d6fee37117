package manager

import (
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

func TestQueuingExceeded(t *testing.T) {
	now := time.Date(2026, 12, 5, 9, 30, 0, 0, time.UTC)
	monitoring := func(periods ...string) *config.Monitoring {
		return &config.Monitoring{JobQueuingDurations: []config.JobQueuingDuration{{
			Periods: periods, Timezone: "UTC", Threshold: 30 * time.Second, JobsRunningForProject: "^0$",
		}}}
	}
	tests := []struct {
		name       string
		monitoring *config.Monitoring
		queued     time.Duration
		running    string
		want       bool
	}{
		{name: "no [runners.monitoring]", queued: time.Hour, running: "0"},
		{name: "above the threshold", monitoring: monitoring("* * * * *"), queued: 31 * time.Second, running: "0", want: true},
		{name: "at the threshold", monitoring: monitoring("* * * * *"), queued: 30 * time.Second, running: "0"},
		{name: "regexp does not match", monitoring: monitoring("* * * * *"), queued: time.Hour, running: "2"},
		{name: "no entry in force", monitoring: monitoring("* * * * mon"), queued: time.Hour, running: "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &config.RunnerConfig{Monitoring: tt.monitoring}
			j := &job.Job{JobInfo: job.JobInfo{ProjectJobsRunningOnInstanceRunners: tt.running}}
			if got := queuingExceeded(rc, j, tt.queued, now); got != tt.want {
				t.Fatalf("queuingExceeded = %v, want %v", got, tt.want)
			}
		})
	}
}
