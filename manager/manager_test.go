package manager_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// testTimeout bounds every wait of these tests.
const testTimeout = 90 * time.Second

// rig is one simulator, one runner token, one config file and a manager running from it.
type rig struct {
	t        *testing.T
	sim      *gitlabsim.Server
	exec     *scriptExec
	token    string
	url      string
	cfgPath  string
	systemID string
	logs     *testrig.SyncBuffer
	m        *manager.Manager
	runErr   chan error
	// runCtx is Run's context; nil means context.Background().
	runCtx context.Context
	// registry replaces the test executor's when set (startWith).
	registry executors.Registry
	// observer is the manager's Observer when set.
	observer manager.Observer
}

type runnerSettings struct {
	concurrent, limit, requestConcurrency int
	extra                                 string // more [[runners]] keys
}

func newRig(t *testing.T, simOpts gitlabsim.Options) *rig {
	t.Helper()
	if simOpts.TraceUpdateInterval == 0 {
		simOpts.TraceUpdateInterval = 1
	}
	sim, err := gitlabsim.New(simOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	_, token := sim.CreateRunner(gitlabsim.RunnerOptions{Description: "manager test"})
	dir := t.TempDir()
	r := &rig{
		t: t, sim: sim, exec: newScriptExec(), token: token, url: sim.URL(),
		cfgPath: filepath.Join(dir, "config.toml"), systemID: "s_0123456789ab", logs: &testrig.SyncBuffer{},
	}
	return r
}

func (r *rig) writeConfig(s runnerSettings) {
	r.t.Helper()
	text := fmt.Sprintf(`concurrent = %d
check_interval = 1
shutdown_timeout = 5

[[runners]]
  name = "test-runner"
  url = %q
  token = %q
  executor = "docker"
  limit = %d
  request_concurrency = %d
%s
  [runners.docker]
    image = "busybox"
`, s.concurrent, r.url, r.token, s.limit, s.requestConcurrency, s.extra)
	if err := os.WriteFile(r.cfgPath, []byte(text), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// start runs the manager until the test ends; the cleanup stops it for good.
func (r *rig) start(reloadInterval time.Duration) {
	r.t.Helper()
	log := logrus.New()
	log.Out = r.logs
	log.Level = logrus.DebugLevel
	reg := r.registry
	if reg == nil {
		reg = r.exec.registry()
	}
	r.m = manager.New(log, manager.Options{
		ConfigPath: r.cfgPath, Registry: reg, SystemID: r.systemID, ReloadInterval: reloadInterval,
		Observer: r.observer,
	})
	r.runErr = make(chan error, 1)
	ctx := r.runCtx
	if ctx == nil {
		ctx = context.Background()
	}
	go func() { r.runErr <- r.m.Run(ctx) }()
	r.t.Cleanup(func() {
		r.m.StopForcefully()
		r.m.StopForcefully()
		select {
		case err := <-r.runErr:
			if err != nil {
				r.t.Logf("manager stopped with: %v", err)
			}
		case <-time.After(testTimeout):
			r.t.Error("manager did not stop")
		}
	})
}

// startWith is start with p as the runner's executor instead of the rig's test executor.
func (r *rig) startWith(p executors.Provider, reloadInterval time.Duration) {
	r.registry = executors.Registry{config.ExecutorDocker: func(*config.RunnerConfig, executors.Deps) (executors.Provider, error) {
		return p, nil
	}}
	r.start(reloadInterval)
}

// takeJob plays a previous manager process that took job id from GitLab, which now runs it.
func (r *rig) takeJob(id int64) *job.Job {
	r.t.Helper()
	client, err := gitlab.NewClient(logrus.New(), gitlab.ClientConfig{URL: r.url, Info: gitlab.NewVersionInfo("docker", "sh", nil)})
	if err != nil {
		r.t.Fatal(err)
	}
	got := client.RequestJob(r.ctx(), r.token, r.systemID)
	if got.Job == nil || got.Job.ID != id {
		r.t.Fatalf("could not take job %d from the simulator: %+v", id, got)
	}
	return got.Job
}

// wait returns Run's result.
func (r *rig) wait() error {
	r.t.Helper()
	select {
	case err := <-r.runErr:
		r.runErr <- err // let the cleanup see it too
		return err
	case <-time.After(testTimeout):
		r.t.Fatal("manager did not return")
		return nil
	}
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

// checkTrace asserts that the stored log is consistent with what the runner reported and that its
// user part is exactly what the job wrote, masked; it returns the runner lines before and after it.
func checkTrace(t *testing.T, snap gitlabsim.JobSnapshot, wrote string, secrets ...string) (head, tail string) {
	t.Helper()
	if want := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(snap.Trace)); snap.Checksum != want {
		t.Errorf("job %d: reported checksum %s, stored log has %s", snap.ID, snap.Checksum, want)
	}
	if snap.Bytesize != int64(len(snap.Trace)) {
		t.Errorf("job %d: reported bytesize %d, stored log has %d bytes", snap.ID, snap.Bytesize, len(snap.Trace))
	}
	masked := wrote
	for _, s := range secrets {
		masked = strings.ReplaceAll(masked, s, "[MASKED]")
	}
	stored := string(snap.Trace)
	for _, s := range secrets {
		if strings.Contains(stored, s) {
			t.Errorf("job %d: masked value %q reached GitLab", snap.ID, s)
		}
	}
	i := strings.Index(stored, masked)
	if i < 0 {
		t.Fatalf("job %d: stored log does not contain the job's masked output\nstored: %q\nwant inside: %q", snap.ID, stored, masked)
	}
	head, tail = stored[:i], stored[i+len(masked):]
	if !strings.Contains(head, "Running with fleetrunner") || strings.Count(head, "\n") != 2 {
		t.Errorf("job %d: unexpected log header %q", snap.ID, head)
	}
	return head, tail
}

func TestRunsFiftyJobsWithConcurrentFour(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 4, requestConcurrency: 4})

	type want struct {
		id       int64
		secret   string
		exitCode int
	}
	var jobs []want
	for i := range 50 {
		secret := fmt.Sprintf("s3cr3t-%02d-value", i)
		w := want{secret: secret}
		script := []string{
			"echo job " + strconv.Itoa(i) + " starts",
			"echo the secret is $SECRET.",
			"print half of $SECRET",
			"echo  and the end",
			fmt.Sprintf("sleep %dms", 10+i%7*10),
		}
		if i%5 == 0 {
			w.exitCode = 1 + i%3
			script = append(script, "exit "+strconv.Itoa(w.exitCode))
		}
		w.id = r.sim.Enqueue(gitlabsim.JobSpec{
			Name:        "job-" + strconv.Itoa(i),
			Script:      script,
			AfterScript: []string{"echo after $CI_JOB_NAME"},
			Variables:   []job.Variable{{Key: "SECRET", Value: secret, Masked: true}},
		})
		jobs = append(jobs, w)
	}
	r.start(0)

	for _, w := range jobs {
		snap := r.finished(w.id)
		head, tail := checkTrace(t, snap, r.exec.output(w.id), w.secret)
		if want := "  on test-runner " + manager.ShortToken(r.token) + ", system ID: " + r.systemID; !strings.Contains(head, want) {
			t.Errorf("job %d: log header %q does not name the runner as %q", w.id, head, want)
		}
		if w.exitCode == 0 {
			if snap.Status != gitlabsim.StatusSuccess || !strings.Contains(tail, "Job succeeded") {
				t.Errorf("job %d: status %s, log tail %q; want success", w.id, snap.Status, tail)
			}
			continue
		}
		if snap.Status != gitlabsim.StatusFailed || snap.FailureReason != string(job.ScriptFailure) || snap.ExitCode != w.exitCode {
			t.Errorf("job %d: %s/%s exit %d; want failed/script_failure exit %d", w.id, snap.Status, snap.FailureReason, snap.ExitCode, w.exitCode)
		}
		if !strings.Contains(tail, fmt.Sprintf("ERROR: Job failed: exit code %d", w.exitCode)) {
			t.Errorf("job %d: log tail %q does not give the exit code", w.id, tail)
		}
	}

	r.m.StopGracefully()
	if err := r.wait(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	running, maxRunning, runs, reserved, shutdowns := r.exec.stats()
	t.Logf("at most %d jobs ran at once", maxRunning)
	if maxRunning > 4 || maxRunning < 1 {
		t.Errorf("at most %d jobs ran at once; concurrent = 4", maxRunning)
	}
	if running != 0 || runs != 50 || reserved != 0 || shutdowns != 1 {
		t.Errorf("after stop: %d running, %d runs, %d reservations held, %d shutdowns; want 0, 50, 0, 1", running, runs, reserved, shutdowns)
	}
	for _, snap := range r.sim.Jobs() {
		if !snap.Finished() {
			t.Errorf("job %d left %s", snap.ID, snap.Status)
		}
	}
	for _, secret := range []string{r.token, jobs[0].secret} {
		if strings.Contains(r.logs.String(), secret) {
			t.Errorf("a secret (%s…) reached the manager's log", secret[:6])
		}
	}
}

// corruptingProxy forwards to the simulator and makes the first job payload it sees unreadable while
// keeping its id and token readable, as a GitLab with a broken field would.
func corruptingProxy(t *testing.T, target string) (proxyURL string, corrupted *atomic.Int64) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	corrupted = &atomic.Int64{}
	timeoutField := regexp.MustCompile(`"runner_info":\{"timeout":\d+`)
	idField := regexp.MustCompile(`^\{"id":(\d+)`)
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/api/v4/jobs/request" || resp.StatusCode != http.StatusCreated || corrupted.Load() != 0 {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		bad := timeoutField.ReplaceAll(body, []byte(`"runner_info":{"timeout":"soon"`))
		if m := idField.FindSubmatch(body); m != nil && !bytes.Equal(bad, body) {
			id, _ := strconv.ParseInt(string(m[1]), 10, 64)
			corrupted.Store(id)
		}
		resp.Body = io.NopCloser(bytes.NewReader(bad))
		resp.ContentLength = int64(len(bad))
		resp.Header.Set("Content-Length", strconv.Itoa(len(bad)))
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL, corrupted
}

func TestMalformedPayloadFailsThatJobAndTheRunnerGoesOn(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	proxyURL, corrupted := corruptingProxy(t, r.sim.URL())
	r.url = proxyURL
	r.writeConfig(runnerSettings{concurrent: 1})
	first := r.sim.Enqueue(gitlabsim.JobSpec{Name: "first", Script: []string{"echo never runs"}})
	second := r.sim.Enqueue(gitlabsim.JobSpec{Name: "second", Script: []string{"echo second runs"}})
	r.start(0)

	bad := r.finished(first)
	if got := corrupted.Load(); got != first {
		t.Fatalf("proxy corrupted job %d, want %d", got, first)
	}
	if bad.Status != gitlabsim.StatusFailed || bad.FailureReason != string(job.RunnerSystemFailure) {
		t.Errorf("malformed job: %s/%s; want failed/runner_system_failure", bad.Status, bad.FailureReason)
	}
	if !strings.Contains(string(bad.Trace), "the job payload from GitLab could not be read") {
		t.Errorf("malformed job's log does not say why: %q", bad.Trace)
	}
	good := r.finished(second)
	if good.Status != gitlabsim.StatusSuccess {
		t.Errorf("next job: %s; want success", good.Status)
	}
	checkTrace(t, good, "second runs\n")
	if _, _, runs, _, _ := r.exec.stats(); runs != 1 {
		t.Errorf("executor ran %d jobs; the malformed one must not reach it", runs)
	}
}

func TestJobsFinishWithThirtyPercentServerErrors(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 4, requestConcurrency: 2})
	r.sim.SetFaults(gitlabsim.Faults{ErrorRate: 0.3})
	var ids []int64
	for i := range 10 {
		ids = append(ids, r.sim.Enqueue(gitlabsim.JobSpec{
			Name: "flaky-" + strconv.Itoa(i),
			Script: []string{
				"echo line one of " + strconv.Itoa(i),
				"sleep 100ms",
				"echo line two of " + strconv.Itoa(i),
			},
		}))
	}
	r.start(0)
	for _, id := range ids {
		snap := r.finished(id)
		if snap.Status != gitlabsim.StatusSuccess {
			t.Errorf("job %d: %s (%s); want success", id, snap.Status, snap.FailureReason)
		}
		checkTrace(t, snap, r.exec.output(id))
	}
}

func TestGracefulStopLetsRunningJobFinish(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	// With one slot held by the running job no request is in flight, so the job enqueued after the
	// stop cannot have been asked for before it.
	r.writeConfig(runnerSettings{concurrent: 1})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "long", Script: []string{"echo start", "sleep 1500ms", "echo end"}})
	r.start(0)
	if err := r.exec.waitStarted(r.ctx(), id); err != nil {
		t.Fatal(err)
	}
	r.m.StopGracefully()
	later := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after stop", Script: []string{"echo too late"}})
	if err := r.wait(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	snap, _ := r.sim.Job(id)
	if snap.Status != gitlabsim.StatusSuccess || !strings.Contains(string(snap.Trace), "end\n") {
		t.Errorf("running job: %s, log %q; want success with its whole output", snap.Status, snap.Trace)
	}
	if snap, _ := r.sim.Job(later); snap.Status != gitlabsim.StatusPending {
		t.Errorf("job enqueued after the stop is %s; want pending (no new jobs are requested)", snap.Status)
	}
	if _, _, _, _, shutdowns := r.exec.stats(); shutdowns != 1 {
		t.Errorf("provider shut down %d times; want 1", shutdowns)
	}
}

func TestForcefulStopAbortsRunningJob(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 2})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "endless", Script: []string{"echo start", "wait"}, AfterScript: []string{"echo after"}})
	r.start(0)
	if err := r.exec.waitStarted(r.ctx(), id); err != nil {
		t.Fatal(err)
	}
	r.m.StopForcefully()
	if err := r.wait(); err != nil {
		t.Fatalf("forceful stop: %v", err)
	}
	snap, _ := r.sim.Job(id)
	if snap.Status != gitlabsim.StatusFailed || snap.FailureReason != string(job.RunnerSystemFailure) {
		t.Errorf("aborted job: %s/%s; want failed/runner_system_failure", snap.Status, snap.FailureReason)
	}
	trace := string(snap.Trace)
	if !strings.Contains(trace, "the runner is shutting down") || strings.Contains(trace, "after\n") {
		t.Errorf("aborted job's log %q: want the shutdown reason and no after_script", trace)
	}
}

func TestCancelledRunContextIsOneForcefulStop(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 1})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "endless", Script: []string{"echo start", "wait"}})
	ctx, cancel := context.WithCancel(context.Background())
	r.runCtx = ctx
	r.start(0)
	if err := r.exec.waitStarted(r.ctx(), id); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := r.wait(); err != nil {
		t.Fatalf("Run after its context ended: %v; want a clean forceful stop", err)
	}
	if snap, _ := r.sim.Job(id); snap.Status != gitlabsim.StatusFailed || snap.FailureReason != string(job.RunnerSystemFailure) {
		t.Errorf("aborted job: %s/%s; want failed/runner_system_failure", snap.Status, snap.FailureReason)
	}
}

func TestSecondForcefulStopReturnsAtOnce(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 1})
	// The job ignores the abort, as a stuck executor would.
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "stuck", Script: []string{"echo start", "wait"}})
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	r.start(0)
	if err := r.exec.waitStarted(r.ctx(), id); err != nil {
		t.Fatal(err)
	}
	r.exec.mu.Lock()
	r.exec.blockAbort = stuck
	r.exec.mu.Unlock()
	r.m.StopForcefully()
	r.m.StopForcefully()
	if err := r.wait(); !errors.Is(err, manager.ErrForcedExit) {
		t.Fatalf("second forceful stop: %v; want ErrForcedExit", err)
	}
}

func TestGitLabCancelReachesExecutorGracefully(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 1})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "to cancel", Script: []string{"echo start", "wait", "echo not reached"}, AfterScript: []string{"echo cleaning up"}})
	r.start(0)
	if err := r.exec.waitStarted(r.ctx(), id); err != nil {
		t.Fatal(err)
	}
	if err := r.sim.Cancel(id); err != nil {
		t.Fatal(err)
	}
	snap := r.finished(id)
	if snap.Status != gitlabsim.StatusCanceled {
		t.Errorf("canceled job: %s; want canceled", snap.Status)
	}
	out := r.exec.output(id)
	if !strings.Contains(out, "cleaning up") || strings.Contains(out, "not reached") {
		t.Errorf("canceled job wrote %q; want after_script and no more script", out)
	}
	checkTrace(t, snap, out)
}

// A job the manager ends for its timeout, and one whose executor lost its environment, reach GitLab
// failed with the reason upstream reports and a log line that says why.
func TestFailureReasonsAreReported(t *testing.T) {
	for _, tt := range []struct {
		name    string
		spec    gitlabsim.JobSpec
		reason  job.FailureReason
		logLine string
	}{
		{"timeout", gitlabsim.JobSpec{Name: "slow", Script: []string{"echo start", "wait"}, Timeout: time.Second},
			job.JobExecutionTimeout, "execution took longer than 1s"},
		{"system failure", gitlabsim.JobSpec{Name: "crash", Script: []string{"echo start", "crash"}},
			job.RunnerSystemFailure, "Job failed (system failure): the test executor lost its environment"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, gitlabsim.Options{})
			r.writeConfig(runnerSettings{concurrent: 1})
			id := r.sim.Enqueue(tt.spec)
			r.start(0)
			snap := r.finished(id)
			if snap.Status != gitlabsim.StatusFailed || snap.FailureReason != string(tt.reason) {
				t.Errorf("job %s: %s/%s; want failed/%s", tt.spec.Name, snap.Status, snap.FailureReason, tt.reason)
			}
			if !strings.Contains(string(snap.Trace), tt.logLine) {
				t.Errorf("job %s's log %q does not say %q", tt.spec.Name, snap.Trace, tt.logLine)
			}
		})
	}
}

func TestReloadAppliesChangedLimit(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 4, limit: 1, requestConcurrency: 4})
	var ids []int64
	for i := range 3 {
		ids = append(ids, r.sim.Enqueue(gitlabsim.JobSpec{Name: "held-" + strconv.Itoa(i), Script: []string{"wait"}}))
	}
	r.start(50 * time.Millisecond)
	if err := r.exec.waitRunning(r.ctx(), 1); err != nil {
		t.Fatal(err)
	}
	// Several polls pass (check_interval is 1 s) while the limit holds the other jobs back.
	time.Sleep(2500 * time.Millisecond)
	if _, maxRunning, _, _, _ := r.exec.stats(); maxRunning != 1 {
		t.Fatalf("%d jobs ran at once with limit = 1", maxRunning)
	}

	r.writeConfig(runnerSettings{concurrent: 4, limit: 3, requestConcurrency: 4})
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(r.cfgPath, future, future); err != nil {
		t.Fatal(err)
	}
	if err := r.exec.waitRunning(r.ctx(), 3); err != nil {
		t.Fatalf("the changed file was not applied: %v", err)
	}
	for _, id := range ids {
		if err := r.sim.Cancel(id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if snap := r.finished(id); snap.Status != gitlabsim.StatusCanceled {
			t.Errorf("job %d: %s; want canceled", id, snap.Status)
		}
	}
	if !strings.Contains(r.logs.String(), "configuration reloaded") {
		t.Error("the reload was not logged")
	}
}

func TestSighupReloadAddsRunnerAndRemovalShutsItsProviderDown(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 1})
	r.start(time.Hour)
	// The start must not read the file while the test rewrites it.
	waitLog(t, r.logs, "fleetrunner is running")
	// An upstream-only executor is skipped with a warning, not an error.
	extra := fmt.Sprintf(`
[[runners]]
  name = "second"
  url = %q
  token = "glrt-not-this-one"
  executor = "shell"
`, r.url)
	data, err := os.ReadFile(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.cfgPath, append(data, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	r.m.Reload()
	waitLog(t, r.logs, "configuration reloaded")
	if !strings.Contains(r.logs.String(), "runners[1].executor") {
		t.Error("the warning for the shell runner does not name its key")
	}

	// Removing the served runner shuts its provider down once its jobs are done.
	other := fmt.Sprintf(`
[[runners]]
  name = "third"
  url = %q
  token = "glrt-another-runner"
  executor = "docker"
  [runners.docker]
    image = "busybox"
`, r.url)
	if err := os.WriteFile(r.cfgPath, []byte("concurrent = 1\n"+other), 0o600); err != nil {
		t.Fatal(err)
	}
	r.m.Reload()
	if err := r.exec.waitFor(r.ctx(), func() bool { return r.exec.shutdowns == 1 }); err != nil {
		t.Fatalf("removed runner's provider was not shut down: %v\n%s", err, r.logs)
	}
}

// A config.toml caught empty (an editor or a config-management tool truncates it, then writes) is
// refused: the runner keeps serving and its provider, with its instances, stays.
func TestReloadToEmptyConfigKeepsServing(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 1})
	r.start(time.Hour)
	waitLog(t, r.logs, "fleetrunner is running")
	for i, text := range []string{"", "concurrent = 1\n"} {
		if err := os.WriteFile(r.cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		r.m.Reload()
		want := "defines no [[runners]] (is it empty or cut short?); to really remove every runner, stop the service"
		testrig.WaitFor(t, testTimeout, "the refusal of a config without runners", func() bool {
			return strings.Count(r.logs.String(), want) > i
		})
	}
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "still-served", Script: []string{"echo served"}})
	if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job after a reload to an empty config: %s; want success", snap.Status)
	}
	if _, _, _, _, shutdowns := r.exec.stats(); shutdowns != 0 {
		t.Errorf("provider shut down %d times after a reload to an empty config; want 0", shutdowns)
	}
	if strings.Contains(r.logs.String(), "runner left the configuration") {
		t.Errorf("the runner was retired by an empty config:\n%s", r.logs)
	}
}

func waitLog(t *testing.T, logs *testrig.SyncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", s, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRevokedTokenPausesRunner(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 1, extra: `  unhealthy_requests_limit = 2
  unhealthy_interval = "1h"`})
	r.sim.RevokeRunner(r.token)
	r.start(0)
	waitLog(t, r.logs, "runner is unhealthy (2 failed job requests in a row)")
	if n := strings.Count(r.logs.String(), "GitLab refused the runner token"); n != 2 {
		t.Errorf("%d refused requests logged before the pause; want 2", n)
	}
}

func TestReserveWithoutCapacitySkipsTheRequest(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.exec.capacity = 1
	r.writeConfig(runnerSettings{concurrent: 4, requestConcurrency: 4})
	var ids []int64
	for i := range 3 {
		ids = append(ids, r.sim.Enqueue(gitlabsim.JobSpec{Name: "one-at-a-time-" + strconv.Itoa(i), Script: []string{"sleep 50ms", "echo done"}}))
	}
	r.start(0)
	for _, id := range ids {
		if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
			t.Errorf("job %d: %s; want success", id, snap.Status)
		}
	}
	if _, maxRunning, _, _, _ := r.exec.stats(); maxRunning != 1 {
		t.Errorf("%d jobs ran at once with an executor capacity of 1", maxRunning)
	}
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   []string
	}{
		{"broken key", "concurrent = 0\n", []string{"config.toml", "concurrent", "at least 1"}},
		{"empty file", "", []string{"config.toml", "defines no [[runners]]", "fleetrunner register"}},
		{"only runners of other executors", "concurrent = 1\n[[runners]]\n  name = \"s\"\n  url = \"http://127.0.0.1:1\"\n  token = \"glrt-x\"\n  executor = \"shell\"\n",
			[]string{"config.toml", "has no [[runners]] entry this build can serve", "fleetrunner register"}},
		{"no runners", "concurrent = 4\n", []string{"config.toml", "defines no [[runners]]"}},
		{"unknown executor in this build", `concurrent = 1
[[runners]]
  name = "r"
  url = "http://127.0.0.1:1"
  token = "glrt-x"
  executor = "docker-autoscaler"
  [runners.docker]
    image = "busybox"
  [runners.autoscaler]
    plugin = "aws"
    max_instances = 1
`, []string{`unknown executor "docker-autoscaler"`, "docker"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			m := manager.New(logrus.New(), manager.Options{ConfigPath: path, Registry: newScriptExec().registry()})
			err := m.Run(t.Context())
			if err == nil {
				t.Fatal("Run started with a config it cannot serve")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
