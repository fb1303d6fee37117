package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/manager"
	"gitlab.com/fleetrunner/fleetrunner/metrics"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

func init() {
	Register(Bench{Name: "3 manager", Run: runManagerScale})
}

// managerScale is the size of the manager row: the 2,000 jobs on 500 instances, or a small run
// of the same code for CI.
type managerScale struct {
	jobs, perInstance int
	duration          time.Duration
}

func (s managerScale) instances() int { return (s.jobs + s.perInstance - 1) / s.perInstance }

// logChunk is the 1 KB every job writes per second: one line, as a chatty build would print it.
var logChunk = append(bytes.Repeat([]byte("0123456789abcdef"), 1023/16), "0123456789abcde\n"...)

// runManagerScale runs the real manager, metrics observer and taskscaler (state file on) over an
// in-process instance group and an executor that only streams log, against gitlabsim in a child process,
// so that the process CPU time measured here is the manager's alone.
func runManagerScale(t *testing.T, p Profile) []Row {
	sc := managerScale{jobs: 2000, perInstance: 4, duration: 60 * time.Second}
	if p.Short {
		sc = managerScale{jobs: 100, perInstance: 4, duration: 3 * time.Second}
	}
	sim := startGitlabsim(t)
	sim.enqueue(t, sc.jobs)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf(`concurrent = %d
check_interval = 1
shutdown_timeout = 30

[[runners]]
  name = "bench"
  url = %q
  token = %q
  executor = "docker"
  limit = %d
  request_concurrency = 4
  [runners.docker]
    image = "busybox"
`, sc.jobs, sim.url, sim.token, sc.jobs)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	// Warnings go to the test log so that a run that stalls says why.
	log := logrus.New()
	log.Out = testLog{t}
	log.Level = logrus.WarnLevel
	se := &streamExec{sc: sc, running: make(chan int, 1), allRunning: make(chan struct{})}
	obs := &countingObserver{Metrics: metrics.New(log)}
	m := manager.New(log, manager.Options{
		ConfigPath: cfgPath, SystemID: "s_bench0000000", Observer: obs,
		Registry: executors.Registry{config.ExecutorDocker: se.provider(t)},
	})
	runErr := make(chan error, 1)
	cpu0, start := cpuTime(), time.Now()
	go func() { runErr <- m.Run(context.Background()) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		m.StopGracefully()
		if err := <-runErr; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(func() {
		if !stopped {
			m.StopForcefully()
			m.StopForcefully()
			if err := <-runErr; err != nil {
				t.Logf("manager stopped with: %v", err)
			}
		}
	})

	// The steady state is the time every job streams: from the last start to the first end.
	deadline := time.After(2*sc.duration + time.Minute)
	waitRunning := func(want func(int) bool) {
		for {
			select {
			case n := <-se.running:
				if want(n) {
					return
				}
			case err := <-runErr:
				runErr <- err // for the cleanup
				t.Fatalf("the manager stopped: %v", err)
			case <-deadline:
				t.Fatalf("jobs running: %d; the manager did not get there in time", se.now())
			}
		}
	}
	waitRunning(func(n int) bool { return n == sc.jobs })
	rampEnd, cpuRamp, requests, saves := time.Now(), cpuTime(), obs.requests.Load(), se.saves.Load()
	var peakRSS int64
	sampler := time.NewTicker(time.Second)
	steadyEnded := make(chan struct{})
	go func() {
		waitRunning(func(n int) bool { return n < sc.jobs })
		close(steadyEnded)
	}()
sampling:
	for {
		peakRSS = max(peakRSS, procStatus(t, "VmRSS"))
		select {
		case <-sampler.C:
		case <-steadyEnded:
			break sampling
		}
	}
	sampler.Stop()
	steadyEnd, cpuSteady, steadySaves := time.Now(), cpuTime(), se.saves.Load()
	sim.waitDone(t, sc.jobs, deadline)
	end, cpuEnd := time.Now(), cpuTime()
	stop()

	ramp, steady := rampEnd.Sub(start), steadyEnd.Sub(rampEnd)
	if steady <= 0 {
		t.Fatal("no steady state: the first job ended before the last one started")
	}
	reconcile := reconcilePass(t, 1000)
	size := fmt.Sprintf("%d jobs × %s of 1 KB/s log on %d instances (capacity_per_instance %d)",
		sc.jobs, sc.duration, sc.instances(), sc.perInstance)
	return []Row{
		{
			Name: "Manager CPU, steady state", Value: (cpuSteady - cpuRamp).Seconds() / steady.Seconds(), Unit: "cores",
			Goal: "< 1 core",
			Note: fmt.Sprintf("%s; steady %.1f s; ramp-up %.1f s at %.2f cores; whole run %.2f cores; gitlabsim runs in a child process",
				size, steady.Seconds(), ramp.Seconds(), (cpuRamp-cpu0).Seconds()/ramp.Seconds(), (cpuEnd-cpu0).Seconds()/end.Sub(start).Seconds()),
		},
		{
			Name: "Manager resident memory", Value: float64(peakRSS) / (1 << 20), Unit: "MiB", Goal: "< 1024 MiB",
			Note: fmt.Sprintf("peak VmRSS of the test process during the steady state; VmHWM %d MiB (other rows included)", procStatus(t, "VmHWM")>>20),
		},
		{
			Name: "Manager job requests", Value: float64(requests) / ramp.Seconds(), Unit: "req/s",
			// A full fleet of jobs that each last the run's duration turns over at this rate.
			Goal: fmt.Sprintf("≥ %.0f req/s (%d jobs per %s)", float64(sc.jobs)/sc.duration.Seconds(), sc.jobs, sc.duration),
			Note: fmt.Sprintf("%d requests until all %d jobs ran (request_concurrency 4)", requests, sc.jobs),
		},
		{
			Name: "Manager state-file writes", Value: float64(saves) / ramp.Seconds(), Unit: "writes/s", Goal: "figure only",
			Note: fmt.Sprintf("during ramp-up (%d writes); %.2f writes/s in the steady state", saves, float64(steadySaves-saves)/steady.Seconds()),
		},
		{
			Name: "Reconcile pass, 1,000 instances", Value: float64(reconcile) / float64(time.Millisecond), Unit: "ms",
			Goal: "< 10 ms", Note: "median of 20 passes: list, apply, plan, over 1,000 ready instances with a fake group",
		},
	}
}

// testLog writes the manager's log lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatus reads one memory field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/self/status %s: %v", field, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/self/status has no %s", field)
	return 0
}

// gitlabsimProc is cmd/gitlabsim running as a child process.
type gitlabsimProc struct {
	url, token string
}

func startGitlabsim(t *testing.T) *gitlabsimProc {
	gobin := testenv.RequireCommand(t, "go", "install Go to build cmd/gitlabsim")
	bin := filepath.Join(t.TempDir(), "gitlabsim")
	build := exec.CommandContext(t.Context(), gobin, "build", "-o", bin, "gitlab.com/fleetrunner/fleetrunner/cmd/gitlabsim")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building gitlabsim: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	g := &gitlabsimProc{}
	lines := bufio.NewScanner(stdout)
	for g.token == "" && lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "URL:"); ok {
			g.url = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(lines.Text(), "Runner token:"); ok {
			g.token = strings.TrimSpace(v)
		}
	}
	if g.url == "" || g.token == "" {
		t.Fatalf("gitlabsim did not print its URL and token: %v", lines.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return g
}

func (g *gitlabsimProc) enqueue(t *testing.T, n int) {
	type spec struct {
		Name    string   `json:"name"`
		Stage   string   `json:"stage"`
		Script  []string `json:"script"`
		Timeout int      `json:"timeout"`
	}
	jobs := make([]spec, n)
	for i := range jobs {
		jobs[i] = spec{Name: fmt.Sprintf("stream-%d", i), Stage: "test", Script: []string{"stream"}, Timeout: 3600}
	}
	body, err := json.Marshal(map[string]any{"jobs": jobs})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(g.url+"/sim/pipelines", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("creating the pipeline: %s: %s", resp.Status, msg)
	}
}

// waitDone waits until GitLab has the final state of all n jobs and checks every one succeeded.
func (g *gitlabsimProc) waitDone(t *testing.T, n int, deadline <-chan time.Time) {
	for {
		var jobs []struct {
			ID            int64  `json:"id"`
			Status        string `json:"status"`
			FailureReason string `json:"failure_reason"`
		}
		resp, err := http.Get(g.url + "/sim/jobs")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&jobs)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, j := range jobs {
			switch j.Status {
			case "success":
				done++
			case "failed", "canceled":
				t.Fatalf("job %d: %s (%s)", j.ID, j.Status, j.FailureReason)
			}
		}
		if done == n {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%d of %d jobs finished in time", done, n)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// countingObserver is the real metrics observer, also counting job requests.
type countingObserver struct {
	*metrics.Metrics
	requests atomic.Int64
}

func (o *countingObserver) RequestStarted(r manager.RunnerInfo) {
	o.requests.Add(1)
	o.Metrics.RequestStarted(r)
}

// streamExec is a provider that does what docker-autoscaler does with its taskscaler (reserve, record
// the job in the state file, acquire a slot, release it, record the end) and, instead of a container,
// writes 1 KB of log per second for the job's duration.
type streamExec struct {
	sc    managerScale
	ts    *taskscaler.Taskscaler
	saves atomic.Int64

	mu       sync.Mutex
	keys     int
	runningN int
	// running holds the number of running jobs after the latest change (older values are dropped).
	running chan int
	// allRunning closes when every job holds its slot: the jobs stream from then on, so that all of them
	// run at once for the whole duration however long the ramp-up takes on a slow machine.
	allRunning chan struct{}
}

func (e *streamExec) provider(t *testing.T) executors.Factory {
	return func(_ *config.RunnerConfig, deps executors.Deps) (executors.Provider, error) {
		ts, err := taskscaler.New(&readyGroup{}, taskscaler.Options{
			Logger:              deps.Logger,
			CapacityPerInstance: e.sc.perInstance, MaxInstances: e.sc.instances(),
			Policies:       []taskscaler.Policy{{Periods: []string{"* * * * *"}, Location: time.UTC, IdleTime: time.Hour}},
			UpdateInterval: time.Minute, UpdateIntervalWhenExpecting: time.Second,
			DeletionRetryInterval: time.Minute, FailureThreshold: 3,
			InstanceAcquireTimeout: 15 * time.Minute, CreationTimeout: 10 * time.Minute,
			CreateBackoff: time.Second, MaxCreateBackoff: time.Minute,
			ScaleThrottleLimit: taskscaler.ScaleThrottleUnlimited, ShutdownDeletionInterval: time.Second,
			ShutdownDeletionRetries: 1,
			State:                   &countingStore{Store: state.NewFile(filepath.Join(deps.ConfigDir, "state.json")), saves: &e.saves},
		})
		if err != nil {
			return nil, err
		}
		ts.Start(t.Context())
		e.ts = ts
		return e, nil
	}
}

type streamReservation struct {
	ts   *taskscaler.Taskscaler
	key  string
	once sync.Once
}

func (r *streamReservation) Unreserve() { r.once.Do(func() { r.ts.Unreserve(r.key) }) }

func (e *streamExec) Reserve(context.Context) (executors.Reservation, error) {
	e.mu.Lock()
	e.keys++
	key := "job-" + strconv.Itoa(e.keys)
	e.mu.Unlock()
	if err := e.ts.Reserve(key); err != nil {
		return nil, fmt.Errorf("%w: %w", executors.ErrNoCapacity, err)
	}
	return &streamReservation{ts: e.ts, key: key}, nil
}

func (e *streamExec) Run(ctx context.Context, res executors.Reservation, b *executors.Build) error {
	r := res.(*streamReservation)
	r.once.Do(func() {})
	blob, _ := json.Marshal(map[string]any{"job_id": b.Job.ID, "token": b.Job.Token})
	if err := e.ts.RecordJob(r.key, b.Job.ID, blob); err != nil {
		return err
	}
	defer e.ts.ForgetJob(r.key)
	if _, err := e.ts.Acquire(ctx, r.key); err != nil {
		return err
	}
	e.count(+1)
	defer e.count(-1)
	defer e.ts.Release(r.key)
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-e.allRunning:
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range int(e.sc.duration / time.Second) {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
		if _, err := b.Log.Write(logChunk); err != nil {
			return err
		}
	}
	return e.ts.RecordJob(reportKey(b.Job.ID), b.Job.ID, blob)
}

// FinalStateSent drops the job's end record once GitLab has its final state, as docker-autoscaler does.
func (e *streamExec) FinalStateSent(b *executors.Build) { e.ts.ForgetJob(reportKey(b.Job.ID)) }

func reportKey(id int64) string { return "report-" + strconv.FormatInt(id, 10) }

func (e *streamExec) count(d int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runningN += d
	if e.runningN == e.sc.jobs {
		close(e.allRunning)
	}
	select {
	case <-e.running:
	default:
	}
	e.running <- e.runningN
}

func (e *streamExec) now() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runningN
}

func (e *streamExec) Features() map[string]bool { return docker.Features() }

func (e *streamExec) Shutdown(ctx context.Context) error { return e.ts.Shutdown(ctx) }

// countingStore counts the state-file writes.
type countingStore struct {
	state.Store
	saves *atomic.Int64
}

func (s *countingStore) Save(snap *state.Snapshot) error {
	s.saves.Add(1)
	return s.Store.Save(snap)
}

// readyGroup is a cloud whose instances run the moment they are asked for, so that the taskscaler's own
// work is all that is measured.
type readyGroup struct {
	mu   sync.Mutex
	next int
	ids  []string
	// listed, when set, is told when a listing starts.
	listed func()
}

func (g *readyGroup) Init(context.Context, logrus.FieldLogger, fleeting.Settings) (fleeting.ProviderInfo, error) {
	return fleeting.ProviderInfo{ID: "bench"}, nil
}

func (g *readyGroup) Update(_ context.Context, fn func(string, fleeting.State)) error {
	if g.listed != nil {
		g.listed()
	}
	g.mu.Lock()
	ids := slices.Clone(g.ids)
	g.mu.Unlock()
	for _, id := range ids {
		fn(id, fleeting.StateRunning)
	}
	return nil
}

func (g *readyGroup) Increase(_ context.Context, n int) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range n {
		g.next++
		g.ids = append(g.ids, fmt.Sprintf("i-%05d", g.next))
	}
	return n, nil
}

func (g *readyGroup) Decrease(_ context.Context, ids []string) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ids = slices.DeleteFunc(g.ids, func(id string) bool { return slices.Contains(ids, id) })
	return ids, nil
}

func (g *readyGroup) ConnectInfo(_ context.Context, id string) (fleeting.ConnectInfo, error) {
	return fleeting.ConnectInfo{ID: id}, nil
}

func (g *readyGroup) Heartbeat(context.Context, string) error { return nil }

func (g *readyGroup) Shutdown(context.Context) error { return nil }

// memStore keeps the snapshot in memory and reports when each save starts.
type memStore struct {
	snap  *state.Snapshot
	saved func()
}

func (s *memStore) Load() (*state.Snapshot, error) { return s.snap, nil }

func (s *memStore) Save(*state.Snapshot) error {
	s.saved()
	return nil
}

// reconcilePass times the taskscaler's steady-state pass over n ready instances: from the start of the
// group listing to the state write the pass asks for at its end. It returns the median of 20 passes.
func reconcilePass(t *testing.T, n int) time.Duration {
	g := &readyGroup{}
	snap := &state.Snapshot{Version: state.Version}
	now := time.Now()
	for range n {
		g.next++
		id := fmt.Sprintf("i-%05d", g.next)
		g.ids = append(g.ids, id)
		snap.Instances = append(snap.Instances, state.Instance{ID: id, State: "ready", CreatedAt: now, ReadyAt: now, IdleSince: now})
	}
	var (
		mu      sync.Mutex
		started time.Time
		passes  []time.Duration
		enough  = make(chan struct{})
	)
	const samples = 20
	g.listed = func() {
		mu.Lock()
		started = time.Now()
		mu.Unlock()
	}
	store := &memStore{snap: snap, saved: func() {
		mu.Lock()
		defer mu.Unlock()
		if started.IsZero() {
			return
		}
		passes = append(passes, time.Since(started))
		started = time.Time{}
		if len(passes) == samples+1 {
			close(enough)
		}
	}}
	ts, err := taskscaler.New(g, taskscaler.Options{
		CapacityPerInstance: 4, MaxInstances: n,
		// Every instance is wanted idle, so that the passes only look at them.
		Policies:       []taskscaler.Policy{{Periods: []string{"* * * * *"}, Location: time.UTC, IdleCount: 4 * n, IdleTime: time.Hour}},
		UpdateInterval: 20 * time.Millisecond, UpdateIntervalWhenExpecting: 20 * time.Millisecond,
		DeletionRetryInterval: time.Minute, FailureThreshold: 3,
		InstanceAcquireTimeout: time.Minute, CreationTimeout: time.Minute,
		CreateBackoff: time.Second, MaxCreateBackoff: time.Minute,
		ScaleThrottleLimit: taskscaler.ScaleThrottleUnlimited, ShutdownDeletionInterval: time.Second,
		ShutdownDeletionRetries: 1, State: store,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.Start(t.Context())
	select {
	case <-enough:
	case <-time.After(time.Minute):
		t.Fatal("the taskscaler did not reconcile 20 times in a minute")
	}
	if err := ts.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The first pass adopts the instances from the saved state; the steady state comes after it.
	steady := slices.Clone(passes[1 : samples+1])
	slices.Sort(steady)
	return steady[samples/2]
}
