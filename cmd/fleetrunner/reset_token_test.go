package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// registerExpiring registers a glrt- runner whose token expires in a day.
func (e *env) registerExpiring(name string) string {
	e.t.Helper()
	exp := time.Now().Add(24 * time.Hour)
	_, token := e.sim.CreateRunner(gitlabsim.RunnerOptions{Description: name, TokenExpiresAt: &exp})
	e.run("register", "--non-interactive", "--url", e.sim.URL(), "--token", token, "--name", name,
		"--executor", "docker", "--docker-image", "busybox:latest")
	return token
}

// runnerNamed returns the config entry named name.
func runnerNamed(t *testing.T, cfg *config.Config, name string) *config.RunnerConfig {
	t.Helper()
	for _, r := range cfg.Runners {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no runner %q in the config", name)
	return nil
}

// assertReset checks that the runner's token in cfg replaced old: GitLab refuses old and accepts
// the new one, which was obtained just now.
func (e *env) assertReset(cfg *config.Config, name, old string, start time.Time) *config.RunnerConfig {
	e.t.Helper()
	r := runnerNamed(e.t, cfg, name)
	if r.Token == old || r.Token == "" {
		e.t.Fatalf("runner %q still has its old token", name)
	}
	if err := e.verify(old); !errors.Is(err, gitlab.ErrForbidden) {
		e.t.Errorf("runner %q: GitLab still accepts the old token: %v", name, err)
	}
	if err := e.verify(r.Token); err != nil {
		e.t.Errorf("runner %q: the saved token does not authenticate: %v", name, err)
	}
	if r.TokenObtainedAt.Before(start.Truncate(time.Second)) || r.TokenObtainedAt.After(time.Now()) {
		e.t.Errorf("runner %q: token_obtained_at %v is not the time of the reset (%v)", name, r.TokenObtainedAt, start)
	}
	return r
}

// assertNoSecrets fails when the output shows any of the secrets.
func assertNoSecrets(t *testing.T, res cliResult, secrets ...string) {
	t.Helper()
	out := res.stdout.String() + res.stderr.String()
	if res.err != nil {
		out += res.err.Error()
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the output shows a whole secret %s…:\n%s", s[:6], out)
		}
	}
}

func TestResetTokenByNameChangesOnlyThatToken(t *testing.T) {
	e := newEnv(t)
	old := e.registerExpiring("rotated")
	otherToken := e.registerLegacy("other")
	// Settings of every kind that must survive the save.
	cfg := e.config()
	cfg.Concurrent, cfg.CheckInterval = 7, 5
	r := runnerNamed(t, cfg, "rotated")
	r.Limit, r.Environment = 3, []string{"A=1"}
	r.Docker.Volumes = []string{"/cache"}
	if err := config.Save(e.cfg, cfg); err != nil {
		t.Fatal(err)
	}
	before := e.config()

	start := time.Now()
	res := e.run("reset-token", "--name", "rotated")
	after := e.config()
	got := e.assertReset(after, "rotated", old, start)
	// gitlabsim gives a reset token the runner's lifetime (a day) anew; RFC 3339 keeps whole seconds.
	if exp := got.TokenExpiresAt; exp.Before(start.Add(24*time.Hour-2*time.Second)) || exp.After(time.Now().Add(24*time.Hour)) {
		t.Errorf("token_expires_at %v; want GitLab's new expiry, a day after the reset", exp)
	}
	if err := e.verify(otherToken); err != nil || runnerNamed(t, after, "other").Token != otherToken {
		t.Errorf("the other runner's token changed or stopped working: %v", err)
	}
	// Apart from the three token keys the config is what it was.
	b := runnerNamed(t, before, "rotated")
	b.Token, b.TokenObtainedAt, b.TokenExpiresAt = got.Token, got.TokenObtainedAt, got.TokenExpiresAt
	if !reflect.DeepEqual(before, after) {
		t.Errorf("reset-token changed more than the token:\nbefore %+v\nafter  %+v", before, after)
		for i := range min(len(before.Runners), len(after.Runners)) {
			if !reflect.DeepEqual(before.Runners[i], after.Runners[i]) {
				t.Errorf("runner %d before %+v\nafter %+v", i, *before.Runners[i], *after.Runners[i])
			}
		}
	}
	if st, err := os.Stat(e.cfg); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("config file mode after reset-token: %v %v; want 0600", st.Mode(), err)
	}

	out := res.stdout.String()
	for _, want := range []string{`runner "rotated" (` + manager.ShortToken(old) + `)`, "new token " + manager.ShortToken(got.Token), "expires "} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, `"other"`) {
		t.Errorf("output %q mentions a runner that was not reset", out)
	}
	assertNoSecrets(t, res, old, got.Token, otherToken)
}

func TestResetTokenAllRunners(t *testing.T) {
	e := newEnv(t)
	tokens := map[string]string{"a": e.registerExpiring("a"), "b": e.registerLegacy("b")}
	start := time.Now()
	res := e.run("reset-token", "--all-runners")
	cfg := e.config()
	secrets := []string{}
	for name, old := range tokens {
		r := e.assertReset(cfg, name, old, start)
		if !strings.Contains(res.stdout.String(), fmt.Sprintf("runner %q (%s): token reset, new token %s", name, manager.ShortToken(old), manager.ShortToken(r.Token))) {
			t.Errorf("output %q does not report runner %q", res.stdout, name)
		}
		secrets = append(secrets, old, r.Token)
	}
	if b := runnerNamed(t, cfg, "b"); !b.TokenExpiresAt.IsZero() {
		t.Errorf("a token that never expires got token_expires_at %v", b.TokenExpiresAt)
	}
	if !strings.Contains(res.stdout.String(), "never expires") || !strings.Contains(res.stdout.String(), "saved 2 new token(s)") {
		t.Errorf("output %q", res.stdout)
	}
	assertNoSecrets(t, res, secrets...)
}

func TestResetTokenWithPAT(t *testing.T) {
	e := newEnv(t)
	old := e.registerExpiring("pat")
	before := runnerNamed(t, e.config(), "pat")
	pat := e.sim.PersonalAccessToken()
	id := fmt.Sprint(before.ID)

	start := time.Now()
	res := e.run("reset-token", "--url", e.sim.URL()+"/", "--id", id, "--pat", pat)
	r := e.assertReset(e.config(), "pat", old, start)
	if r.TokenExpiresAt.IsZero() {
		t.Error("token_expires_at not saved")
	}
	assertNoSecrets(t, res, pat, old, r.Token)

	// Refusals name their cause, and leave the config alone.
	saved := e.config()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"wrong PAT", []string{"--url", e.sim.URL(), "--id", id, "--pat", "glpat-wrongwrongwrong"}, "did not accept the personal access token"},
		{"PAT by name", []string{"--name", "pat", "--pat", "glpat-wrongwrongwrong"}, "did not accept the personal access token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := cli(e.ctx(), executors.Registry{}, nil, append([]string{"-c", e.cfg, "reset-token"}, tt.args...)...)
			if res.err == nil || !strings.Contains(res.err.Error(), tt.want) {
				t.Errorf("error %v; want %q", res.err, tt.want)
			}
			assertNoSecrets(t, res, "glpat-wrongwrongwrong", r.Token)
			if !reflect.DeepEqual(e.config(), saved) {
				t.Error("a refused reset changed the config")
			}
		})
	}
}

func TestResetTokenUnknownRunnerIDWithPAT(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(e.cfg, fmt.Appendf(nil, `[[runners]]
  name = "gone"
  url = %q
  id = 999
  token = "glrt-deletedrunnertoken"
  executor = "docker"
  [runners.docker]
    image = "busybox"
`, e.sim.URL()), 0o600); err != nil {
		t.Fatal(err)
	}
	res := cli(e.ctx(), executors.Registry{}, nil, "-c", e.cfg, "reset-token", "--url", e.sim.URL(), "--id", "999", "--pat", e.sim.PersonalAccessToken())
	if res.err == nil || !strings.Contains(res.err.Error(), "knows no runner with ID 999") {
		t.Errorf("error %v; want the unknown runner ID named", res.err)
	}
	if r := e.config().Runners[0]; r.Token != "glrt-deletedrunnertoken" {
		t.Error("a failed reset changed the token")
	}
}

func TestResetTokenRevoked(t *testing.T) {
	e := newEnv(t)
	revoked := e.registerLegacy("revoked")
	kept := e.registerExpiring("kept")
	e.sim.RevokeRunner(revoked)

	res := cli(e.ctx(), executors.Registry{}, nil, "-c", e.cfg, "reset-token", "--all-runners")
	if res.err == nil {
		t.Fatal("reset-token of a revoked runner succeeded")
	}
	for _, want := range []string{`runner "revoked" (` + manager.ShortToken(revoked) + `)`, "revoked or has expired", "--pat", "fleetrunner register"} {
		if !strings.Contains(res.err.Error(), want) {
			t.Errorf("error %q lacks %q", res.err, want)
		}
	}
	// The runner that could be reset is saved nonetheless: GitLab already killed its old token.
	cfg := e.config()
	e.assertReset(cfg, "kept", kept, time.Time{})
	if runnerNamed(t, cfg, "revoked").Token != revoked {
		t.Error("the revoked runner's entry changed")
	}
	assertNoSecrets(t, res, revoked, kept, runnerNamed(t, cfg, "kept").Token)
}

func TestResetTokenBadFlags(t *testing.T) {
	e := newEnv(t)
	token := e.registerLegacy("r")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"nothing chosen", nil, "say which runner"},
		{"name and all", []string{"--name", "r", "--all-runners"}, "choose one of"},
		{"name and url", []string{"--name", "r", "--url", e.sim.URL(), "--id", "1"}, "choose one of"},
		{"url and all", []string{"--url", e.sim.URL(), "--id", "1", "--all-runners"}, "choose one of"},
		{"url without id", []string{"--url", e.sim.URL(), "--pat", "glpat-x"}, "--url needs --id"},
		{"id without url", []string{"--id", "1"}, "--id needs --url"},
		{"id zero", []string{"--url", e.sim.URL(), "--id", "0"}, "is not a runner ID"},
		{"empty pat", []string{"--name", "r", "--pat", ""}, "--pat is empty"},
		{"unknown name", []string{"--name", "nobody"}, `no runner named "nobody"`},
		{"unknown id", []string{"--url", e.sim.URL(), "--id", "424242", "--pat", "glpat-x"}, "no runner with id 424242"},
		{"other url", []string{"--url", "http://127.0.0.1:1", "--id", fmt.Sprint(e.config().Runners[0].ID)}, "no runner with id"},
		{"argument", []string{"r"}, "takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := cli(e.ctx(), executors.Registry{}, nil, append([]string{"-c", e.cfg, "reset-token"}, tt.args...)...)
			if res.err == nil || !strings.Contains(res.err.Error(), tt.want) {
				t.Errorf("error %v; want it to contain %q", res.err, tt.want)
			}
		})
	}
	if err := e.verify(token); err != nil || e.config().Runners[0].Token != token {
		t.Errorf("a rejected command reset the token: %v", err)
	}
}

func TestExplainResetError(t *testing.T) {
	r := &config.RunnerConfig{Name: "r", RunnerCredentials: config.RunnerCredentials{URL: "https://gitlab.example.com", ID: 42}}
	noID := &config.RunnerConfig{Name: "r", RunnerCredentials: config.RunnerCredentials{URL: "https://gitlab.example.com"}}
	tests := []struct {
		name    string
		r       *config.RunnerConfig
		withPAT bool
		status  int
		want    string
	}{
		{"token 403", r, false, http.StatusForbidden, "--url https://gitlab.example.com --id 42 --pat PAT"},
		{"token 403 without id", noID, false, http.StatusForbidden, "revoked or has expired, or the runner was deleted (resetting runner token: GitLab answered 403 Forbidden); register the runner again"},
		{"PAT 401", r, true, http.StatusUnauthorized, "did not accept the personal access token"},
		{"PAT 403", r, true, http.StatusForbidden, "needs the api scope"},
		{"PAT 404", r, true, http.StatusNotFound, "knows no runner with ID 42"},
		{"token 500", r, false, http.StatusInternalServerError, "resetting runner token: GitLab answered 500 Internal Server Error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cause := fmt.Errorf("resetting runner token: %w", &gitlab.StatusError{Status: tt.status})
			err := explainResetError(cause, tt.r, tt.withPAT)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%q; want it to contain %q", err, tt.want)
			}
			var se *gitlab.StatusError
			if !errors.As(err, &se) || se.Status != tt.status {
				t.Errorf("the GitLab status is not kept in the error chain: %v", err)
			}
		})
	}
}

// TestResetTokenWhileRunning checks the help text's promise: a running `fleetrunner run` picks the
// new token up from config.toml without a restart.
func TestResetTokenWhileRunning(t *testing.T) {
	e := newEnv(t)
	old := e.registerExpiring("busy")
	ctx, stop := context.WithCancel(e.ctx())
	done := make(chan cliResult, 1)
	registry := executors.Registry{config.ExecutorDocker: func(*config.RunnerConfig, executors.Deps) (executors.Provider, error) {
		return helloProvider{}, nil
	}}
	go func() { done <- cli(ctx, registry, nil, "-c", e.cfg, "run") }()
	defer func() {
		stop()
		if res := <-done; res.err != nil {
			t.Errorf("run: %v", res.err)
		}
	}()

	// A first job shows that run serves with the old token.
	first := e.sim.Enqueue(gitlabsim.JobSpec{Name: "before-reset", Script: []string{"true"}})
	if _, err := e.sim.WaitFinished(e.ctx(), first); err != nil {
		t.Fatalf("run did not serve: %v", err)
	}

	e.run("reset-token", "--name", "busy")
	e.assertReset(e.config(), "busy", old, time.Time{})
	// GitLab hands the job only to the new token, so it finishes only once run uses that.
	id := e.sim.Enqueue(gitlabsim.JobSpec{Name: "after-reset", Script: []string{"true"}})
	snap, err := e.sim.WaitFinished(e.ctx(), id)
	if err != nil {
		t.Fatalf("the job queued after the reset was not run: %v", err)
	}
	if snap.Status != gitlabsim.StatusSuccess {
		t.Errorf("job after the reset: %s", snap.Status)
	}
}
