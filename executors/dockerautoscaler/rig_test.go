package dockerautoscaler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/common/trace"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/static"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// testPlugins is the plugin registry the tests hand the executor, as cmd hands it the built-in ones.
var testPlugins = fleeting.Registry{
	"local":  func() fleeting.InstanceGroup { return &local.InstanceGroup{} },
	"static": func() fleeting.InstanceGroup { return &static.InstanceGroup{} },
}

// testLogger sends the provider's log to the test log: as it comes with -v, otherwise its tail once the
// test has failed, so that a failure in CI shows what the provider did.
func testLogger(t testing.TB) *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	if testing.Verbose() {
		l.SetOutput(tWriter{t})
		return l
	}
	buf := &testrig.SyncBuffer{}
	l.SetOutput(buf)
	t.Cleanup(func() {
		if t.Failed() {
			out := buf.String()
			t.Logf("provider log (last %d bytes):\n%s", failedLogTail, out[max(0, len(out)-failedLogTail):])
		}
	})
	return l
}

// failedLogTail is how much of a failed test's provider log is shown.
const failedLogTail = 64 << 10

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testBase picks a loopback /24 of its own per group, so that parallel tests and packages do not collide.
func testBase() string {
	return fmt.Sprintf("127.%d.%d.1", 150+mrand.IntN(50), mrand.IntN(256))
}

// rig is a gitlabsim with one runner, a local Docker Engine with the busybox job image and the helper
// image, and a docker-autoscaler runner config on the local plugin. Job containers use host networking
// to reach the simulator on loopback.
type rig struct {
	sim    *gitlabsim.Server
	gl     *gitlab.Client
	cli    *client.Client
	image  string
	runner *config.RunnerConfig
	dir    string
}

func newRig(t testing.TB) *rig {
	t.Helper()
	testenv.RequireSSHD(t)
	cli, image := testrig.Engine(t)

	sim, gl, token := testrig.SimRunner(t, "docker-autoscaler test", Name, docker.Features())
	dir := t.TempDir()
	r := &rig{sim: sim, gl: gl, cli: cli, image: image, dir: dir, runner: &config.RunnerConfig{
		Name:              "autoscaler-test",
		RunnerCredentials: config.RunnerCredentials{URL: sim.URL(), Token: token},
		Executor:          Name,
		Docker: &config.DockerConfig{
			Image:       image,
			PullPolicy:  config.StringOrSlice{"if-not-present"},
			NetworkMode: "host",
		},
		Autoscaler: &config.AutoscalerConfig{
			Plugin:                      "local",
			CapacityPerInstance:         2,
			MaxInstances:                4,
			UpdateInterval:              time.Second,
			UpdateIntervalWhenExpecting: 200 * time.Millisecond,
			DeletionRetryInterval:       time.Second,
			PluginConfig: config.PluginConfig{
				"max_size": 4,
				// Booting as on EC2, shortened: running before sshd listens, Docker after sshd.
				"boot_delay":    "200ms",
				"sshd_delay":    "400ms",
				"docker_delay":  "300ms",
				"base_address":  testBase(),
				"docker_socket": testenv.DockerSocket(),
			},
			ConnectorConfig: config.ConnectorConfig{Keepalive: time.Second, Timeout: 10 * time.Second},
			StateStorage:    config.StateStorage{Dir: filepath.Join(dir, "state")},
		},
	}}
	t.Cleanup(func() { r.removeLeftovers(t) })
	return r
}

// removeLeftovers removes whatever a job left on the engine: a job whose instance was killed cannot
// clean up through the dead tunnel, just as a vanished cloud instance takes its containers with it.
func (r *rig) removeLeftovers(t testing.TB) {
	testrig.RemoveJobLeftovers(t, r.cli, r.runner.Token, true)
}

// newProvider starts a provider on the rig's config and shuts it down at the end of the test.
func (r *rig) newProvider(t testing.TB) *Provider {
	t.Helper()
	return r.newProviderLogging(t, testLogger(t))
}

// newProviderLogging is newProvider with the provider's log going to log.
func (r *rig) newProviderLogging(t testing.TB, log logrus.FieldLogger) *Provider {
	t.Helper()
	p, err := newProvider(r.runner, executors.Deps{Logger: log, ConfigDir: r.dir, SystemID: "s_test"}, testPlugins, docker.Options{})
	if err != nil {
		t.Fatalf("new provider: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return p
}

func (p *Provider) local(t testing.TB) *local.InstanceGroup {
	t.Helper()
	g, ok := p.group.(*local.InstanceGroup)
	if !ok {
		t.Fatalf("plugin is %T, not local", p.group)
	}
	return g
}

// sectionLog passes the job log through and reports every section that starts and all output.
type sectionLog struct {
	executors.JobLog
	onSection  func(name string)
	onOutput   func(p []byte)
	onReceived func() // called when GitLab handed out the job
}

func (l *sectionLog) Write(p []byte) (int, error) {
	n, err := l.JobLog.Write(p)
	if l.onOutput != nil {
		l.onOutput(p)
	}
	return n, err
}

func (l *sectionLog) SectionStart(name, header string) {
	l.JobLog.SectionStart(name, header)
	if l.onSection != nil {
		l.onSection(name)
	}
}

// onceInOutput is a job log watch that calls fire once, as soon as the output of section holds marker.
func onceInOutput(section, marker string, fire func()) *sectionLog {
	var (
		mu     sync.Mutex
		in     bool
		output strings.Builder
		once   sync.Once
	)
	return &sectionLog{
		onSection: func(name string) {
			mu.Lock()
			in = name == section
			mu.Unlock()
		},
		onOutput: func(b []byte) {
			mu.Lock()
			if in {
				output.Write(b)
			}
			seen := strings.Contains(output.String(), marker)
			mu.Unlock()
			if seen {
				once.Do(fire)
			}
		},
	}
}

// busyInstance is an instance that holds a job, or "".
func busyInstance(p *Provider) string {
	for _, in := range p.Instances() {
		if in.Acquired > 0 {
			return in.ID
		}
	}
	return ""
}

// runOne does what the manager does for one job: reserve, ask GitLab, run with a real trace, report.
// It returns Run's error and the simulator's view of the finished job.
func (r *rig) runOne(t testing.TB, p *Provider, watch *sectionLog) (error, gitlabsim.JobSnapshot) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var res executors.Reservation
	var j *job.Job
	for j == nil {
		var err error
		res, err = p.Reserve(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("reserve: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		got := r.gl.RequestJob(ctx, r.runner.Token, "s_test")
		if got.Err != nil {
			t.Fatalf("request job: %v", got.Err)
		}
		if j = got.Job; j == nil {
			res.Unreserve()
			time.Sleep(50 * time.Millisecond)
		}
	}
	tr := trace.New(r.gl, gitlab.JobCredentials{ID: j.ID, Token: j.Token}, trace.Options{
		MaskPhrases: j.Variables.MaskedValues(), UpdateInterval: 200 * time.Millisecond,
		ForceSendInterval: time.Second, Logger: logging.Discard(),
	})
	tr.Start()
	if watch == nil {
		watch = &sectionLog{}
	}
	if watch.onReceived != nil {
		watch.onReceived()
	}
	watch.JobLog = tr
	jobCtx, canceling, stop := executors.NewJobContext(ctx, time.Duration(j.TimeoutSeconds())*time.Second, tr.Canceling(), nil)
	defer stop()
	runErr := p.Run(jobCtx, res, &executors.Build{Job: j, Runner: r.runner, Log: watch,
		Logger: testLogger(t), Canceling: canceling, SystemID: "s_test"})
	if err := testrig.FinishJob(ctx, tr, j, runErr); err != nil {
		snap, _ := r.sim.Job(j.ID)
		t.Fatalf("finish job %d (run error %v): %v; simulator: %s %s; trace:\n%s", j.ID, runErr, err, snap.Status, snap.FailureReason, snap.Trace)
	}
	snap, err := r.sim.WaitFinished(ctx, j.ID)
	if err != nil {
		t.Fatalf("job %d never finished: %v", j.ID, err)
	}
	return runErr, snap
}

// connectedRE matches the job log line naming the instance a job ran on.
var connectedRE = regexp.MustCompile(`Instance (\S+) connected`)

// connectedTo returns the instances a job's log says it connected to, in order.
func connectedTo(trace []byte) []string {
	var ids []string
	for _, m := range connectedRE.FindAllSubmatch(trace, -1) {
		ids = append(ids, string(m[1]))
	}
	return ids
}

func randomToken() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return "glrt-" + hex.EncodeToString(b)
}

// dumpFile logs a file when the test failed, for logs of child processes.
func dumpFile(t *testing.T, path string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if b, err := os.ReadFile(path); err == nil {
			t.Logf("%s:\n%s", path, b)
		}
	})
}
