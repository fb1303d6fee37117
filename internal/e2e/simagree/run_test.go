package simagree

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// TestSimulatorAgreesWithFleetrunnerRun replays the trace through the real `fleetrunner run` (manager,
// docker-autoscaler executor, local plugin, Docker jobs) against gitlabsim and compares it with the
// simulator as TestSimulatorAgreesWithRealFleet does. A job's wait runs from its enqueueing in GitLab
// to its script's first command, which calls back to the test, less the run's smallest wait: the
// simulator starts a job the moment it has a slot, while every real job also waits for the manager's
// next poll (check_interval 1 s, the smallest upstream allows) and for its container to start, and a
// job that found a free slot at once waited for nothing else.
//
// The simulator is given the boot this run's instances showed: the median time from "instance
// creating" to "instance ready" in fleetrunner's log. A real instance is ready once the connector's
// retries (which back off while sshd refuses) got in, Docker answered and the engine was swept for
// leftovers, which on busy cores takes seconds longer than the local plugin's nominal boot, and how
// much longer depends on what else the machine runs. Comparing against the nominal boot would test
// the machine's load, not the taskscaler.
//
// Tolerance: peak within ±1 instance; p95 wait within 3 s + 25% of the simulated one + the spread of
// the run's boots (slowest less median). A job's wait also holds the manager's next poll and its
// container's start, which vary from job to job on busy cores; a job waiting for the slowest boot
// waits longer than the median boot the simulator used. A job's container also holds its instance a
// little past its sleep, which can keep one more instance at the peak, hence ±1.
func TestSimulatorAgreesWithFleetrunnerRun(t *testing.T) {
	testenv.RequireSSHD(t)
	cli, image := testrig.Engine(t)
	bin := testrig.BuildFleetrunner(t)
	gl, token := testrig.Sim(t, "simagree")
	t.Cleanup(func() { testrig.RemoveJobLeftovers(t, cli, token, false) })

	started := &startLog{at: map[int]time.Time{}}
	callback := startCallbacks(t, started)

	dir := t.TempDir()
	pluginDir := filepath.Join(dir, "local-plugin")
	configPath := filepath.Join(dir, "config.toml")
	writeRunConfig(t, configPath, gl.URL(), token, image, pluginDir)
	run := testrig.StartFleetrunner(t, bin, configPath, syscall.SIGQUIT, 30*time.Second)

	peak, stopCount := make(chan int), make(chan struct{})
	go func() { peak <- countInstanceDirs(filepath.Join(pluginDir, "instances"), stopCount) }()

	start := time.Now()
	enqueued := make([]time.Time, len(trace))
	ids := make([]int64, len(trace))
	for i, j := range trace {
		time.Sleep(time.Until(start.Add(j.Arrival)))
		enqueued[i] = time.Now()
		ids[i] = gl.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprint("trace-", i), Image: image, Script: []string{
			fmt.Sprintf("wget -q -O /dev/null http://%s/start/%d", callback, i),
			fmt.Sprintf("sleep %g", j.Duration.Seconds()),
		}})
	}
	for i, id := range ids {
		if snap := testrig.Finished(t, gl, id, 3*time.Minute); snap.Status != gitlabsim.StatusSuccess {
			t.Fatalf("job %d: %s\n%s", i, snap.Status, snap.Trace)
		}
	}
	close(stopCount)
	run.Check(t)

	waits := make([]time.Duration, len(trace))
	for i := range trace {
		at, ok := started.get(i)
		if !ok {
			t.Fatalf("job %d succeeded without calling back", i)
		}
		waits[i] = at.Sub(enqueued[i])
	}
	slices.Sort(waits)
	overhead := waits[0]
	if overhead >= bootDelay {
		t.Fatalf("every job waited at least %s, longer than a boot: none found a free slot, so the run's overhead cannot be told from its waits %v", overhead, waits)
	}
	for i := range waits {
		waits[i] -= overhead
	}
	boots := readyTimes(t, run.LogPath)
	medianBoot, slowestBoot := boots[len(boots)/2], boots[len(boots)-1]
	simulated := simulate(t, medianBoot)
	t.Logf("instances were ready after %v (nominal boot %s)", boots, bootDelay+sshdDelay)
	actual := figures{peak: <-peak, p95: waits[int(math.Ceil(0.95*float64(len(waits))))-1]}
	t.Logf("simulated: peak %d instances, p95 wait %s; fleetrunner run: peak %d instances, p95 wait %s beyond the overhead of %s every job paid (waits %v)",
		simulated.peak, simulated.p95, actual.peak, actual.p95, overhead, waits)
	if d := actual.peak - simulated.peak; d < -1 || d > 1 {
		t.Errorf("peak instances: fleetrunner run %d, simulated %d; want within ±1", actual.peak, simulated.peak)
	}
	tol := 3*time.Second + simulated.p95/4 + (slowestBoot - medianBoot)
	if d := actual.p95 - simulated.p95; d < -tol || d > tol {
		t.Errorf("p95 wait: fleetrunner run %s, simulated %s; want within ±%s", actual.p95, simulated.p95, tol)
	}
}

// readyTimes are the instances' times from "instance creating" to "instance ready" that the taskscaler
// logged, sorted.
func readyTimes(t *testing.T, logPath string) []time.Duration {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var boots []time.Duration
	for _, m := range instanceReady.FindAllSubmatch(b, -1) {
		d, err := time.ParseDuration(string(m[1]))
		if err != nil {
			t.Fatalf("fleetrunner's log: instance ready after %q: %v", m[1], err)
		}
		boots = append(boots, d)
	}
	if len(boots) == 0 {
		t.Fatal("fleetrunner's log says no instance became ready")
	}
	slices.Sort(boots)
	return boots
}

var instanceReady = regexp.MustCompile(`msg="instance ready" after=(\S+)`)

// startLog is when each job's script called back.
type startLog struct {
	mu sync.Mutex
	at map[int]time.Time
}

func (s *startLog) get(i int) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.at[i]
	return at, ok
}

// startCallbacks serves GET /start/N on loopback, noting when job N's script began, and returns its
// address (the jobs use host networking).
func startCallbacks(t *testing.T, log *startLog) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/start/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		log.mu.Lock()
		if _, seen := log.at[i]; !seen {
			log.at[i] = time.Now()
		}
		log.mu.Unlock()
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// writeRunConfig is the trace's fleet as an operator writes it: the taskscaler options of options()
// in upstream's keys, on a local group booting as the in-process comparison's does.
func writeRunConfig(t *testing.T, path, url, token, image, pluginDir string) {
	o := options()
	text := fmt.Sprintf(`concurrent = 20
check_interval = 1
log_level = "debug"

[[runners]]
  name = "simagree"
  url = %q
  token = %q
  executor = "docker-autoscaler"
  request_concurrency = 4
  [runners.docker]
    image = %q
    pull_policy = "if-not-present"
    network_mode = "host"
  [runners.autoscaler]
    plugin = "local"
    capacity_per_instance = %d
    max_instances = %d
    update_interval = %q
    update_interval_when_expecting = %q
    delete_instances_on_shutdown = true
    shutdown_deletion_interval = "1s"
    [runners.autoscaler.plugin_config]
      name = "simagree"
      max_size = %d
      boot_delay = %q
      sshd_delay = %q
      docker_delay = "0s"
      boot_jitter = 0
      base_address = "127.%d.%d.1"
      state_dir = %q
      docker_socket = %q
    [[runners.autoscaler.policy]]
      periods = ["* * * * *"]
      idle_count = 0
      idle_time = %q
`, url, token, image, o.CapacityPerInstance, o.MaxInstances, o.UpdateInterval, o.UpdateIntervalWhenExpecting,
		o.MaxInstances, bootDelay, sshdDelay, 100+rand.IntN(50), rand.IntN(256), pluginDir, testenv.DockerSocket(),
		o.Policies[0].IdleTime)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// countInstanceDirs counts the local plugin's instance records every 50 ms until stop and returns the
// most seen at once.
func countInstanceDirs(dir string, stop <-chan struct{}) int {
	peak := 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		records, _ := filepath.Glob(filepath.Join(dir, "*", "instance.json"))
		peak = max(peak, len(records))
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
	}
}
