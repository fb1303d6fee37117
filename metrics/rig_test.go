package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/manager"
	"gitlab.com/fleetrunner/fleetrunner/metrics"
)

// testTimeout bounds every wait of these tests.
const testTimeout = 60 * time.Second

const systemID = "s_0123456789ab"

// testExec is the test-only executor. Script lines:
//
//	section NAME  open a log section (the build stage)
//	echo TEXT     write TEXT
//	wait          announce the job on waiting, then wait for GitLab's cancel or an abort
//	exit N        fail with script_failure and exit code N
//
// With noCapacity, Reserve always answers ErrNoCapacity. It exports one collector of its own and lists
// instances (set before the manager starts), as the docker-autoscaler provider does.
type testExec struct {
	noCapacity bool
	desired    prometheus.Gauge
	waiting    chan waitingJob
	instances  []metrics.Instance
}

type waitingJob struct {
	id         int64
	url, token string
}

func newTestExec() *testExec {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "fleeting_taskscaler_desired_instances", Help: "test"})
	g.Set(4)
	return &testExec{desired: g, waiting: make(chan waitingJob, 16)}
}

func (e *testExec) Collectors() []prometheus.Collector { return []prometheus.Collector{e.desired} }

func (e *testExec) AutoscalerInstances() []metrics.Instance { return e.instances }

func (e *testExec) Reserve(context.Context) (executors.Reservation, error) {
	if e.noCapacity {
		return nil, executors.ErrNoCapacity
	}
	return executors.NoReservation{}, nil
}

func (e *testExec) Features() map[string]bool      { return map[string]bool{"variables": true} }
func (e *testExec) Shutdown(context.Context) error { return nil }
func (e *testExec) registry() executors.Registry {
	return executors.Registry{config.ExecutorDocker: func(*config.RunnerConfig, executors.Deps) (executors.Provider, error) {
		return e, nil
	}}
}

func (e *testExec) Run(ctx context.Context, _ executors.Reservation, b *executors.Build) error {
	var lines []string
	if s := b.Job.StepByName(job.StepScript); s != nil {
		lines = s.Script
	}
	for _, line := range lines {
		cmd, arg, _ := strings.Cut(line, " ")
		switch cmd {
		case "section":
			b.Log.SectionStart(arg, "Running "+arg)
		case "echo":
			_, _ = fmt.Fprintln(b.Log, arg)
		case "wait":
			e.waiting <- waitingJob{id: b.Job.ID, url: b.Job.Variables.Get("CI_JOB_URL"), token: b.Job.Token}
			select {
			case <-b.Canceling.Done():
				return &job.BuildError{Reason: job.JobCanceled, Err: fmt.Errorf("canceled")}
			case <-ctx.Done():
				return ctx.Err()
			}
		case "exit":
			n, _ := strconv.Atoi(arg)
			return &job.BuildError{Reason: job.ScriptFailure, ExitCode: n, Err: fmt.Errorf("exit code %d", n)}
		default:
			return fmt.Errorf("unknown test command %q", cmd)
		}
	}
	return nil
}

// rig is a simulator, a runner, a manager with the metrics observer and the metrics server.
type rig struct {
	t     *testing.T
	sim   *gitlabsim.Server
	exec  *testExec
	token string
	mx    *metrics.Metrics
	base  string // http://host:port of the metrics server
	m     *manager.Manager
	// runnerTables is TOML appended to the runner entry by start.
	runnerTables string
}

func newRig(t *testing.T, exec *testExec) *rig {
	t.Helper()
	sim, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	_, token := sim.CreateRunner(gitlabsim.RunnerOptions{Description: "metrics test"})

	log := logging.Discard()
	mx := metrics.New(log)
	log.AddHook(mx.LogHook())
	srv, err := metrics.Start(log, "127.0.0.1:0", mx.Handler())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return &rig{t: t, sim: sim, exec: exec, token: token, mx: mx, base: "http://" + srv.Addr()}
}

// start writes config.toml and runs the manager until the test ends.
func (r *rig) start(concurrent, limit int) {
	r.t.Helper()
	cfgPath := filepath.Join(r.t.TempDir(), "config.toml")
	text := fmt.Sprintf(`concurrent = %d
check_interval = 1
shutdown_timeout = 5

[[runners]]
  name = "metrics-runner"
  url = %q
  token = %q
  executor = "docker"
  limit = %d
  [runners.docker]
    image = "busybox"
%s`, concurrent, r.sim.URL(), r.token, limit, r.runnerTables)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.m = manager.New(logging.Discard(), manager.Options{
		ConfigPath: cfgPath, Registry: r.exec.registry(), SystemID: systemID, Observer: r.mx,
	})
	done := make(chan error, 1)
	go func() { done <- r.m.Run(context.Background()) }()
	r.t.Cleanup(func() {
		r.m.StopForcefully()
		r.m.StopForcefully()
		select {
		case err := <-done:
			if err != nil {
				r.t.Logf("manager stopped with: %v", err)
			}
		case <-time.After(testTimeout):
			r.t.Error("manager did not stop")
		}
	})
}

func (r *rig) ctx() context.Context {
	ctx, cancel := context.WithTimeout(r.t.Context(), testTimeout)
	r.t.Cleanup(cancel)
	return ctx
}

func (r *rig) finished(id int64) gitlabsim.JobSnapshot {
	r.t.Helper()
	return testrig.Finished(r.t, r.sim, id, testTimeout)
}

// get fetches a path of the metrics server and returns status and body.
func get(t *testing.T, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

// scrape is one GET /metrics, parsed.
type scrape struct {
	t      *testing.T
	text   string
	parsed map[string]*dto.MetricFamily
}

func scrapeMetrics(t *testing.T, base string) scrape {
	t.Helper()
	status, _, body := get(t, http.MethodGet, base+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	return scrape{t: t, text: body, parsed: mfs}
}

// find returns the series of name whose labels include want, or nil.
func (s scrape) find(name string, want map[string]string) *dto.Metric {
	mf := s.parsed[name]
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if have[k] != v {
				match = false
				break
			}
		}
		if match {
			return m
		}
	}
	return nil
}

// value is a counter's or gauge's value; a missing series fails the test.
func (s scrape) value(name string, labels map[string]string) float64 {
	s.t.Helper()
	m := s.find(name, labels)
	switch {
	case m == nil:
		s.t.Fatalf("no %s%v in /metrics:\n%s", name, labels, s.grep(name))
		return 0
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	s.t.Fatalf("%s is neither counter nor gauge", name)
	return 0
}

// grep returns the lines of the scrape that mention name, for failure messages.
func (s scrape) grep(name string) string {
	var out []string
	for _, l := range strings.Split(s.text, "\n") {
		if strings.Contains(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitMetric scrapes until cond holds for the scrape (the manager acts on its own schedule).
func waitMetric(t *testing.T, base string, what string, cond func(scrape) bool) scrape {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	for {
		if s := scrapeMetrics(t, base); cond(s) {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
