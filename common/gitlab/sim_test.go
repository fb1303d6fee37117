package gitlab_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
)

func startSim(t testing.TB) *gitlabsim.Server {
	t.Helper()
	sim, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

func simClient(t testing.TB, sim *gitlabsim.Server) *gitlab.Client {
	t.Helper()
	c, err := gitlab.NewClient(logging.Discard(), gitlab.ClientConfig{
		URL:   sim.URL(),
		Info:  gitlab.NewVersionInfo("test", "bash", map[string]bool{"variables": true}),
		Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() },
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSimRunnerLifecycle(t *testing.T) {
	sim := startSim(t)
	c := simClient(t, sim)
	ctx := t.Context()

	tests := []struct {
		name  string
		token func(t *testing.T) (int64, string)
	}{
		{"created in the UI (glrt-)", func(t *testing.T) (int64, string) {
			return sim.CreateRunner(gitlabsim.RunnerOptions{Description: "ui"})
		}},
		{"legacy registration token", func(t *testing.T) (int64, string) {
			tr, err := c.RegisterRunner(ctx, gitlab.RegisterRequest{Token: sim.RegistrationToken(), Description: "legacy", Tags: []string{"a", "b"}, RunUntagged: true})
			if err != nil {
				t.Fatal(err)
			}
			return tr.ID, tr.Token
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, token := tc.token(t)
			tr, err := c.VerifyRunner(ctx, token, "s_000000000001")
			if err != nil || tr.ID != id || tr.Token != token {
				t.Fatalf("VerifyRunner = %+v, %v (want id %d)", tr, err, id)
			}
			if m := sim.RunnerManagers(id); len(m) != 1 || m[0] != "s_000000000001" {
				t.Fatalf("managers = %v", m)
			}
			if err := c.UnregisterRunnerManager(ctx, token, "s_000000000001"); err != nil {
				t.Fatal(err)
			}
			if err := c.UnregisterRunnerManager(ctx, token, "s_000000000001"); !errors.Is(err, gitlab.ErrNotFound) {
				t.Fatalf("second manager delete: err = %v, want ErrNotFound", err)
			}
			if err := c.UnregisterRunner(ctx, token); err != nil {
				t.Fatal(err)
			}
			if _, err := c.VerifyRunner(ctx, token, ""); !errors.Is(err, gitlab.ErrForbidden) {
				t.Fatalf("verify after unregister: err = %v, want ErrForbidden", err)
			}
		})
	}

	t.Run("revoked token is reported as such", func(t *testing.T) {
		_, token := sim.CreateRunner(gitlabsim.RunnerOptions{})
		sim.RevokeRunner(token)
		if _, err := c.VerifyRunner(ctx, token, ""); !errors.Is(err, gitlab.ErrForbidden) {
			t.Fatalf("verify: err = %v, want ErrForbidden", err)
		}
		if r := c.RequestJob(ctx, token, ""); r.Status != http.StatusForbidden || r.Healthy {
			t.Fatalf("RequestJob = %+v, want an unhealthy 403", r)
		}
	})
	t.Run("bad registration token", func(t *testing.T) {
		if _, err := c.RegisterRunner(ctx, gitlab.RegisterRequest{Token: "GR1348941wrong"}); !errors.Is(err, gitlab.ErrForbidden) {
			t.Fatalf("err = %v, want ErrForbidden", err)
		}
	})
	t.Run("token reset", func(t *testing.T) {
		id, token := sim.CreateRunner(gitlabsim.RunnerOptions{})
		tr, err := c.ResetToken(ctx, token)
		if err != nil || tr.Token == token || tr.Token == "" {
			t.Fatalf("ResetToken = %+v, %v", tr, err)
		}
		if _, err := c.VerifyRunner(ctx, token, ""); !errors.Is(err, gitlab.ErrForbidden) {
			t.Fatalf("old token still valid: %v", err)
		}
		tr2, err := c.ResetTokenWithPAT(ctx, id, sim.PersonalAccessToken())
		if err != nil || tr2.Token == tr.Token {
			t.Fatalf("ResetTokenWithPAT = %+v, %v", tr2, err)
		}
		if _, err := c.VerifyRunner(ctx, tr2.Token, ""); err != nil {
			t.Fatalf("new token: %v", err)
		}
	})
}

func TestSimRequestJobAndFinish(t *testing.T) {
	sim := startSim(t)
	c := simClient(t, sim)
	ctx := t.Context()
	_, token := sim.CreateRunner(gitlabsim.RunnerOptions{})

	if r := c.RequestJob(ctx, token, "s_1"); r.Status != http.StatusNoContent || r.Err != nil || c.LastUpdate(token) == "" {
		t.Fatalf("empty queue: %+v, last update %q", r, c.LastUpdate(token))
	}
	id := sim.Enqueue(gitlabsim.JobSpec{Name: "build", Script: []string{"true"}})
	sim.SetFaults(gitlabsim.Faults{RateLimit429: 1, Conflict409: 1})
	r := c.RequestJob(ctx, token, "s_1") // 429 with RateLimit-ResetTime is retried inside the call
	if r.Status != http.StatusConflict || !r.Healthy {
		t.Fatalf("want the 409 after the retried 429, got %+v", r)
	}
	r = c.RequestJob(ctx, token, "s_1")
	if r.Status != http.StatusCreated || r.Err != nil || r.Job == nil || r.Job.ID != id || r.Job.Token == "" {
		t.Fatalf("RequestJob = %+v", r)
	}
	jc := gitlab.JobCredentials{ID: r.Job.ID, Token: r.Job.Token}
	if u := c.UpdateJob(ctx, jc, gitlab.UpdateJobInfo{State: gitlab.JobSuccess}); u.State != gitlab.UpdateSucceeded {
		t.Fatalf("UpdateJob = %+v", u)
	}
	if snap, _ := sim.Job(id); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job status = %s", snap.Status)
	}
}

// BenchmarkRequestJobRoundTrip measures POST /jobs/request against gitlabsim over loopback: a 201
// carrying a payload, and the 204 of an unchanged queue.
func BenchmarkRequestJobRoundTrip(b *testing.B) {
	sim := startSim(b)
	c := simClient(b, sim)
	_, token := sim.CreateRunner(gitlabsim.RunnerOptions{})
	ctx := b.Context()
	b.Run("201", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			sim.Enqueue(gitlabsim.JobSpec{Name: "bench", Script: []string{"true"}})
			b.StartTimer()
			if r := c.RequestJob(ctx, token, "s_bench"); r.Status != http.StatusCreated {
				b.Fatalf("RequestJob = %+v", r)
			}
		}
	})
	b.Run("204", func(b *testing.B) {
		for b.Loop() {
			if r := c.RequestJob(ctx, token, "s_bench"); r.Status != http.StatusNoContent {
				b.Fatalf("RequestJob = %+v", r)
			}
		}
	})
}
