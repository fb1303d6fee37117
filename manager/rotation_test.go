package manager_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
)

const resetPath = "/api/v4/runners/reset_authentication_token"

// resetProxy forwards to the simulator; while closed it answers every token reset with 503, as a
// GitLab in trouble would. It counts the resets it refused and those it let through.
type resetProxy struct {
	url              string
	open             atomic.Bool
	refused, through atomic.Int64
}

func newResetProxy(t *testing.T, target string) *resetProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &resetProxy{}
	fwd := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == resetPath {
			if !p.open.Load() {
				p.refused.Add(1)
				http.Error(w, "503 Service Unavailable", http.StatusServiceUnavailable)
				return
			}
			p.through.Add(1)
		}
		fwd.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// rotationRig serves two runners from one config.toml: "rotating", whose token is due for rotation at
// once (obtained long ago, expiring soon) and which gets the jobs, and "steady", whose token never
// expires and which is paused in GitLab.
type rotationRig struct {
	*rig
	proxy       *resetProxy
	rotatingID  int64
	rotating    string // its token at the start
	initialFile []byte
}

func newRotationRig(t *testing.T, extra string) *rotationRig {
	t.Helper()
	r := newRig(t, gitlabsim.Options{})
	expires := time.Now().Add(30 * time.Second).UTC().Truncate(time.Second)
	id, token := r.sim.CreateRunner(gitlabsim.RunnerOptions{Description: "rotating", TokenExpiresAt: &expires})
	_, steady := r.sim.CreateRunner(gitlabsim.RunnerOptions{Description: "steady", Paused: true})
	rr := &rotationRig{rig: r, proxy: newResetProxy(t, r.sim.URL()), rotatingID: id, rotating: token}
	rr.url = rr.proxy.url
	text := fmt.Sprintf(`concurrent = 3
check_interval = 1
shutdown_timeout = 5

[[runners]]
  name = "rotating"
  url = %q
  id = %d
  token = %q
  token_obtained_at = %s
  token_expires_at = %s
  executor = "docker"
  request_concurrency = 2
  environment = ["KEEP=me"]
%s
  [runners.docker]
    image = "busybox"
    volumes = ["/cache"]

[[runners]]
  name = "steady"
  url = %q
  token = %q
  executor = "docker"
  limit = 4
  [runners.docker]
    image = "alpine"
`, rr.url, id, token, expires.Add(-10*time.Minute).Format(time.RFC3339), expires.Format(time.RFC3339), extra, r.sim.URL(), steady)
	rr.initialFile = []byte(text)
	if err := os.WriteFile(r.cfgPath, rr.initialFile, 0o600); err != nil {
		t.Fatal(err)
	}
	return rr
}

func (r *rotationRig) load() *config.Config {
	r.t.Helper()
	cfg, _, err := config.Load(r.cfgPath)
	if err != nil {
		r.t.Fatal(err)
	}
	return cfg
}

// verify asks GitLab (the simulator) whether token is a valid runner token.
func (r *rotationRig) verify(token string) error {
	r.t.Helper()
	c, err := gitlab.NewClient(logrus.New(), gitlab.ClientConfig{URL: r.sim.URL()})
	if err != nil {
		r.t.Fatal(err)
	}
	_, err = c.VerifyRunner(r.ctx(), token, "")
	return err
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTokenRotationKeepsRunnerAndProvider: a token due for rotation is reset by the running manager
// (after failed attempts are retried), saved into config.toml without touching anything else, and the
// runner goes on with the same worker and executor provider: jobs run before and after, a job running
// across the rotation finishes with its own job token, and the watcher's reload of the saved file is
// not a removal plus an addition. A file written back with the old token is repaired.
func TestTokenRotationKeepsRunnerAndProvider(t *testing.T) {
	r := newRotationRig(t, "")
	across := r.sim.Enqueue(gitlabsim.JobSpec{Name: "across", Script: []string{"echo before rotation", "gate", "echo after rotation"}})
	before := r.sim.Enqueue(gitlabsim.JobSpec{Name: "before", Script: []string{"echo old token"}})
	r.start(50 * time.Millisecond)

	if err := r.exec.waitStarted(r.ctx(), across); err != nil {
		t.Fatal(err)
	}
	if snap := r.finished(before); snap.Status != gitlabsim.StatusSuccess || snap.RunnerID != r.rotatingID {
		t.Fatalf("job before the rotation: %s on runner %d; want success on %d", snap.Status, snap.RunnerID, r.rotatingID)
	}
	waitUntil(t, "two refused token resets", func() bool { return r.proxy.refused.Load() >= 2 })
	if got := string(r.initialFile); got != string(mustRead(t, r.cfgPath)) {
		t.Fatal("config.toml changed although no reset succeeded")
	}
	r.proxy.open.Store(true)
	waitLog(t, r.logs, "rotated runner token saved")

	st, err := os.Stat(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config.toml mode %v after the save; want 0600", st.Mode().Perm())
	}
	initial, _, err := config.Parse(r.initialFile)
	if err != nil {
		t.Fatal(err)
	}
	saved := r.load()
	got := saved.Runners[0]
	if got.Token == r.rotating || !strings.HasPrefix(got.Token, "glrt-") {
		t.Fatalf("config.toml token %q…: not a new runner token", got.Token[:min(9, len(got.Token))])
	}
	if time.Since(got.TokenObtainedAt) > time.Minute || !got.TokenExpiresAt.After(time.Now()) {
		t.Errorf("saved token_obtained_at %v, token_expires_at %v: want now and the new expiry", got.TokenObtainedAt, got.TokenExpiresAt)
	}
	// Everything but the three token keys is what it was, the other runner included.
	want := *initial.Runners[0]
	want.Token, want.TokenObtainedAt, want.TokenExpiresAt = got.Token, got.TokenObtainedAt, got.TokenExpiresAt
	initial.Runners[0] = &want
	if !reflect.DeepEqual(saved, initial) {
		t.Errorf("config.toml changed beyond the rotated token:\n got %+v\nwant %+v", saved, initial)
	}
	if err := r.verify(r.rotating); !errors.Is(err, gitlab.ErrForbidden) {
		t.Errorf("GitLab still accepts the replaced token: %v", err)
	}
	if err := r.verify(got.Token); err != nil {
		t.Errorf("GitLab refuses the saved token: %v", err)
	}
	if n := r.proxy.through.Load(); n != 1 {
		t.Errorf("%d token resets reached GitLab; want 1", n)
	}

	// The watcher reloads the saved file, and jobs flow with the new token.
	waitLog(t, r.logs, "configuration reloaded")
	after := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after", Script: []string{"echo new token"}})
	if snap := r.finished(after); snap.Status != gitlabsim.StatusSuccess || snap.RunnerID != r.rotatingID {
		t.Fatalf("job after the rotation: %s on runner %d; want success on %d", snap.Status, snap.RunnerID, r.rotatingID)
	}

	// An editor writing back its old buffer brings the replaced token back; the manager keeps the new one
	// and saves it again.
	if err := os.WriteFile(r.cfgPath, r.initialFile, 0o600); err != nil {
		t.Fatal(err)
	}
	waitLog(t, r.logs, "config.toml carries a runner token this manager already replaced")
	waitUntil(t, "the new token saved again", func() bool {
		cfg, _, err := config.Load(r.cfgPath)
		return err == nil && cfg.Runners[0].Token == got.Token
	})
	again := r.sim.Enqueue(gitlabsim.JobSpec{Name: "again", Script: []string{"echo still the new token"}})
	if snap := r.finished(again); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job after the stale file: %s; want success", snap.Status)
	}

	r.exec.openGate()
	snap := r.finished(across)
	if snap.Status != gitlabsim.StatusSuccess || !strings.Contains(string(snap.Trace), "after rotation") {
		t.Errorf("job running across the rotation: %s, log %q; want success with its whole output", snap.Status, snap.Trace)
	}
	for _, name := range []string{"rotating", "steady"} {
		if n := r.exec.providersBuilt(name); n != 1 {
			t.Errorf("runner %s: %d executor providers built; want 1", name, n)
		}
	}
	if _, _, _, _, shutdowns := r.exec.stats(); shutdowns != 0 {
		t.Errorf("%d provider shutdowns while the manager runs; want 0", shutdowns)
	}
	logs := r.logs.String()
	if strings.Contains(logs, "runner left the configuration") {
		t.Error("the rotation looked like a removed runner to the manager")
	}
	for _, secret := range []string{r.rotating, got.Token} {
		if strings.Contains(logs, secret) {
			t.Errorf("a runner token (%s…) reached the manager's log", secret[:9])
		}
	}
}

func TestTokenRotationDisabledByFeatureFlag(t *testing.T) {
	r := newRotationRig(t, `  [runners.feature_flags]
    FF_DISABLE_AUTOMATIC_TOKEN_ROTATION = true`)
	r.proxy.open.Store(true)
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "job", Script: []string{"echo hello"}})
	r.start(50 * time.Millisecond)
	waitLog(t, r.logs, "automatic token rotation is off (FF_DISABLE_AUTOMATIC_TOKEN_ROTATION)")
	if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job: %s; want success", snap.Status)
	}
	if n := r.proxy.refused.Load() + r.proxy.through.Load(); n != 0 {
		t.Errorf("%d token resets with automatic rotation off; want 0", n)
	}
	if string(mustRead(t, r.cfgPath)) != string(r.initialFile) {
		t.Error("config.toml changed with automatic rotation off")
	}
	if err := r.verify(r.rotating); err != nil {
		t.Errorf("the token no longer works: %v", err)
	}
}

func TestTokenRotationRefusedNamesTheFix(t *testing.T) {
	r := newRotationRig(t, "")
	r.proxy.open.Store(true)
	r.sim.RevokeRunner(r.rotating)
	r.start(50 * time.Millisecond)
	waitLog(t, r.logs, "GitLab refused to rotate the runner token")
	var line string
	for l := range strings.Lines(r.logs.String()) {
		if strings.Contains(l, "GitLab refused to rotate the runner token") {
			line = l
		}
	}
	if !strings.Contains(line, "runner_name=rotating") || !strings.Contains(line, "Register the runner again") {
		t.Errorf("the refusal does not name the runner and what to do: %s", line)
	}
	if n := r.proxy.through.Load(); n != 1 {
		t.Errorf("%d resets of a revoked token; want 1 (a refusal is not retried)", n)
	}
	if string(mustRead(t, r.cfgPath)) != string(r.initialFile) {
		t.Error("config.toml changed although the reset was refused")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOutsideTokenResetKeepsRunnerAndProvider: a token reset by another process (fleetrunner
// reset-token) reaches the manager as an edited config.toml; the entry with the same URL and runner ID
// keeps its worker and executor instead of looking like a removed runner plus a new one.
func TestOutsideTokenResetKeepsRunnerAndProvider(t *testing.T) {
	r := newRotationRig(t, `  [runners.feature_flags]
    FF_DISABLE_AUTOMATIC_TOKEN_ROTATION = true`)
	r.proxy.open.Store(true)
	r.start(50 * time.Millisecond)
	first := r.sim.Enqueue(gitlabsim.JobSpec{Name: "before", Script: []string{"echo old token"}})
	if snap := r.finished(first); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job before the reset: %s", snap.Status)
	}

	c, err := gitlab.NewClient(logrus.New(), gitlab.ClientConfig{URL: r.sim.URL()})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.ResetToken(r.ctx(), r.rotating)
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	edited := strings.Replace(string(r.initialFile), r.rotating, resp.Token, 1)
	tmp := r.cfgPath + ".new"
	if err := os.WriteFile(tmp, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, r.cfgPath); err != nil {
		t.Fatal(err)
	}
	waitLog(t, r.logs, "runner token changed in config.toml")

	after := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after", Script: []string{"echo new token"}})
	if snap := r.finished(after); snap.Status != gitlabsim.StatusSuccess || snap.RunnerID != r.rotatingID {
		t.Fatalf("job after the reset: %s on runner %d; want success on %d", snap.Status, snap.RunnerID, r.rotatingID)
	}
	if n := r.exec.providersBuilt("rotating"); n != 1 {
		t.Errorf("%d executor providers built for the runner; want 1", n)
	}
	if _, _, _, _, shutdowns := r.exec.stats(); shutdowns != 0 {
		t.Errorf("%d provider shutdowns; want 0", shutdowns)
	}
	if strings.Contains(r.logs.String(), "runner left the configuration") {
		t.Error("the reset looked like a removed runner to the manager")
	}
}
