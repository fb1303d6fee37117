package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// The fleet of each runner: max_instances of capacity_per_instance slots.
const (
	maxInstances = 3
	capacity     = 2
	awsGroup     = "fleetrunner-soak"
	awsProfile   = "soak"
)

// boot is a realistic but short boot for both fleets: running, then sshd, then Docker, each ±30%.
var boot = local.BootModel{Running: 400 * time.Millisecond, SSHD: 300 * time.Millisecond, Docker: 300 * time.Millisecond, Jitter: 0.3}

// World is everything the soaked binary talks to: gitlabsim behind a TCP proxy (for the outage),
// awssim with one Auto Scaling group, the local plugin's state directory, the Docker Engine, and the
// config.toml with one [[runners]] entry per plugin.
type World struct {
	t      testing.TB
	GitLab *gitlabsim.Server
	Proxy  *testrig.TCPProxy
	AWS    *awssim.Server
	Docker *client.Client
	Image  string
	// Tokens are the runner tokens: the local plugin's runner first, then the aws one.
	Tokens [2]string
	// ConfigDir holds config.toml and, below .taskscaler, the state files.
	ConfigDir string
	// LocalStateDir is the local plugin's state_dir: its instance records outlive the manager.
	LocalStateDir string
	// Listen is the manager's listen_address (metrics, pprof, health).
	Listen string
	// LogPath is the manager's log, every process appended to it.
	LogPath string

	bin string
	env []string
}

// NewWorld builds the binary and starts the simulators; it skips (or fails in CI) where Docker, sshd or
// root are missing. Everything it starts is stopped at the test's end.
func NewWorld(t testing.TB, seed uint64) *World {
	t.Helper()
	testenv.RequireSSHD(t)
	testenv.RequireRoot(t, "instances hiding their Docker Engine until booted, and awssim's sshd on port 22,")
	w := &World{t: t, ConfigDir: t.TempDir()}
	w.Docker, w.Image = testrig.Engine(t)
	w.bin = testrig.BuildFleetrunner(t)
	w.LocalStateDir = filepath.Join(w.ConfigDir, "local-fleet")
	w.LogPath = filepath.Join(w.ConfigDir, "fleetrunner.log")

	gl, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "gitlabsim", gl)
	w.GitLab = gl
	w.Proxy = testrig.NewTCPProxy(t, strings.TrimPrefix(gl.URL(), "http://"))
	for i, plugin := range []string{"local", "aws"} {
		_, w.Tokens[i] = gl.CreateRunner(gitlabsim.RunnerOptions{Description: "soak " + plugin})
		token := w.Tokens[i]
		t.Cleanup(func() { testrig.RemoveJobLeftovers(t, w.Docker, token, false) })
	}

	aws, err := awssim.New(awssim.Options{Dir: filepath.Join(w.ConfigDir, "awssim"), DockerSocket: testenv.DockerSocket(), Seed: seed})
	if err != nil {
		t.Fatalf("awssim: %v", err)
	}
	closeAtEnd(t, "awssim", aws)
	w.AWS = aws
	b := boot
	if err := aws.CreateGroup(awssim.GroupSpec{Name: awsGroup, MaxSize: maxInstances, Boot: &b, ProtectFromScaleIn: true, SuspendAZRebalance: true}); err != nil {
		t.Fatal(err)
	}
	// Whatever the runner left of the local fleet would otherwise outlive the test.
	t.Cleanup(func() {
		for _, in := range w.LocalInstances() {
			if s, ok := in.SSHD(); ok {
				_ = s.Kill()
			}
		}
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.Listen = l.Addr().String()
	_ = l.Close()
	w.env = w.childEnv()
	w.writeConfig(rand.New(rand.NewPCG(seed, 0)))
	return w
}

// closeAtEnd closes c when the test ends; a failure to close is an error of the test.
func closeAtEnd(t testing.TB, name string, c io.Closer) {
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("%s close: %v", name, err)
		}
	})
}

// childEnv is this process's environment for the manager, minus what would redirect it: AWS settings
// (the aws plugin must reach awssim through its own shared config file) and LISTEN_ADDRESS.
func (w *World) childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "LISTEN_ADDRESS=") {
			env = append(env, kv)
		}
	}
	// No instance metadata service on loopback: never wait for one.
	return append(env, "AWS_EC2_METADATA_DISABLED=true")
}

// writeConfig writes config.toml: the two runners differ only in their plugin, with the keys an
// operator sets for a fleet that survives restarts and leaves nothing behind on shutdown.
func (w *World) writeConfig(rng *rand.Rand) {
	t := w.t
	awsConfig := filepath.Join(w.ConfigDir, "aws-config")
	awsCredentials := filepath.Join(w.ConfigDir, "aws-credentials")
	if err := errors.Join(
		os.WriteFile(awsConfig, fmt.Appendf(nil, "[profile %s]\nregion = %s\nendpoint_url = %s\n", awsProfile, w.AWS.Region(), w.AWS.URL()), 0o600),
		os.WriteFile(awsCredentials, fmt.Appendf(nil, "[%s]\naws_access_key_id = AKIAFLEETRUNNERSOAK\naws_secret_access_key = soak-secret\n", awsProfile), 0o600),
	); err != nil {
		t.Fatal(err)
	}
	// A loopback /24 of its own, so that a demo or another test's local fleet is not met.
	base := fmt.Sprintf("127.%d.%d.1", 20+rng.IntN(200), 1+rng.IntN(254))
	text := fmt.Sprintf("concurrent = %d\ncheck_interval = 1\nshutdown_timeout = 30\nlisten_address = %q\n", 2*maxInstances*capacity, w.Listen) +
		w.runnerTOML("soak-local", w.Tokens[0], "local", fmt.Sprintf(`
      name = "soak-local"
      max_size = %d
      boot_delay = %q
      sshd_delay = %q
      docker_delay = %q
      boot_jitter = %g
      base_address = %q
      state_dir = %q
      docker_socket = %q`, maxInstances, boot.Running, boot.SSHD, boot.Docker, boot.Jitter, base, w.LocalStateDir, testenv.DockerSocket()), "") +
		w.runnerTOML("soak-aws", w.Tokens[1], "aws", fmt.Sprintf(`
      name = %q
      region = %q
      profile = %q
      config_file = %q
      credentials_file = %q`, awsGroup, w.AWS.Region(), awsProfile, awsConfig, awsCredentials),
			fmt.Sprintf("\n      username = \"root\"\n      protocol_port = %d", w.AWS.SSHPort()))
	if err := os.WriteFile(w.ConfigPath(), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runnerTOML is one [[runners]] entry. Jobs are taken before an instance is ready (preemptive_mode
// false), so some wait for a booting instance when the manager is killed; instances retire after ten
// jobs and idle ones go after a few seconds, so the fleet keeps changing.
func (w *World) runnerTOML(name, token, plugin, pluginConfig, connectorConfig string) string {
	return fmt.Sprintf(`
[[runners]]
  name = %q
  url = %q
  token = %q
  executor = "docker-autoscaler"
  request_concurrency = 2
  [runners.docker]
    image = %q
    pull_policy = ["if-not-present"]
    network_mode = "host"
    host = %q
  [runners.autoscaler]
    plugin = %q
    capacity_per_instance = %d
    max_instances = %d
    max_use_count = 10
    update_interval = "1s"
    update_interval_when_expecting = "200ms"
    deletion_retry_interval = "1s"
    delete_instances_on_shutdown = true
    [runners.autoscaler.plugin_config]%s
    [runners.autoscaler.connector_config]
      keepalive = "1s"
      timeout = "20s"%s
    [runners.autoscaler.state_storage]
      enabled = true
    [[runners.autoscaler.policy]]
      idle_count = 1
      idle_time = "5s"
      preemptive_mode = false
`, name, "http://"+w.Proxy.Addr(), token, w.Image, "unix://"+testenv.DockerSocket(), plugin, capacity, maxInstances,
		pluginConfig, connectorConfig)
}

// ConfigPath is config.toml.
func (w *World) ConfigPath() string { return filepath.Join(w.ConfigDir, "config.toml") }

// Process is one `fleetrunner run` child.
type Process struct {
	cmd *exec.Cmd
	// Started is when it was started.
	Started time.Time
	exited  chan struct{}
	err     error // Wait's error, once exited is closed
}

// Start starts `fleetrunner run` on the config; its output is appended to LogPath after a line naming
// the process. A process still running at the test's end is killed.
func (w *World) Start(n int) *Process {
	t := w.t
	t.Helper()
	logf, err := os.OpenFile(w.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	_, _ = fmt.Fprintf(logf, "===== soak: manager process %d starts at %s\n", n, time.Now().Format(time.RFC3339Nano))
	p := &Process{exited: make(chan struct{})}
	p.cmd = exec.Command(w.bin, "run", "--config", w.ConfigPath(), "--log-level", "debug")
	p.cmd.Env = w.env
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s run: %v", w.bin, err)
	}
	p.Started = time.Now()
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// Exited reports whether the process ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.exited:
		return true, p.err
	default:
		return false, nil
	}
}

// Kill is kill -9; it returns once the process is reaped.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.exited
	return nil
}

// Quit sends SIGQUIT (stop taking jobs, finish the running ones, shut the executors down) and waits up
// to within for the exit, which must be clean.
func (p *Process) Quit(within time.Duration) error {
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		return err
	}
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if ended, err := p.Exited(); ended {
			return err
		}
	}
	return fmt.Errorf("fleetrunner did not exit within %s of SIGQUIT", within)
}

// WaitHealthy waits up to within for the manager's /-/health; it fails the test when the process ended.
func (w *World) WaitHealthy(p *Process, within time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if ended, err := p.Exited(); ended {
			w.t.Fatalf("fleetrunner exited at start: %v", err)
		}
		if _, err := w.get("/-/health"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("fleetrunner's /-/health did not answer within %s", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get fetches path from the manager's listen_address.
func (w *World) get(path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.Listen+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, err
}

// Usage is the manager's goroutines and memory at one moment.
type Usage struct {
	Goroutines int
	// RSS and HeapInuse are process_resident_memory_bytes and go_memstats_heap_inuse_bytes.
	RSS, HeapInuse float64
}

// Usage reads /debug/pprof/goroutine and /metrics.
func (w *World) Usage() (Usage, error) {
	var u Usage
	prof, err := w.get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return u, err
	}
	first, _, _ := strings.Cut(string(prof), "\n")
	total, ok := strings.CutPrefix(first, "goroutine profile: total ")
	if u.Goroutines, err = strconv.Atoi(total); !ok || err != nil {
		return u, fmt.Errorf("goroutine profile starts %q", first)
	}
	metrics, err := w.get("/metrics")
	if err != nil {
		return u, err
	}
	found := 0
	sc := bufio.NewScanner(strings.NewReader(string(metrics)))
	for sc.Scan() {
		name, value, _ := strings.Cut(sc.Text(), " ")
		var into *float64
		switch name {
		case "process_resident_memory_bytes":
			into = &u.RSS
		case "go_memstats_heap_inuse_bytes":
			into = &u.HeapInuse
		default:
			continue
		}
		if *into, err = strconv.ParseFloat(value, 64); err != nil {
			return u, fmt.Errorf("metric %s: %w", name, err)
		}
		found++
	}
	if found != 2 {
		return u, errors.New("/metrics lacks process_resident_memory_bytes or go_memstats_heap_inuse_bytes")
	}
	return u, nil
}

// LocalInstance is one instance record in the local plugin's state_dir.
type LocalInstance struct {
	ID      string `json:"id"`
	Pid     int    `json:"pid"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	dir     string
}

// LocalInstances lists the local plugin's instance records: an instance's record lives from its
// creation until the plugin removed it.
func (w *World) LocalInstances() []LocalInstance {
	dirs, _ := filepath.Glob(filepath.Join(w.LocalStateDir, "instances", "*"))
	var out []LocalInstance
	for _, dir := range dirs {
		in := LocalInstance{dir: dir}
		data, err := os.ReadFile(filepath.Join(dir, "instance.json"))
		if err != nil || json.Unmarshal(data, &in) != nil || in.ID == "" {
			// Being created or removed right now.
			continue
		}
		out = append(out, in)
	}
	return out
}

// SSHD is the instance's sshd when it runs.
func (in LocalInstance) SSHD() (*local.SSHD, bool) {
	if in.Pid == 0 {
		return nil, false
	}
	return local.AdoptSSHD(in.Pid, in.dir, in.Address, in.Port, "")
}

// AWSInstances lists the group's instances that are launching or in service.
func (w *World) AWSInstances() []awssim.InstanceInfo {
	var out []awssim.InstanceInfo
	for _, in := range w.AWS.Instances(awsGroup) {
		if in.LifecycleState == "Pending" || in.LifecycleState == "InService" {
			out = append(out, in)
		}
	}
	return out
}

// LogTail is the end of the manager's log without its debug lines (mostly polls that got no job), at
// most n bytes, for a failure message.
func (w *World) LogTail(n int) string {
	b, err := os.ReadFile(w.LogPath)
	if err != nil {
		return err.Error()
	}
	var kept []string
	size := 0
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i := len(lines) - 1; i >= 0 && size+len(lines[i]) < n; i-- {
		if !strings.Contains(lines[i], "level=debug") {
			kept = append(kept, lines[i])
			size += len(lines[i]) + 1
		}
	}
	slices.Reverse(kept)
	return strings.Join(kept, "\n")
}
