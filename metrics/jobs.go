package metrics

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// stateRunning is the only job state the manager reports: a job is counted from GitLab's answer to
// its outcome.
const stateRunning = "running"

// runningJob is a job between JobStarted and Finished; its stage is guarded by Metrics.mu.
type runningJob struct {
	m       *Metrics
	info    manager.JobInfo
	started time.Time
	stage   string
}

// Stage implements manager.JobObserver.
func (j *runningJob) Stage(name string) {
	j.m.mu.Lock()
	j.stage = name
	j.m.mu.Unlock()
}

// Finished implements manager.JobObserver; calls after the first are ignored.
func (j *runningJob) Finished(reason job.FailureReason) {
	m := j.m
	m.mu.Lock()
	_, running := m.jobs[j]
	delete(m.jobs, j)
	m.mu.Unlock()
	if !running {
		return
	}
	r := j.info.Runner
	m.jobDuration.WithLabelValues(r.Runner, r.SystemID).Observe(time.Since(j.started).Seconds())
	m.jobsTotal.WithLabelValues(r.Runner, r.SystemID).Inc()
	if reason != "" {
		m.failedJobs.WithLabelValues(string(reason), r.Runner, r.SystemID).Inc()
	}
}

// jobView is a copy of a running job, taken under Metrics.mu.
type jobView struct {
	info    manager.JobInfo
	started time.Time
	stage   string
}

// runningJobs returns the running jobs, oldest first.
func (m *Metrics) runningJobs() []jobView {
	m.mu.Lock()
	views := make([]jobView, 0, len(m.jobs))
	for j := range m.jobs {
		views = append(views, jobView{info: j.info, started: j.started, stage: j.stage})
	}
	m.mu.Unlock()
	slices.SortFunc(views, func(a, b jobView) int { return a.started.Compare(b.started) })
	return views
}

// writeJobsList writes one line per running job, in upstream's /debug/jobs/list format. The job URL
// carries no credentials and no token is written.
func (m *Metrics) writeJobsList(w io.Writer) error {
	now := time.Now()
	for _, j := range m.runningJobs() {
		// fleetrunner has no executor stages beside the build stages, so executor_stage stays empty.
		if _, err := fmt.Fprintf(w, "url=%s state=%s stage=%s executor_stage=%s duration=%s\n",
			j.info.URL, stateRunning, j.stage, "", now.Sub(j.started).Round(time.Millisecond)); err != nil {
			return err
		}
	}
	return nil
}

// jobsCollector exports gitlab_runner_jobs from the running jobs at scrape time, so the gauge cannot
// drift from the jobs the manager actually holds.
type jobsCollector struct{ m *Metrics }

var jobsDesc = prometheus.NewDesc("gitlab_runner_jobs", "The current number of running builds",
	[]string{labelRunner, labelSystemID, "state", "stage", "executor_stage"}, nil)

func (jobsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- jobsDesc }

func (c jobsCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ runner, systemID, stage string }
	counts := map[key]int{}
	for _, j := range c.m.runningJobs() {
		counts[key{j.info.Runner.Runner, j.info.Runner.SystemID, j.stage}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(n),
			k.runner, k.systemID, stateRunning, k.stage, "")
	}
}
