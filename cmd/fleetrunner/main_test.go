package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/version"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

const testTimeout = 60 * time.Second

type cliResult struct {
	stdout, stderr *testrig.SyncBuffer
	err            error
}

// cli runs one fleetrunner command in-process.
func cli(ctx context.Context, registry executors.Registry, stdin io.Reader, args ...string) cliResult {
	res := cliResult{stdout: &testrig.SyncBuffer{}, stderr: &testrig.SyncBuffer{}}
	cmd := newRootCommand(registry)
	cmd.SetArgs(args)
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	cmd.SetIn(stdin)
	cmd.SetOut(res.stdout)
	cmd.SetErr(res.stderr)
	res.err = cmd.ExecuteContext(ctx)
	return res
}

type env struct {
	t   *testing.T
	sim *gitlabsim.Server
	cfg string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// The environment of a CI job (CI_SERVER_URL, …) must not fill in flags the tests leave out.
	for _, key := range append([]string{"CONFIG_FILE", "LOG_LEVEL", "LOG_FORMAT"}, slices.Collect(maps.Values(registerEnv))...) {
		t.Setenv(key, "")
	}
	sim, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return &env{t: t, sim: sim, cfg: filepath.Join(t.TempDir(), "config.toml")}
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(e.t.Context(), testTimeout)
	e.t.Cleanup(cancel)
	return ctx
}

// run runs a command against the env's config and fails the test on error.
func (e *env) run(args ...string) cliResult {
	e.t.Helper()
	res := cli(e.ctx(), executors.Registry{}, nil, append([]string{"-c", e.cfg}, args...)...)
	if res.err != nil {
		e.t.Fatalf("fleetrunner %s: %v\nstderr: %s", strings.Join(args, " "), res.err, res.stderr)
	}
	return res
}

func (e *env) config() *config.Config {
	e.t.Helper()
	cfg, _, err := config.Load(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

func (e *env) systemID() string {
	e.t.Helper()
	id, err := config.LoadOrCreateSystemID(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// verify asks the simulator directly whether a token is still valid.
func (e *env) verify(token string) error {
	e.t.Helper()
	c, err := gitlab.NewClient(logrus.New(), gitlab.ClientConfig{URL: e.sim.URL()})
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = c.VerifyRunner(e.ctx(), token, "")
	return err
}

func (e *env) registerGlrt(name string) (int64, string) {
	e.t.Helper()
	id, token := e.sim.CreateRunner(gitlabsim.RunnerOptions{Description: name})
	e.run("register", "--non-interactive", "--url", e.sim.URL(), "--token", token, "--name", name,
		"--executor", "docker", "--docker-image", "busybox:latest")
	return id, token
}

func (e *env) registerLegacy(name string) string {
	e.t.Helper()
	e.run("register", "-n", "--url", e.sim.URL(), "--registration-token", e.sim.RegistrationToken(), "--name", name,
		"--tag-list", "a, b", "--run-untagged=true", "--locked=false", "--access-level", "ref_protected",
		"--maximum-timeout", "600", "--executor", "docker", "--docker-image", "busybox:latest")
	cfg := e.config()
	return cfg.Runners[len(cfg.Runners)-1].Token
}

func TestRegisterWithAuthenticationToken(t *testing.T) {
	e := newEnv(t)
	id, token := e.sim.CreateRunner(gitlabsim.RunnerOptions{Description: "ui runner"})
	res := e.run("register", "--non-interactive", "--url", e.sim.URL(), "--token", token, "--name", "r1",
		"--executor", "docker", "--docker-image", "busybox:latest", "--limit", "2", "--request-concurrency", "3")
	cfg := e.config()
	if len(cfg.Runners) != 1 {
		t.Fatalf("%d runners in config; want 1", len(cfg.Runners))
	}
	r := cfg.Runners[0]
	if r.Name != "r1" || r.Token != token || r.ID != id || r.URL != e.sim.URL() || r.Executor != "docker" ||
		r.Docker == nil || r.Docker.Image != "busybox:latest" || r.Limit != 2 || r.RequestConcurrency != 3 || r.TokenObtainedAt.IsZero() {
		t.Errorf("saved runner %+v does not match the registration", r)
	}
	if !slices.Contains(e.sim.RunnerManagers(id), e.systemID()) {
		t.Errorf("GitLab's runner managers %v do not include this host %s", e.sim.RunnerManagers(id), e.systemID())
	}
	if st, err := os.Stat(e.cfg); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("config file mode: %v %v; want 0600", st.Mode(), err)
	}
	if strings.Contains(res.stderr.String(), token) {
		t.Error("the runner token was logged")
	}
}

func TestRegisterLegacy(t *testing.T) {
	e := newEnv(t)
	token := e.registerLegacy("legacy")
	if token == "" || token == e.sim.RegistrationToken() {
		t.Fatalf("saved token %q is not a runner token", token)
	}
	if err := e.verify(token); err != nil {
		t.Errorf("the saved token does not authenticate: %v", err)
	}
}

func TestRegisterInteractive(t *testing.T) {
	e := newEnv(t)
	_, token := e.sim.CreateRunner(gitlabsim.RunnerOptions{})
	answers := strings.Join([]string{e.sim.URL(), token, "asked", "docker", "alpine:3"}, "\n") + "\n"
	res := cli(e.ctx(), executors.Registry{}, strings.NewReader(answers), "-c", e.cfg, "register")
	if res.err != nil {
		t.Fatalf("register: %v\n%s", res.err, res.stderr)
	}
	for _, q := range []string{"GitLab instance URL", "token", "name for the runner", "executor", "Docker image"} {
		if !strings.Contains(res.stdout.String(), q) {
			t.Errorf("register did not ask for the %s", q)
		}
	}
	r := e.config().Runners[0]
	if r.Name != "asked" || r.Token != token || r.Executor != "docker" || r.Docker.Image != "alpine:3" {
		t.Errorf("saved runner %+v does not hold the answers", r)
	}
}

func TestRegisterInterruptRemovesRunnerManager(t *testing.T) {
	e := newEnv(t)
	id, token := e.sim.CreateRunner(gitlabsim.RunnerOptions{})
	pr, pw := io.Pipe()
	t.Cleanup(func() { _ = pw.Close() })
	ctx, interrupt := context.WithCancel(e.ctx())
	done := make(chan cliResult, 1)
	stdout := make(chan *testrig.SyncBuffer, 1)
	go func() {
		res := cliResult{stdout: &testrig.SyncBuffer{}, stderr: &testrig.SyncBuffer{}}
		stdout <- res.stdout
		cmd := newRootCommand(executors.Registry{})
		cmd.SetArgs([]string{"-c", e.cfg, "register", "--name", "interrupted"})
		cmd.SetIn(pr)
		cmd.SetOut(res.stdout)
		cmd.SetErr(res.stderr)
		res.err = cmd.ExecuteContext(ctx)
		done <- res
	}()
	out := <-stdout
	if _, err := fmt.Fprintf(pw, "%s\n%s\n", e.sim.URL(), token); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(out.String(), "Enter an executor") {
		if time.Now().After(deadline) {
			t.Fatalf("register never asked for the executor: %s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(e.sim.RunnerManagers(id)) != 1 {
		t.Fatalf("runner managers before the interrupt: %v; want this host", e.sim.RunnerManagers(id))
	}
	interrupt()
	res := <-done
	if res.err == nil || !strings.Contains(res.err.Error(), "removed from GitLab again") {
		t.Fatalf("interrupted register: %v; want the runner removed again", res.err)
	}
	if m := e.sim.RunnerManagers(id); len(m) != 0 {
		t.Errorf("runner managers after the interrupt: %v; want none", m)
	}
	if _, err := os.Stat(e.cfg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config written by an interrupted register: %v", err)
	}
}

func TestRegisterWithTemplateConfig(t *testing.T) {
	e := newEnv(t)
	tmpl := filepath.Join(t.TempDir(), "template.toml")
	if err := os.WriteFile(tmpl, []byte(`
[[runners]]
  executor = "docker-autoscaler"
  shell = "sh"
  limit = 7
  [runners.docker]
    image = "busybox:latest"
  [runners.autoscaler]
    plugin = "aws"
    capacity_per_instance = 1
    max_use_count = 1
    max_instances = 10
    [runners.autoscaler.plugin_config]
      name = "my-asg"
      [runners.autoscaler.plugin_config.nested]
        key = "kept"
    [runners.autoscaler.connector_config]
      username = "ec2-user"
      use_external_addr = true
    [[runners.autoscaler.policy]]
      idle_count = 5
      idle_time = "20m0s"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, token := e.sim.CreateRunner(gitlabsim.RunnerOptions{})
	e.run("register", "-n", "--url", e.sim.URL(), "--token", token, "--name", "scaled", "--template-config", tmpl)
	r := e.config().Runners[0]
	if r.Executor != "docker-autoscaler" || r.Limit != 7 || r.Shell != "sh" || r.Docker.Image != "busybox:latest" || r.Token != token {
		t.Errorf("template and flags not merged: %+v", r)
	}
	a := r.Autoscaler
	if a == nil || a.Plugin != "aws" || a.MaxInstances != 10 || len(a.Policy) != 1 || a.Policy[0].IdleTime != 20*time.Minute ||
		a.ConnectorConfig.Username != "ec2-user" || a.PluginConfig["name"] != "my-asg" {
		t.Fatalf("autoscaler settings not taken from the template: %+v", a)
	}
	if nested, _ := a.PluginConfig["nested"].(map[string]any); nested["key"] != "kept" {
		t.Errorf("nested plugin_config lost: %v", a.PluginConfig)
	}
}

func TestRegisterErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing url", []string{"register", "-n", "--token", "glrt-x", "--executor", "docker", "--docker-image", "i"}, "--url is required with --non-interactive"},
		{"revoked token", []string{"register", "-n", "--url", e.sim.URL(), "--token", "glrt-unknownunknown", "--executor", "docker", "--docker-image", "i"}, "token is not valid"},
		{"bad registration token", []string{"register", "-n", "--url", e.sim.URL(), "--registration-token", "GR1348941nope", "--executor", "docker", "--docker-image", "i"}, "registration token was not accepted"},
		{"unsupported executor", []string{"register", "-n", "--url", e.sim.URL(), "--token", "glrt-x", "--executor", "shell", "--docker-image", "i"}, `executor "shell" is not supported`},
		{"autoscaler without template", []string{"register", "-n", "--url", e.sim.URL(), "--token", "glrt-x", "--executor", "docker-autoscaler", "--docker-image", "i"}, "--template-config"},
		{"both tokens", []string{"register", "-n", "--url", e.sim.URL(), "--token", "glrt-x", "--registration-token", "GR1", "--executor", "docker"}, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := cli(e.ctx(), executors.Registry{}, nil, append([]string{"-c", e.cfg}, tt.args...)...)
			if res.err == nil || !strings.Contains(res.err.Error(), tt.want) {
				t.Errorf("error %v; want it to contain %q", res.err, tt.want)
			}
			if _, err := os.Stat(e.cfg); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed register wrote the config: %v", err)
			}
		})
	}
}

func TestVerifyReportsRemovedRunnersAndDeletesThem(t *testing.T) {
	e := newEnv(t)
	_, glrt := e.registerGlrt("kept")
	legacy := e.registerLegacy("revoked")
	_ = glrt
	e.sim.RevokeRunner(legacy)

	res := cli(e.ctx(), executors.Registry{}, nil, "-c", e.cfg, "verify")
	out := res.stdout.String()
	if !strings.Contains(out, `runner "kept"`) || !strings.Contains(out, "kept\" ("+manager.ShortToken(glrt)+") at "+e.sim.URL()+": valid") {
		t.Errorf("verify output %q does not report the valid runner", out)
	}
	if !strings.Contains(out, `runner "revoked" (`+manager.ShortToken(legacy)+`) at `+e.sim.URL()+`: removed from GitLab`) {
		t.Errorf("verify output %q does not report the revoked runner as removed", out)
	}
	if res.err == nil || !strings.Contains(res.err.Error(), "verify --delete") {
		t.Errorf("verify with a removed runner: %v; want an error pointing to --delete", res.err)
	}
	if n := len(e.config().Runners); n != 2 {
		t.Errorf("verify without --delete changed the config: %d runners", n)
	}

	e.run("verify", "--delete")
	cfg := e.config()
	if len(cfg.Runners) != 1 || cfg.Runners[0].Name != "kept" {
		t.Errorf("after verify --delete: %d runners; want only \"kept\"", len(cfg.Runners))
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	_, token := e.registerGlrt("listed")
	res := e.run("list")
	out := res.stdout.String()
	for _, want := range []string{"NAME", "listed", "docker", manager.ShortToken(token), e.sim.URL()} {
		if !strings.Contains(out, want) {
			t.Errorf("list output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out+res.stderr.String(), token) {
		t.Error("list printed the whole token")
	}
}

func TestUnregister(t *testing.T) {
	e := newEnv(t)
	id, glrt := e.registerGlrt("ui-created")
	legacy := e.registerLegacy("legacy")
	other := e.registerLegacy("other")

	// A glrt- runner: only this host's manager goes; the runner stays in GitLab.
	e.run("unregister", "--name", "ui-created")
	if m := e.sim.RunnerManagers(id); slices.Contains(m, e.systemID()) {
		t.Errorf("runner managers after unregister: %v; this host must be gone", m)
	}
	if err := e.verify(glrt); err != nil {
		t.Errorf("the glrt- runner itself must stay in GitLab: %v", err)
	}

	// A legacy runner by URL and token: the runner is deleted.
	e.run("unregister", "--url", e.sim.URL(), "--token", legacy)
	if err := e.verify(legacy); !errors.Is(err, gitlab.ErrForbidden) {
		t.Errorf("legacy runner after unregister: %v; want it deleted", err)
	}
	cfg := e.config()
	if len(cfg.Runners) != 1 || cfg.Runners[0].Name != "other" {
		t.Fatalf("config after two unregisters: %d runners; want only \"other\"", len(cfg.Runners))
	}

	e.run("unregister", "--all-runners")
	if err := e.verify(other); !errors.Is(err, gitlab.ErrForbidden) {
		t.Errorf("runner after --all-runners: %v; want it deleted", err)
	}
	if n := len(e.config().Runners); n != 0 {
		t.Errorf("%d runners left after --all-runners", n)
	}

	res := cli(e.ctx(), executors.Registry{}, nil, "-c", e.cfg, "unregister", "--name", "nobody")
	if res.err == nil || !strings.Contains(res.err.Error(), `no runner named "nobody"`) {
		t.Errorf("unregister of an unknown name: %v", res.err)
	}
}

func TestBadConfigNamesFileKeyAndProblem(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(e.cfg, []byte(`concurrent = 2
[[runners]]
  name = "r"
  url = "http://127.0.0.1:1"
  token = "glrt-x"
  executor = "docker"
  unhealthy_interval = "20 minutes"
  [runners.docker]
    image = "busybox"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"run", "list", "verify"} {
		res := cli(e.ctx(), executors.Registry{}, nil, "-c", e.cfg, cmd)
		if res.err == nil {
			t.Fatalf("%s accepted a broken config", cmd)
		}
		for _, want := range []string{e.cfg, "runners[0].unhealthy_interval", "20 minutes"} {
			if !strings.Contains(res.err.Error(), want) {
				t.Errorf("%s: error %q does not name %q", cmd, res.err, want)
			}
		}
	}
}

func TestRunWithoutConfigFile(t *testing.T) {
	e := newEnv(t)
	res := cli(e.ctx(), executors.Registry{}, nil, "-c", e.cfg, "run")
	if res.err == nil || !strings.Contains(res.err.Error(), e.cfg+" does not exist") {
		t.Errorf("run without a config file: %v", res.err)
	}
}

// helloProvider is a minimal executor for the run command's wiring.
type helloProvider struct{}

func (helloProvider) Reserve(context.Context) (executors.Reservation, error) {
	return executors.NoReservation{}, nil
}

func (helloProvider) Run(_ context.Context, _ executors.Reservation, b *executors.Build) error {
	_, err := io.WriteString(b.Log, "hello from the job\n")
	return err
}

func (helloProvider) Features() map[string]bool { return map[string]bool{} }

func (helloProvider) Shutdown(context.Context) error { return nil }

func TestRunServesJobsAndLogsConfigWarnings(t *testing.T) {
	e := newEnv(t)
	e.registerGlrt("runs")
	data, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// An upstream-only runner entry loads with a warning that names its key.
	extra := fmt.Sprintf("\n[[runners]]\n  name = \"machine\"\n  url = %q\n  token = \"glrt-other\"\n  executor = \"docker+machine\"\n", e.sim.URL())
	if err := os.WriteFile(e.cfg, append(data, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	id := e.sim.Enqueue(gitlabsim.JobSpec{Name: "hello", Script: []string{"true"}})

	ctx, stop := context.WithCancel(e.ctx())
	done := make(chan cliResult, 1)
	registry := executors.Registry{config.ExecutorDocker: func(*config.RunnerConfig, executors.Deps) (executors.Provider, error) {
		return helloProvider{}, nil
	}}
	go func() { done <- cli(ctx, registry, nil, "-c", e.cfg, "--log-format", "json", "run") }()
	snap, err := e.sim.WaitFinished(e.ctx(), id)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	res := <-done
	if res.err != nil {
		t.Fatalf("run: %v", res.err)
	}
	if snap.Status != gitlabsim.StatusSuccess || !strings.Contains(string(snap.Trace), "hello from the job") {
		t.Errorf("job: %s, log %q", snap.Status, snap.Trace)
	}
	if !strings.Contains(res.stderr.String(), `"key":"runners[1].executor"`) {
		t.Errorf("run did not log the config warning with its key (json): %s", res.stderr)
	}
}

func TestVersion(t *testing.T) {
	res := cli(t.Context(), executors.Registry{}, nil, "--version")
	if res.err != nil || !strings.Contains(res.stdout.String(), version.Version) {
		t.Errorf("--version: %v %q", res.err, res.stdout)
	}
}
