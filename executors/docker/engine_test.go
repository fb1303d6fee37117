package docker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// recLog is a JobLog that keeps everything, masks like the trace does and times sections.
type recLog struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	masked   []string
	sections []section
	notify   chan struct{}
}

type section struct {
	name       string
	start, end time.Time
}

func newRecLog(masked []string) *recLog {
	return &recLog{masked: masked, notify: make(chan struct{}, 1)}
}

func (l *recLog) Write(p []byte) (int, error) {
	s := string(p)
	for _, m := range l.masked {
		s = strings.ReplaceAll(s, m, "[MASKED]")
	}
	l.mu.Lock()
	l.buf.WriteString(s)
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (l *recLog) line(f string, a ...any) { _, _ = l.Write([]byte(fmt.Sprintf(f, a...) + "\n")) }

func (l *recLog) SectionStart(name, header string) {
	l.mu.Lock()
	l.sections = append(l.sections, section{name: name, start: time.Now()})
	l.mu.Unlock()
	l.line("section_start:%s %s", name, header)
}

func (l *recLog) SectionEnd(name string) {
	l.mu.Lock()
	for i := len(l.sections) - 1; i >= 0; i-- {
		if l.sections[i].name == name && l.sections[i].end.IsZero() {
			l.sections[i].end = time.Now()
			break
		}
	}
	l.mu.Unlock()
	l.line("section_end:%s", name)
}

func (l *recLog) Infof(f string, a ...any)  { l.line(f, a...) }
func (l *recLog) Warnf(f string, a ...any)  { l.line("WARNING: "+f, a...) }
func (l *recLog) Errorf(f string, a ...any) { l.line("ERROR: "+f, a...) }

func (l *recLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *recLog) sectionNames() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.sections {
		out = append(out, s.name)
	}
	return out
}

// waitFor blocks until the log contains s.
func (l *recLog) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(l.String(), s) {
		select {
		case <-l.notify:
		case <-deadline:
			t.Fatalf("log never showed %q:\n%s", s, l.String())
		}
	}
}

// rig is one test's engine client, image and runner (its own token, so leftovers are per test).
type rig struct {
	cli    *client.Client
	image  string
	runner *config.RunnerConfig
}

func newRig(t testing.TB) *rig {
	t.Helper()
	cli, image := testrig.Engine(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	rg := &rig{cli: cli, image: image, runner: &config.RunnerConfig{
		Name:              "test",
		RunnerCredentials: config.RunnerCredentials{URL: "http://127.0.0.1:1", Token: "glrt-" + hex.EncodeToString(b)},
		Executor:          "docker",
		Docker:            &config.DockerConfig{PullPolicy: config.StringOrSlice{"if-not-present"}},
	}}
	t.Cleanup(func() { rg.assertNoLeftovers(t) })
	return rg
}

// assertNoLeftovers lists containers, networks and volumes carrying this runner's label.
func (rg *rig) assertNoLeftovers(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	short := config.ShortToken(rg.runner.Token)
	cs, ns, vs := testrig.JobResources(t, rg.cli, filters.NewArgs(filters.Arg("label", docker.LabelRunner+"="+short), filters.Arg("label", docker.LabelBuild)))
	if len(cs)+len(ns)+len(vs) > 0 {
		t.Errorf("job left %d containers, %d networks, %d volumes on the engine", len(cs), len(ns), len(vs))
	}
	// Cache volumes outlive jobs on purpose; a test's runner is gone with the test.
	caches, err := rg.cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", docker.LabelRunner+"="+short))})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range caches.Volumes {
		_ = rg.cli.VolumeRemove(ctx, v.Name, true)
	}
}

var nextJobID struct {
	sync.Mutex
	n int64
}

// newJob is a job with GIT_STRATEGY=none (no helper needed) running script in the busybox image.
func (rg *rig) newJob(script ...string) *job.Job {
	nextJobID.Lock()
	nextJobID.n++
	id := nextJobID.n
	nextJobID.Unlock()
	return &job.Job{
		ID:         id,
		Token:      "glcbt-test-token",
		JobInfo:    job.JobInfo{ID: id, Name: "test", ProjectID: 7, ProjectFullPath: "group/project"},
		RunnerInfo: job.RunnerInfo{Timeout: 60},
		Image:      job.Image{Name: rg.image},
		Variables:  job.Variables{{Key: "GIT_STRATEGY", Value: "none", Public: true}},
		Steps:      []job.Step{{Name: job.StepScript, Script: script, When: job.WhenOnSuccess}},
	}
}

func afterScript(j *job.Job, script ...string) {
	j.Steps = append(j.Steps, job.Step{Name: job.StepAfterScript, Script: script, When: job.WhenAlways})
}

// start runs j in the background under the contexts the manager gives a job (its timeout; closing
// canceling asks for a graceful cancel) and returns its log and a channel with Run's result.
func (rg *rig) start(ctx context.Context, j *job.Job, canceling <-chan struct{}) (*recLog, <-chan error) {
	l := newRecLog(j.Variables.MaskedValues())
	jobCtx, cancelCtx, stop := executors.NewJobContext(ctx, time.Duration(j.TimeoutSeconds())*time.Second, canceling, nil)
	b := &executors.Build{Job: j, Runner: rg.runner, Log: l, Logger: logrus.New(), Canceling: cancelCtx, SystemID: "s_test"}
	done := make(chan error, 1)
	go func() {
		defer stop()
		done <- docker.RunJob(jobCtx, rg.cli, b, docker.Options{EngineName: "local"})
	}()
	return l, done
}

func (rg *rig) run(t testing.TB, j *job.Job) (*recLog, error) {
	t.Helper()
	l, done := rg.start(t.Context(), j, nil)
	return l, <-done
}

func wantReason(t *testing.T, err error, reason job.FailureReason, exit int) {
	t.Helper()
	var be *job.BuildError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v (%T), want a BuildError with %s", err, err, reason)
	}
	if be.Reason != reason || be.ExitCode != exit {
		t.Fatalf("reason %s exit %d (%v), want %s exit %d", be.Reason, be.ExitCode, err, reason, exit)
	}
}

func TestScriptSuccessWithVariables(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	rg.runner.PreBuildScript = "echo pre-build"
	rg.runner.PostBuildScript = "echo post-build"
	rg.runner.Environment = []string{"FROM_RUNNER=yes"}
	j := rg.newJob(
		`echo "dir=$CI_PROJECT_DIR builds=$CI_BUILDS_DIR ci=$CI gitlab=$GITLAB_CI server=$CI_SERVER runner=$FROM_RUNNER"`,
		`pwd`,
		`echo "secret is $API_SECRET"`,
		`cat "$KEYFILE"; echo; echo "keyfile at $KEYFILE"`,
	)
	j.Variables = append(j.Variables,
		job.Variable{Key: "API_SECRET", Value: "s3cr3tValue_123", Masked: true},
		job.Variable{Key: "KEYFILE", Value: "-----BEGIN KEY-----\nabc", File: true},
	)
	j.Image.Entrypoint = []string{"sh", "-c", `echo from-entrypoint; exec "$@"`, "--"}
	afterScript(j, `echo "after status=$CI_JOB_STATUS"`)
	l, err := rg.run(t, j)
	if err != nil {
		t.Fatalf("job failed: %v\n%s", err, l)
	}
	out := l.String()
	for _, want := range []string{
		"from-entrypoint\n",
		"dir=/builds/group/project builds=/builds ci=true gitlab=true server=yes runner=yes",
		"\n/builds/group/project\n",
		"secret is [MASKED]",
		"-----BEGIN KEY-----\nabc\nkeyfile at /builds/group/project.tmp/KEYFILE",
		"pre-build\n", "post-build\n",
		"after status=success",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cr3tValue_123") {
		t.Errorf("masked value leaked:\n%s", out)
	}
	want := []string{"prepare_executor", "prepare_script", "get_sources", "step_script", "after_script", "cleanup_file_variables"}
	if got := l.sectionNames(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("sections %v, want %v", got, want)
	}
}

func TestScriptFailureExitCode(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	j := rg.newJob("echo before-failure", "exit 3", "echo never-printed")
	afterScript(j, `echo "after status=$CI_JOB_STATUS"`)
	l, err := rg.run(t, j)
	wantReason(t, err, job.ScriptFailure, 3)
	out := l.String()
	if !strings.Contains(out, "before-failure") || strings.Contains(out, "never-printed\n") || !strings.Contains(out, "after status=failed") {
		t.Fatalf("unexpected log:\n%s", out)
	}
}

func TestGracefulCancelRunsAfterScript(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	j := rg.newJob("echo script-started", "sleep 60", "echo never-printed")
	afterScript(j, `echo "after status=$CI_JOB_STATUS"`)
	canceling := make(chan struct{})
	l, done := rg.start(t.Context(), j, canceling)
	l.waitFor(t, "script-started\n")
	close(canceling)
	err := <-done
	wantReason(t, err, job.JobCanceled, 0)
	if out := l.String(); !strings.Contains(out, "after status=canceled") {
		t.Fatalf("after_script did not run after cancel:\n%s", out)
	}
}

func TestAbortKillsAtOnce(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	j := rg.newJob("echo script-started", "sleep 60")
	afterScript(j, "echo after-ran")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	l, done := rg.start(ctx, j, nil)
	l.waitFor(t, "script-started\n")
	cancel()
	err := <-done
	var be *job.BuildError
	if err == nil || errors.As(err, &be) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want an abort wrapping context.Canceled", err)
	}
	if strings.Contains(l.String(), "after-ran") {
		t.Fatalf("after_script ran after an abort:\n%s", l)
	}
}

func TestJobTimeout(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	j := rg.newJob("echo script-started", "sleep 60")
	j.RunnerInfo.Timeout = 3
	l, err := rg.run(t, j)
	wantReason(t, err, job.JobExecutionTimeout, 0)
	if !strings.Contains(l.String(), "script-started") {
		t.Fatalf("script never started:\n%s", l)
	}
}

func TestRunnerScriptTimeoutKeepsAfterScript(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	j := rg.newJob("sleep 60")
	j.Variables = append(j.Variables, job.Variable{Key: "RUNNER_SCRIPT_TIMEOUT", Value: "2s"})
	afterScript(j, `echo "after status=$CI_JOB_STATUS"`)
	l, err := rg.run(t, j)
	wantReason(t, err, job.JobExecutionTimeout, 0)
	if !strings.Contains(l.String(), "after status=failed") {
		t.Fatalf("after_script missing after RUNNER_SCRIPT_TIMEOUT:\n%s", l)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		setup  func(rg *rig, j *job.Job)
		reason job.FailureReason
		line   string
	}{
		{name: "missing image, if-not-present", reason: job.ImagePullFailure, line: `failed to pull image "fleetrunner-test/missing:1"`,
			setup: func(rg *rig, j *job.Job) { j.Image.Name = "fleetrunner-test/missing:1" }},
		{name: "missing image, never", reason: job.ImagePullFailure, line: "pull_policy is never",
			setup: func(rg *rig, j *job.Job) {
				j.Image = job.Image{Name: "fleetrunner-test/missing:1", PullPolicy: []string{"never"}}
				rg.runner.Docker.AllowedPullPolicies = []string{"never"}
			}},
		{name: "disallowed image", reason: job.ConfigurationError, line: "not allowed by allowed_images",
			setup: func(rg *rig, j *job.Job) { rg.runner.Docker.AllowedImages = []string{"ruby:*"} }},
		{name: "disallowed pull policy", reason: job.ConfigurationError, line: "not one of the allowed_pull_policies",
			setup: func(rg *rig, j *job.Job) { j.Image.PullPolicy = []string{"always"} }},
		{name: "disallowed user", reason: job.ConfigurationError, line: "not allowed by allowed_users",
			setup: func(rg *rig, j *job.Job) {
				rg.runner.Docker.AllowedUsers = []string{"1000"}
				j.Image.ExecutorOpts = &job.ExecutorOpts{Docker: job.DockerOpts{User: "0"}}
			}},
		{name: "too many services", reason: job.ConfigurationError, line: "services_limit is 0",
			setup: func(rg *rig, j *job.Job) {
				zero := 0
				rg.runner.Docker.ServicesLimit = &zero
				j.Services = []job.Image{{Name: rg.image}}
			}},
		{name: "disallowed service", reason: job.ConfigurationError, line: "not allowed by allowed_services",
			setup: func(rg *rig, j *job.Job) {
				rg.runner.Docker.AllowedServices = []string{"postgres:*"}
				j.Services = []job.Image{{Name: rg.image}}
			}},
		{name: "artifacts outside the project", reason: job.ConfigurationError, line: "outside the project directory",
			setup: func(rg *rig, j *job.Job) {
				j.Artifacts = []job.Artifact{{Name: "a", Paths: []string{"../../etc"}, When: job.WhenOnSuccess}}
			}},
		{name: "service never listens", reason: job.ScriptFailure, line: "did not come up",
			setup: func(rg *rig, j *job.Job) {
				rg.runner.Docker.WaitForServicesTimeout = 2
				j.Services = []job.Image{{Name: rg.image, Alias: "db", Command: []string{"sleep", "60"}, Ports: []job.Port{{Number: 5432}}}}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rg := newRig(t)
			j := rg.newJob("echo should-not-run")
			tt.setup(rg, j)
			l, err := rg.run(t, j)
			wantReason(t, err, tt.reason, 0)
			if !strings.Contains(err.Error(), tt.line) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not one line containing %q", err, tt.line)
			}
			if strings.Contains(l.String(), "should-not-run\n") {
				t.Fatalf("script ran:\n%s", l)
			}
		})
	}
}

func TestUnreachableEngine(t *testing.T) {
	t.Parallel()
	testenv.RequireDocker(t)
	cli, err := client.NewClientWithOpts(client.WithHost("unix:///nonexistent/docker.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	j := (&rig{image: "busybox"}).newJob("true")
	b := &executors.Build{Job: j, Runner: &config.RunnerConfig{Docker: &config.DockerConfig{}}, Log: newRecLog(nil), Logger: logrus.New()}
	err = docker.RunJob(t.Context(), cli, b, docker.Options{EngineName: "nowhere"})
	var be *job.BuildError
	if err == nil || errors.As(err, &be) || !strings.Contains(err.Error(), "cannot reach the Docker Engine (nowhere)") {
		t.Fatalf("err = %v, want a system failure naming the engine", err)
	}
}

// The service listens only after 2 s: the job's script starts once the helper's health check saw the
// port open, and reaches the service by its alias and by the name derived from its image.
func TestServiceReachableByAlias(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	j := rg.newJob("nc cache 6379 </dev/null", "nc fleetrunner-test__busybox 6379 </dev/null")
	j.Services = []job.Image{{
		Name: rg.image, Alias: "cache",
		Entrypoint: []string{"sh", "-c"}, Command: []string{`sleep 2; nc -ll -p 6379 -e echo "hello from $GREETING"`},
		Ports:     []job.Port{{Number: 6379}},
		Variables: job.Variables{{Key: "GREETING", Value: "service"}},
	}}
	l, err := rg.run(t, j)
	if err != nil {
		t.Fatalf("job failed: %v\n%s", err, l)
	}
	if got := strings.Count(l.String(), "hello from service"); got != 2 {
		t.Fatalf("service answered %d times, want 2 (alias and derived name):\n%s", got, l)
	}
}

func TestProviderRunsJob(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	rg.runner.Docker.Host = "unix://" + testenv.DockerSocket()
	rg.runner.Docker.Volumes = []string{"/cache"}
	p, err := docker.NewProvider(rg.runner, executors.Deps{Logger: logrus.New()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	if f := p.Features(); !f["services"] || !f["return_exit_code"] || f["shared"] {
		t.Fatalf("features %v", f)
	}
	res, err := p.Reserve(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	j := rg.newJob("test -d /cache && echo cache-mounted")
	l := newRecLog(nil)
	if err := p.Run(t.Context(), res, &executors.Build{Job: j, Runner: rg.runner, Log: l, Logger: logrus.New()}); err != nil {
		t.Fatalf("job failed: %v\n%s", err, l)
	}
	if !strings.Contains(l.String(), "cache-mounted\n") {
		t.Fatalf("/cache volume not mounted:\n%s", l)
	}
}

// recordingClient keeps the config of every container created through it.
type recordingClient struct {
	client.APIClient
	mu      sync.Mutex
	configs []*container.Config
}

func (c *recordingClient) ContainerCreate(ctx context.Context, cfg *container.Config, hc *container.HostConfig,
	nc *network.NetworkingConfig, p *ocispec.Platform, name string) (container.CreateResponse, error) {
	c.mu.Lock()
	c.configs = append(c.configs, cfg)
	c.mu.Unlock()
	return c.APIClient.ContainerCreate(ctx, cfg, hc, nc, p, name)
}

// TestJobTokenNotInHelperArgs: the helper containers that clone and upload get the job token on stdin,
// not in their command line, environment or labels, which anyone allowed to inspect containers on the
// instance can read.
func TestJobTokenNotInHelperArgs(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	const token = "glcbt-64_sEcReTjObToKeN"
	upload := rg.newJob("echo x > out.txt")
	upload.Artifacts = []job.Artifact{{Name: "a", Paths: []string{"out.txt"}, When: job.WhenOnSuccess}}
	clone := rg.newJob("true")
	clone.Variables = append(clone.Variables, job.Variable{Key: "GIT_STRATEGY", Value: "clone"})
	clone.GitInfo = job.GitInfo{RepoURL: "http://gitlab-ci-token:" + token + "@127.0.0.1:1/g/p.git", Sha: strings.Repeat("a", 40), Ref: "main"}
	for _, j := range []*job.Job{upload, clone} {
		j.Token = token
		j.Variables = append(j.Variables, job.Variable{Key: "CI_JOB_TOKEN", Value: token, Masked: true})
		rec := &recordingClient{APIClient: rg.cli}
		l := newRecLog(j.Variables.MaskedValues())
		b := &executors.Build{Job: j, Runner: rg.runner, Log: l, Logger: logrus.New(), SystemID: "s_test"}
		if err := docker.RunJob(t.Context(), rec, b, docker.Options{EngineName: "local"}); err == nil {
			t.Fatalf("job %d succeeded against an unreachable GitLab:\n%s", j.ID, l.String())
		}
		helpers := 0
		for _, cfg := range rec.configs {
			if len(cfg.Cmd) > 0 && (cfg.Cmd[0] == "artifacts-upload" || cfg.Cmd[0] == "get-sources") {
				helpers++
			}
			all := strings.Join(append(append(append([]string{}, cfg.Cmd...), cfg.Entrypoint...), cfg.Env...), " ")
			for k, v := range cfg.Labels {
				all += " " + k + "=" + v
			}
			if strings.Contains(all, token) {
				t.Errorf("job %d: a container's command, environment or labels hold the job token: %q", j.ID, all)
			}
		}
		if helpers != 1 {
			t.Errorf("job %d: %d helper containers for the upload or clone, want 1; log:\n%s", j.ID, helpers, l.String())
		}
	}
}
