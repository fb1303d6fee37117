package gitlabsim

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRegisterLegacy(t *testing.T) {
	s := newSim(t, Options{})
	tests := []struct {
		name string
		body map[string]any
		want int
	}{
		{"registration token", map[string]any{"token": s.RegistrationToken(), "description": "r", "paused": false}, http.StatusCreated},
		{"unknown token", map[string]any{"token": "GR1348941nope"}, http.StatusForbidden},
		{"runner token is not a registration token", map[string]any{"token": "glrt-x"}, http.StatusForbidden},
		{"paused and active together", map[string]any{"token": s.RegistrationToken(), "paused": true, "active": true}, http.StatusBadRequest},
		{"no token", map[string]any{}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, s, "POST", "/api/v4/runners", tt.body)
			if r.code != tt.want {
				t.Fatalf("status %d (%s), want %d", r.code, r.body, tt.want)
			}
			if r.code != http.StatusCreated {
				return
			}
			var a struct {
				ID             int64   `json:"id"`
				Token          string  `json:"token"`
				TokenExpiresAt *string `json:"token_expires_at"`
			}
			r.decode(t, &a)
			if a.ID == 0 || !strings.HasPrefix(a.Token, "glrtr-") || a.TokenExpiresAt != nil {
				t.Fatalf("answer %+v: want an id, a glrtr- token and token_expires_at null", a)
			}
			if v := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": a.Token}); v.code != http.StatusOK {
				t.Fatalf("verify of the registered token = %d", v.code)
			}
		})
	}
}

func TestVerifyAndManagers(t *testing.T) {
	s := newSim(t, Options{})
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	id, token := s.CreateRunner(RunnerOptions{Description: "ui", TokenExpiresAt: &exp})
	if !strings.HasPrefix(token, "glrt-") {
		t.Fatalf("CreateRunner token %q lacks glrt-", token)
	}
	r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": token, "system_id": "s_aaa"})
	var a struct {
		ID             int64  `json:"id"`
		Token          string `json:"token"`
		TokenExpiresAt string `json:"token_expires_at"`
	}
	r.decode(t, &a)
	if r.code != http.StatusOK || a.ID != id || a.Token != token || a.TokenExpiresAt != exp.Format(time.RFC3339) {
		t.Fatalf("verify = %d %+v", r.code, a)
	}
	do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": token, "system_id": "s_bbb"})
	if got := s.RunnerManagers(id); !slices.Equal(got, []string{"s_aaa", "s_bbb"}) {
		t.Fatalf("RunnerManagers = %v", got)
	}
	if r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": "glrt-unknown"}); r.code != http.StatusForbidden {
		t.Fatalf("verify unknown = %d, want 403", r.code)
	}
	if r := do(t, s, "POST", "/api/v4/runners/verify", nil, "Runner-Token", token); r.code != http.StatusForbidden {
		t.Fatalf("verify with the token only in a header = %d, want 403 (GitLab reads params[:token])", r.code)
	}

	for _, tt := range []struct {
		name string
		body map[string]any
		want int
	}{
		{"missing system_id", map[string]any{"token": token}, http.StatusBadRequest},
		{"bad token", map[string]any{"token": "glrt-nope", "system_id": "s_aaa"}, http.StatusForbidden},
		{"unknown manager", map[string]any{"token": token, "system_id": "s_zzz"}, http.StatusNotFound},
		{"known manager", map[string]any{"token": token, "system_id": "s_aaa"}, http.StatusNoContent},
		{"already deleted", map[string]any{"token": token, "system_id": "s_aaa"}, http.StatusNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r := do(t, s, "DELETE", "/api/v4/runners/managers", tt.body); r.code != tt.want {
				t.Fatalf("DELETE /runners/managers = %d (%s), want %d", r.code, r.body, tt.want)
			}
		})
	}
	if got := s.RunnerManagers(id); !slices.Equal(got, []string{"s_bbb"}) {
		t.Fatalf("after deleting s_aaa RunnerManagers = %v", got)
	}

	if r := do(t, s, "DELETE", "/api/v4/runners", map[string]any{"token": "glrt-nope"}); r.code != http.StatusForbidden {
		t.Fatalf("unregister bad token = %d, want 403", r.code)
	}
	if r := do(t, s, "DELETE", "/api/v4/runners", map[string]any{"token": token}); r.code != http.StatusNoContent {
		t.Fatalf("unregister = %d, want 204", r.code)
	}
	if r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": token}); r.code != http.StatusForbidden {
		t.Fatalf("verify after unregister = %d, want 403", r.code)
	}
}

func TestExpiredAndRevokedTokens(t *testing.T) {
	s := newSim(t, Options{})
	past := time.Now().Add(-time.Minute)
	_, expired := s.CreateRunner(RunnerOptions{TokenExpiresAt: &past})
	_, revoked := s.CreateRunner(RunnerOptions{})
	s.RevokeRunner(revoked)
	for _, tok := range []string{expired, revoked} {
		if r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": tok}); r.code != http.StatusForbidden {
			t.Errorf("verify = %d, want 403", r.code)
		}
		if r := do(t, s, "POST", "/api/v4/jobs/request", jobRequest(tok, "", nil)); r.code != http.StatusForbidden {
			t.Errorf("jobs/request = %d, want 403", r.code)
		}
	}
}

func TestResetToken(t *testing.T) {
	s := newSim(t, Options{})
	id, token := s.CreateRunner(RunnerOptions{})
	if r := do(t, s, "POST", "/api/v4/runners/reset_authentication_token", map[string]any{"token": "glrt-nope"}); r.code != http.StatusForbidden {
		t.Fatalf("reset with bad token = %d, want 403", r.code)
	}
	r := do(t, s, "POST", "/api/v4/runners/reset_authentication_token", map[string]any{"token": token})
	var a map[string]any
	r.decode(t, &a)
	newToken, _ := a["token"].(string)
	if r.code != http.StatusCreated || !strings.HasPrefix(newToken, "glrt-") || newToken == token {
		t.Fatalf("reset = %d %v", r.code, a)
	}
	if v, ok := a["token_expires_at"]; !ok || v != nil {
		t.Fatalf("token_expires_at = %v (present %v), want null", v, ok)
	}
	if r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": token}); r.code != http.StatusForbidden {
		t.Fatalf("old token still valid: %d", r.code)
	}
	if r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": newToken}); r.code != http.StatusOK {
		t.Fatalf("new token refused: %d", r.code)
	}

	path := "/api/v4/runners/" + itoa(id) + "/reset_authentication_token"
	for _, tt := range []struct {
		name, path string
		hdr        []string
		want       int
	}{
		{"no PAT", path, nil, http.StatusUnauthorized},
		{"wrong PAT", path, []string{"PRIVATE-TOKEN", "glpat-nope"}, http.StatusUnauthorized},
		{"unknown runner", "/api/v4/runners/999/reset_authentication_token", []string{"PRIVATE-TOKEN", s.PersonalAccessToken()}, http.StatusNotFound},
		{"admin PAT", path, []string{"PRIVATE-TOKEN", s.PersonalAccessToken()}, http.StatusCreated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r := do(t, s, "POST", tt.path, nil, tt.hdr...); r.code != tt.want {
				t.Fatalf("status %d (%s), want %d", r.code, r.body, tt.want)
			}
		})
	}
	if r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": newToken}); r.code != http.StatusForbidden {
		t.Fatalf("token before the PAT reset still valid: %d", r.code)
	}
}
