package gitlab

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestEndpoint(t *testing.T) {
	tests := []struct{ method, path, want string }{
		{http.MethodPost, "runners", "register_runner"},
		{http.MethodDelete, "runners", "unregister_runner"},
		{http.MethodPost, "runners/verify", "verify_runner"},
		{http.MethodDelete, "runners/managers", "unregister_runner_manager"},
		{http.MethodPost, "runners/reset_authentication_token", "reset_token"},
		{http.MethodPost, "runners/42/reset_authentication_token", "reset_token"},
		{http.MethodPost, "jobs/request", "request_job"},
		{http.MethodPut, "jobs/7", "update_job"},
		{http.MethodPatch, "jobs/7/trace", "patch_trace"},
		{http.MethodGet, "version", "other"},
	}
	for _, tt := range tests {
		if got := Endpoint(tt.method, tt.path); got != tt.want {
			t.Errorf("Endpoint(%s, %s) = %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

func TestOnResponseSeesEveryAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v4/jobs/request":
			w.WriteHeader(http.StatusNoContent)
		case "/api/v4/jobs/5":
			w.Header().Set("Job-Status", "running")
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	var mu sync.Mutex
	seen := map[string]int{}
	c, err := NewClient(logrus.New(), ClientConfig{
		URL:        srv.URL,
		Sleep:      (&sleeps{}).sleep,
		OnResponse: func(ep string, status int) { mu.Lock(); seen[ep] = status; mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	c.RequestJob(t.Context(), "glrt-abcdefgh", "s_0123456789ab")
	c.UpdateJob(t.Context(), JobCredentials{ID: 5, Token: "glcbt-x"}, UpdateJobInfo{State: JobRunning})
	mu.Lock()
	defer mu.Unlock()
	if seen["request_job"] != http.StatusNoContent || seen["update_job"] != http.StatusOK {
		t.Errorf("observed answers = %v", seen)
	}
}
