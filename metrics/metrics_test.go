package metrics_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/manager"
	"gitlab.com/fleetrunner/fleetrunner/metrics"
)

func TestScrapeAfterJobs(t *testing.T) {
	r := newRig(t, newTestExec())
	ids := []int64{
		r.sim.Enqueue(gitlabsim.JobSpec{Name: "ok-1", Script: []string{"section step_script", "echo one"}}),
		r.sim.Enqueue(gitlabsim.JobSpec{Name: "ok-2", Script: []string{"echo two"}}),
		r.sim.Enqueue(gitlabsim.JobSpec{Name: "fails", Script: []string{"section step_script", "exit 3"}}),
	}
	r.start(2, 5)
	for _, id := range ids {
		r.finished(id)
	}

	short := manager.ShortToken(r.token)
	runner := map[string]string{"runner": short, "system_id": systemID}
	// GitLab marks a job finished before the runner has read the answer to its final update, so the
	// last update_job answer may be counted a moment after the simulator shows the job finished.
	updates := map[string]string{"runner": short, "endpoint": "update_job", "status": "200"}
	s := scrapeMetrics(t, r.base)
	for deadline := time.Now().Add(10 * time.Second); s.value("gitlab_runner_api_request_statuses_total", updates) < 3 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		s = scrapeMetrics(t, r.base)
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gitlab_runner_concurrent", nil, 2},
		{"gitlab_runner_limit", map[string]string{"runner": short, "runner_name": "metrics-runner", "system_id": systemID}, 5},
		{"gitlab_runner_jobs_total", runner, 3},
		{"gitlab_runner_failed_jobs_total", map[string]string{"failure_reason": string(job.ScriptFailure), "runner": short, "system_id": systemID}, 1},
		{"gitlab_runner_api_request_statuses_total", map[string]string{"runner": short, "endpoint": "request_job", "status": "201"}, 3},
		// Each of the 3 jobs ends with one accepted final update.
		{"gitlab_runner_api_request_statuses_total", updates, 3},
		{"gitlab_runner_version_info", map[string]string{"name": "fleetrunner"}, 1},
		{"gitlab_runner_errors_total", map[string]string{"level": "error"}, 0},
		// Without [runners.monitoring] no job exceeds a threshold; the series exists.
		{"gitlab_runner_acceptable_job_queuing_duration_exceeded_total", runner, 0},
		// The executor's own collector carries the runner's labels.
		{"fleeting_taskscaler_desired_instances", map[string]string{"runner": short, "runner_name": "metrics-runner", "system_id": systemID}, 4},
	}
	for _, c := range checks {
		if got := s.value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, h := range []string{"gitlab_runner_job_duration_seconds", "gitlab_runner_job_queue_duration_seconds"} {
		m := s.find(h, runner)
		if m == nil || m.Histogram == nil || m.Histogram.GetSampleCount() != 3 {
			t.Errorf("%s: want a histogram with 3 samples, got:\n%s", h, s.grep(h))
		}
	}
	if rc := s.value("gitlab_runner_request_concurrency", runner); rc < 0 || rc > 1 {
		t.Errorf("gitlab_runner_request_concurrency = %v with request_concurrency 1", rc)
	}
	if s.parsed["gitlab_runner_jobs"] != nil {
		t.Errorf("gitlab_runner_jobs reports jobs after all finished:\n%s", s.grep("gitlab_runner_jobs{"))
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if s.parsed[name] == nil {
			t.Errorf("%s missing: the Go and process collectors are not registered", name)
		}
	}
	if strings.Contains(s.text, r.token) {
		t.Error("the runner token appears in /metrics")
	}
	if status, _, body := get(t, http.MethodGet, r.base+"/-/health"); status != http.StatusOK {
		t.Errorf("GET /-/health while the manager runs: %d %q", status, body)
	}
}

func TestAcceptableQueuingDurationExceeded(t *testing.T) {
	tests := []struct {
		name    string
		periods string
		want    float64
	}{
		// Upstream's always-on period, with seconds and year.
		{name: "entry in force", periods: `["* * * * * * *"]`, want: 1},
		// February 30th never comes: no entry is in force, so nothing is counted.
		{name: "no entry in force", periods: `["* * 30 2 *"]`, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, newTestExec())
			r.runnerTables = fmt.Sprintf(`  [runners.monitoring]
    [[runners.monitoring.job_queuing_durations]]
      periods = %s
      timezone = "UTC"
      threshold = "30s"
      jobs_running_for_project = "^0$"
`, tt.periods)
			ids := []int64{
				r.sim.Enqueue(gitlabsim.JobSpec{Name: "waited-long", Script: []string{"echo a"}, QueuedFor: time.Minute, ProjectJobsRunning: "0"}),
				r.sim.Enqueue(gitlabsim.JobSpec{Name: "waited-briefly", Script: []string{"echo b"}, ProjectJobsRunning: "0"}),
				// Waited long, but the project already runs jobs on instance runners: the regexp does not match.
				r.sim.Enqueue(gitlabsim.JobSpec{Name: "project-busy", Script: []string{"echo c"}, QueuedFor: time.Minute, ProjectJobsRunning: "3"}),
			}
			r.start(1, 1)
			for _, id := range ids {
				r.finished(id)
			}
			runner := map[string]string{"runner": manager.ShortToken(r.token), "system_id": systemID}
			s := scrapeMetrics(t, r.base)
			if got := s.value("gitlab_runner_acceptable_job_queuing_duration_exceeded_total", runner); got != tt.want {
				t.Errorf("gitlab_runner_acceptable_job_queuing_duration_exceeded_total = %v, want %v:\n%s", got, tt.want,
					s.grep("gitlab_runner_acceptable_job_queuing_duration_exceeded_total"))
			}
		})
	}
}

func TestJobsListShowsRunningJobWithoutToken(t *testing.T) {
	r := newRig(t, newTestExec())
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "long", Script: []string{"section prepare_executor", "section step_script", "wait"}})
	r.start(1, 0)
	var w waitingJob
	select {
	case w = <-r.exec.waiting:
	case <-r.ctx().Done():
		t.Fatal("the job did not start")
	}
	if w.url == "" || w.token == "" {
		t.Fatalf("the simulator sent no CI_JOB_URL (%q) or job token", w.url)
	}

	status, header, body := get(t, http.MethodGet, r.base+"/debug/jobs/list")
	if status != http.StatusOK || !strings.HasPrefix(header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /debug/jobs/list: %d %s", status, header.Get("Content-Type"))
	}
	line := regexp.MustCompile(`^url=(\S+) state=running stage=step_script executor_stage= duration=\S+\n$`)
	m := line.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/debug/jobs/list = %q; want one line for the running job", body)
	}
	if m[1] != w.url {
		t.Errorf("job url %q, want CI_JOB_URL %q", m[1], w.url)
	}
	if strings.Contains(body, w.token) || strings.Contains(body, r.token) {
		t.Error("/debug/jobs/list shows a token")
	}

	s := scrapeMetrics(t, r.base)
	running := map[string]string{"runner": manager.ShortToken(r.token), "state": "running", "stage": "step_script"}
	if got := s.value("gitlab_runner_jobs", running); got != 1 {
		t.Errorf("gitlab_runner_jobs%v = %v, want 1", running, got)
	}

	// An abort ends the job at once; its line goes with it.
	r.m.StopForcefully()
	r.finished(id)
	if _, _, body := get(t, http.MethodGet, r.base+"/debug/jobs/list"); body != "" {
		t.Errorf("/debug/jobs/list after the job ended = %q, want empty", body)
	}
}

func TestNoFreeExecutorIsCounted(t *testing.T) {
	exec := newTestExec()
	exec.noCapacity = true
	r := newRig(t, exec)
	r.sim.Enqueue(gitlabsim.JobSpec{Name: "never-asked-for", Script: []string{"echo no"}})
	r.start(1, 0)
	labels := map[string]string{"failure_type": manager.FailureNoFreeExecutor, "runner": manager.ShortToken(r.token), "runner_name": "metrics-runner", "system_id": systemID}
	s := waitMetric(t, r.base, "a no_free_executor failure", func(s scrape) bool {
		return s.find("gitlab_runner_worker_processing_failures_total", labels) != nil
	})
	if got := s.value("gitlab_runner_worker_processing_failures_total", labels); got < 1 {
		t.Errorf("no_free_executor = %v", got)
	}
	if s.parsed["gitlab_runner_api_request_statuses_total"] != nil {
		t.Errorf("GitLab was asked for a job without executor capacity:\n%s", s.grep("api_request_statuses"))
	}
}

func TestEndpoints(t *testing.T) {
	mx := metrics.New(logrus.New())
	srv := httptest.NewServer(mx.Handler())
	t.Cleanup(srv.Close)
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodHead, "/metrics", http.StatusOK},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodPut, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodGet, "/debug/jobs/list", http.StatusOK},
		{http.MethodGet, "/debug/autoscaler/instances", http.StatusOK},
		{http.MethodPost, "/debug/autoscaler/instances", http.StatusMethodNotAllowed},
		{http.MethodGet, "/debug/pprof/", http.StatusOK},
		{http.MethodGet, "/debug/pprof/cmdline", http.StatusOK},
		{http.MethodGet, "/debug/pprof/goroutine?debug=1", http.StatusOK},
		// Before the manager serves, the health check fails.
		{http.MethodGet, "/-/health", http.StatusServiceUnavailable},
		{http.MethodGet, "/nothing-here", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, header, _ := get(t, tt.method, srv.URL+tt.path)
			if status != tt.want {
				t.Errorf("%d, want %d", status, tt.want)
			}
			if status == http.StatusMethodNotAllowed && !strings.Contains(header.Get("Allow"), http.MethodGet) {
				t.Errorf("405 without Allow: GET (Allow: %q)", header.Get("Allow"))
			}
		})
	}
	mx.Serving(true)
	if status, _, _ := get(t, http.MethodGet, srv.URL+"/-/health"); status != http.StatusOK {
		t.Errorf("/-/health while serving: %d", status)
	}
}

func TestErrorsTotalCountsWarningsAndErrors(t *testing.T) {
	log := logging.Discard()
	mx := metrics.New(log)
	log.AddHook(mx.LogHook())
	srv := httptest.NewServer(mx.Handler())
	t.Cleanup(srv.Close)

	log.Info("not counted")
	log.Warn("first warning")
	log.WithField("k", "v").Warn("second warning")
	log.Error("an error")
	log.Debug("not counted either")

	s := scrapeMetrics(t, srv.URL)
	for level, want := range map[string]float64{"warning": 2, "error": 1} {
		if got := s.value("gitlab_runner_errors_total", map[string]string{"level": level}); got != want {
			t.Errorf("gitlab_runner_errors_total{level=%q} = %v, want %v", level, got, want)
		}
	}
	if s.find("gitlab_runner_errors_total", map[string]string{"level": "info"}) != nil {
		t.Error("info lines are counted")
	}
}

func TestProviderStoppedRemovesItsCollectors(t *testing.T) {
	mx := metrics.New(logrus.New())
	srv := httptest.NewServer(mx.Handler())
	t.Cleanup(srv.Close)
	exec := newTestExec()
	info := manager.RunnerInfo{Runner: "abcd1234", Name: "r", SystemID: systemID}

	mx.ProviderStarted(info, exec)
	if got := scrapeMetrics(t, srv.URL).value("fleeting_taskscaler_desired_instances", map[string]string{"runner": "abcd1234"}); got != 4 {
		t.Errorf("desired instances = %v, want 4", got)
	}
	mx.ProviderStopped(info, exec)
	if s := scrapeMetrics(t, srv.URL); s.parsed["fleeting_taskscaler_desired_instances"] != nil {
		t.Errorf("a stopped provider's collector is still exported:\n%s", s.grep("fleeting"))
	}
	if _, _, body := get(t, http.MethodGet, srv.URL+"/debug/autoscaler/instances"); body != "[]\n" {
		t.Errorf("/debug/autoscaler/instances after the provider stopped = %q, want []", body)
	}
	// The same provider may start again (a runner that came back).
	mx.ProviderStarted(info, exec)
	if s := scrapeMetrics(t, srv.URL); s.parsed["fleeting_taskscaler_desired_instances"] == nil {
		t.Error("a restarted provider's collector is not exported")
	}
}

func TestAutoscalerInstancesWithoutToken(t *testing.T) {
	idle := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	exec := newTestExec()
	exec.instances = []metrics.Instance{
		{ID: "i-busy", State: "ready", UseCount: 3, Acquired: 2},
		{ID: "i-idle", State: "draining", UseCount: 4, IdleSince: &idle},
	}
	r := newRig(t, exec)
	url := r.base + "/debug/autoscaler/instances"
	if _, _, body := get(t, http.MethodGet, url); body != "[]\n" {
		t.Errorf("before any provider started: %q, want []", body)
	}
	r.start(1, 0)

	// The manager starts the provider on its own schedule.
	var body string
	for ctx := r.ctx(); ; {
		var status int
		var header http.Header
		status, header, body = get(t, http.MethodGet, url)
		if status != http.StatusOK || header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s: %d %s", url, status, header.Get("Content-Type"))
		}
		if body != "[]\n" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the provider's instances never appeared")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if strings.Contains(body, r.token) {
		t.Fatal("/debug/autoscaler/instances shows the runner token")
	}
	var got []metrics.RunnerInstances
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	want := []metrics.RunnerInstances{{
		Runner: manager.ShortToken(r.token), RunnerName: "metrics-runner", SystemID: systemID, Instances: exec.instances,
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// The wire names are part of the contract (the demo and operators read them).
	for _, key := range []string{`"runner":`, `"runner_name":`, `"system_id":`, `"instances":`, `"id":"i-busy"`, `"state":"ready"`,
		`"use_count":3`, `"acquired":2`, `"idle_since":"2025-03-01T12:00:00Z"`} {
		if !strings.Contains(body, key) {
			t.Errorf("body lacks %s: %s", key, body)
		}
	}
	if strings.Count(body, "idle_since") != 1 {
		t.Errorf("idle_since should be absent for a busy instance: %s", body)
	}
}
