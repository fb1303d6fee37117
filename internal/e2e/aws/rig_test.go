package e2eaws_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/builtin"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig/awsrig"
)

// TestMain keeps this machine's environment from redirecting the SDK: every test points the plugin at
// its own awssim through the endpoint_url of the shared config file it writes (plugin_config
// config_file), and an AWS_ENDPOINT_URL* variable would win over that. Doing it once here, rather than
// with t.Setenv, lets the tests run in parallel.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_ENDPOINT_URL") || k == "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" {
			_ = os.Unsetenv(k)
		}
	}
	// No instance metadata service on loopback: never wait for one.
	_ = os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Exit(m.Run())
}

// awsWorld is the shared awssim rig with this package's own watches.
type awsWorld struct{ *awsrig.World }

// watchedSim is awssim's set-up for tests that count logins: a terminated instance's directory, with
// its sshd log, stays a second, long enough for the login watch to read it.
var watchedSim = awssim.Options{TerminateDelay: time.Second}

// newAWSWorld starts awssim with opts and creates the group.
func newAWSWorld(t testing.TB, spec awssim.GroupSpec, opts awssim.Options) *awsWorld {
	return &awsWorld{awsrig.NewWorld(t, spec, opts)}
}

// failedLaunches counts the group's launches that EC2 refused for lack of capacity.
func (w *awsWorld) failedLaunches() int {
	n := 0
	for _, a := range w.Sim.Activities(w.Spec.Name) {
		if a.Status == "Failed" && strings.Contains(a.StatusMessage, "do not have sufficient") {
			n++
		}
	}
	return n
}

// acceptedLogin matches sshd's line for a successful login, one per SSH connection.
var acceptedLogin = regexp.MustCompile(`(?m)^Accepted publickey for `)

// loginWatch counts, per instance, the SSH connections its sshd accepted, by reading the sshd logs
// awssim keeps in each instance's directory until the instance is terminated.
type loginWatch struct {
	dir  string
	mu   sync.Mutex
	seen map[string]int
	stop chan struct{}
	done chan struct{}
}

func (w *awsWorld) watchLogins(t testing.TB) *loginWatch {
	lw := &loginWatch{dir: filepath.Join(w.SimDir, "instances"), seen: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(lw.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			lw.scan()
			select {
			case <-lw.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(lw.end)
	return lw
}

func (lw *loginWatch) scan() {
	logs, _ := filepath.Glob(filepath.Join(lw.dir, "*", "sshd.log"))
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		id := filepath.Base(filepath.Dir(path))
		n := len(acceptedLogin.FindAll(b, -1))
		lw.mu.Lock()
		lw.seen[id] = max(lw.seen[id], n)
		lw.mu.Unlock()
	}
}

func (lw *loginWatch) end() {
	select {
	case <-lw.stop:
	default:
		close(lw.stop)
	}
	<-lw.done
}

// logins returns the connections accepted so far, per instance.
func (lw *loginWatch) logins() map[string]int {
	lw.scan()
	lw.mu.Lock()
	defer lw.mu.Unlock()
	out := make(map[string]int, len(lw.seen))
	for id, n := range lw.seen {
		out[id] = n
	}
	return out
}

// checkKeyPushes: every SendSSHPublicKey names an instance of the group and the configured user, and
// no instance got more accepted pushes than SSH connections were opened to it (pushes are made per
// pooled connection, not per job). With oneEach, which holds when no connection was lost, every
// instance that got a key got exactly one.
func checkKeyPushes(t *testing.T, w *awsWorld, lw *loginWatch, oneEach bool) {
	t.Helper()
	accepted := map[string]int{}
	for _, p := range w.Sim.KeyPushes() {
		if p.Group != w.Spec.Name {
			t.Errorf("SendSSHPublicKey for instance %s of group %q; want only instances of %s", p.InstanceID, p.Group, w.Spec.Name)
		}
		if p.User != "root" {
			t.Errorf("SendSSHPublicKey for user %q on %s; connector_config username is root", p.User, p.InstanceID)
		}
		if p.Err == "" {
			accepted[p.InstanceID]++
		} else {
			t.Logf("SendSSHPublicKey for %s answered %s", p.InstanceID, p.Err)
		}
	}
	if len(accepted) == 0 {
		t.Errorf("no SSH key was pushed with SendSSHPublicKey")
	}
	logins := lw.logins()
	for id, n := range accepted {
		// The key is pushed when the instance is running, before its sshd answers (as on EC2), so an
		// instance removed while it boots had one push and no connection.
		if n > max(logins[id], 1) {
			t.Errorf("instance %s: %d keys pushed for %d SSH connections; want at most one push per pooled connection", id, n, logins[id])
		}
		if oneEach && n != 1 {
			t.Errorf("instance %s: %d keys pushed; without lost connections the pooled connection needs exactly one", id, n)
		}
	}
	t.Logf("SendSSHPublicKey accepted per instance: %v; SSH connections per instance: %v", accepted, logins)
}

// jobRig is gitlabsim with one runner, the local Docker Engine with the busybox job image and the
// helper image, and a log of everything the manager said (shown when the test fails).
type jobRig struct {
	gl    *gitlabsim.Server
	token string
	cli   *client.Client
	image string
	dir   string
	log   *testLog
}

func newJobRig(t *testing.T) *jobRig {
	t.Helper()
	testenv.RequireSSHD(t)
	cli, image := testrig.Engine(t)
	gl, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gl.Close() })
	_, token := gl.CreateRunner(gitlabsim.RunnerOptions{Description: "aws e2e " + t.Name()})
	r := &jobRig{gl: gl, token: token, cli: cli, image: image, dir: t.TempDir(), log: newTestLog(t)}
	t.Cleanup(func() { r.removeLeftovers(t) })
	return r
}

// removeLeftovers removes what jobs left on the engine: a job whose instance was terminated cannot
// clean up through the dead connection, as a vanished EC2 instance takes its containers with it.
func (r *jobRig) removeLeftovers(t *testing.T) {
	testrig.RemoveJobLeftovers(t, r.cli, r.token, false)
}

// fleet is the [runners.autoscaler] part of a test's config.toml.
type fleet struct {
	capacity, maxInstances, idleCount int
	idleTime                          time.Duration
	// interruptionCheck is interruption_check_interval; zero leaves the key out.
	interruptionCheck time.Duration
	// metadataEndpoint is plugin_config metadata_endpoint; empty leaves the key out (and
	// AWS_EC2_METADATA_DISABLED keeps the plugin from reading instance metadata).
	metadataEndpoint string
	// rolloutMaxDraining is rollout_max_draining as written in TOML; empty leaves the key out.
	rolloutMaxDraining string
	// stateStorage are more [runners.autoscaler.state_storage] keys, as written in TOML.
	stateStorage string
}

// writeConfig writes the config.toml an operator would write for docker-autoscaler on this group:
// upstream key names throughout, job containers on the host network to reach gitlabsim on loopback.
func (r *jobRig) writeConfig(t *testing.T, w *awsWorld, f fleet) string {
	t.Helper()
	text := fmt.Sprintf(`concurrent = %[1]d
check_interval = 1
shutdown_timeout = 30

[[runners]]
  name = "aws-e2e"
  url = %[2]q
  token = %[3]q
  executor = "docker-autoscaler"
  request_concurrency = 2
  [runners.docker]
    image = %[4]q
    pull_policy = ["if-not-present"]
    network_mode = "host"
    host = %[5]q
  [runners.autoscaler]
    plugin = "aws"
    capacity_per_instance = %[6]d
    max_instances = %[7]d
    update_interval = "1s"
    update_interval_when_expecting = "200ms"
    deletion_retry_interval = "1s"
    %[13]s
    [runners.autoscaler.plugin_config]
    %[8]s
    [runners.autoscaler.connector_config]
      username = "root"
      protocol_port = %[9]d
      keepalive = "1s"
      timeout = "10s"
    [runners.autoscaler.state_storage]
      dir = %[10]q
      %[14]s
    [[runners.autoscaler.policy]]
      idle_count = %[11]d
      idle_time = %[12]q
      preemptive_mode = false
`, f.capacity*f.maxInstances, r.gl.URL(), r.token, r.image, "unix://"+testenv.DockerSocket(),
		f.capacity, f.maxInstances, pluginConfig(w, f), w.Sim.SSHPort(), filepath.Join(r.dir, "state"),
		f.idleCount, f.idleTime.String(), interruptionKey(f.interruptionCheck)+rolloutKey(f.rolloutMaxDraining), f.stateStorage)
	path := filepath.Join(r.dir, "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pluginConfig(w *awsWorld, f fleet) string {
	if f.metadataEndpoint == "" {
		return w.PluginConfigTOML()
	}
	return fmt.Sprintf("%s\n    metadata_endpoint = %q", w.PluginConfigTOML(), f.metadataEndpoint)
}

func interruptionKey(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf("interruption_check_interval = %q", d.String())
}

func rolloutKey(pace string) string {
	if pace == "" {
		return ""
	}
	return "\n    rollout_max_draining = " + pace
}

// startManager does what `fleetrunner run -c path` does, in-process: the real manager on the config
// file with the docker-autoscaler executor. It returns the provider the manager made and a stop
// function (a graceful stop, waited for) that also runs at cleanup.
func (r *jobRig) startManager(t *testing.T, path string) (*dockerautoscaler.Provider, func()) {
	t.Helper()
	p, stop := testrig.StartManager(t, r.log.logger, path, "s_aws_e2e", dockerautoscaler.Name, dockerautoscaler.New(builtin.Plugins()))
	return p.(*dockerautoscaler.Provider), stop
}

// testLog collects the manager's log and shows its tail when the test fails (or all of it with -v).
type testLog struct {
	logger *logrus.Logger
	mu     sync.Mutex
	buf    bytes.Buffer
}

const logTail = 64 << 10

func newTestLog(t *testing.T) *testLog {
	l := &testLog{logger: logrus.New()}
	l.logger.SetOutput(l)
	l.logger.SetLevel(logrus.DebugLevel)
	t.Cleanup(func() {
		if !t.Failed() && !testing.Verbose() {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		b := l.buf.Bytes()
		if len(b) > logTail && !testing.Verbose() {
			b = b[len(b)-logTail:]
		}
		t.Logf("manager log:\n%s", b)
	})
	return l
}

// contains reports whether the log so far holds s.
func (l *testLog) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.buf.Bytes(), []byte(s))
}

// text is everything logged so far.
func (l *testLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// connectedRE matches the job log line naming the instance a job ran on.
var connectedRE = regexp.MustCompile(`Instance (i-[0-9a-f]+) connected`)

// ranOn returns the instances a job's log says it connected to.
func ranOn(trace []byte) []string {
	var ids []string
	for _, m := range connectedRE.FindAllSubmatch(trace, -1) {
		ids = append(ids, string(m[1]))
	}
	return ids
}
