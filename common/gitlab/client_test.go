package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// sleeps records the client's waits instead of waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) take() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.d
	s.d = nil
	return d
}

// testClient starts h on a loopback server and returns a client for it whose logs go to logBuf.
func testClient(t *testing.T, h http.HandlerFunc) (*Client, *sleeps, *bytes.Buffer) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	sl := &sleeps{}
	logBuf := &bytes.Buffer{}
	log := logrus.New()
	log.Out = logBuf
	log.Level = logrus.DebugLevel
	c, err := NewClient(log, ClientConfig{URL: srv.URL + "/ci/", Info: NewVersionInfo("docker-autoscaler", "bash", map[string]bool{"variables": true, "two_phase_job_commit": true}), Sleep: sl.sleep})
	if err != nil {
		t.Fatal(err)
	}
	return c, sl, logBuf
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestAPIBase(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "https://gitlab.example.com", want: "https://gitlab.example.com/api/v4/"},
		{in: "https://gitlab.example.com/", want: "https://gitlab.example.com/api/v4/"},
		{in: "https://gitlab.example.com/ci", want: "https://gitlab.example.com/api/v4/"},
		{in: "https://gitlab.example.com/ci/", want: "https://gitlab.example.com/api/v4/"},
		{in: "http://127.0.0.1:8080/gitlab/", want: "http://127.0.0.1:8080/gitlab/api/v4/"},
		{in: "ftp://gitlab.example.com", err: "scheme must be http or https"},
		{in: "gitlab.example.com", err: "scheme must be http or https"},
		{in: "https://", err: "has no host"},
	}
	for _, tc := range tests {
		u, err := apiBase(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("apiBase(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || u.String() != tc.want {
			t.Errorf("apiBase(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
}

func TestVersionInfoFeatures(t *testing.T) {
	i := NewVersionInfo("docker-autoscaler", "bash", map[string]bool{"artifacts": true, "two_phase_job_commit": true})
	for _, f := range []string{"artifacts", "trace_reset", "trace_checksum", "trace_size", "cancelable", "cancel_gracefully"} {
		if !i.Features[f] {
			t.Errorf("feature %s missing", f)
		}
	}
	if _, ok := i.Features["two_phase_job_commit"]; ok {
		t.Error("two_phase_job_commit must never be declared")
	}
	if i.Executor != "docker-autoscaler" || i.Shell != "bash" || i.Platform == "" || i.Architecture == "" {
		t.Errorf("info = %+v", i)
	}
}

func TestRequestHeaders(t *testing.T) {
	type seen struct {
		method, path, query string
		h                   http.Header
		body                map[string]any
	}
	var mu sync.Mutex
	var calls []seen
	c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(b, &body)
		mu.Lock()
		calls = append(calls, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		mu.Unlock()
		switch {
		case r.URL.Path == "/api/v4/runners/verify":
			writeJSON(w, 200, map[string]any{"id": 1, "token": "glrt-abcdefghij", "token_expires_at": nil})
		case r.URL.Path == "/api/v4/jobs/request":
			w.WriteHeader(204)
		case r.URL.Path == "/api/v4/jobs/5" && r.Method == http.MethodPut:
			w.WriteHeader(200)
		case r.URL.Path == "/api/v4/jobs/5/trace":
			w.Header().Set("Range", "0-3")
			w.WriteHeader(202)
		case strings.HasSuffix(r.URL.Path, "/reset_authentication_token"):
			writeJSON(w, 201, map[string]any{"token": "glrt-new", "token_expires_at": "2030-01-02T03:04:05Z"})
		}
	})
	ctx := t.Context()
	if _, err := c.VerifyRunner(ctx, "glrt-abcdefghij", "s_0123"); err != nil {
		t.Fatal(err)
	}
	if r := c.RequestJob(ctx, "glrt-abcdefghij", "s_0123"); r.Status != 204 || r.Err != nil || !r.Healthy {
		t.Fatalf("RequestJob = %+v", r)
	}
	jc := JobCredentials{ID: 5, Token: "glcbt-jobtoken"}
	if r := c.UpdateJob(ctx, jc, UpdateJobInfo{State: JobFailed, FailureReason: job.ScriptFailure, ExitCode: 2, Output: JobOutput{Checksum: "crc32:00000001", Bytesize: 4}}); r.State != UpdateSucceeded {
		t.Fatalf("UpdateJob = %+v", r)
	}
	if r := c.PatchTrace(ctx, jc, []byte("abcd"), 0, true); r.State != PatchSucceeded || r.SentOffset != 4 {
		t.Fatalf("PatchTrace = %+v", r)
	}
	tr, err := c.ResetTokenWithPAT(ctx, 9, "glpat-secretsecret")
	if err != nil || tr.Token != "glrt-new" || tr.TokenExpiresAt.Year() != 2030 {
		t.Fatalf("ResetTokenWithPAT = %+v, %v", tr, err)
	}

	reqID := regexp.MustCompile(`^[0-9a-f]{32}$`)
	ua := regexp.MustCompile(`^fleetrunner \S+ \(\S+; go\S+; \w+/\w+\)$`)
	for _, s := range calls {
		if !reqID.MatchString(s.h.Get("X-Request-Id")) {
			t.Errorf("%s %s: X-Request-Id %q", s.method, s.path, s.h.Get("X-Request-Id"))
		}
		if !ua.MatchString(s.h.Get("User-Agent")) {
			t.Errorf("%s %s: User-Agent %q", s.method, s.path, s.h.Get("User-Agent"))
		}
	}
	verify, request, put, patch, reset := calls[0], calls[1], calls[2], calls[3], calls[4]
	for _, s := range []seen{verify, request} {
		if s.h.Get("Runner-Token") != "glrt-abcdefghij" || s.body["token"] != "glrt-abcdefghij" || s.body["system_id"] != "s_0123" {
			t.Errorf("%s: runner token/system_id not sent in header and body: %v %v", s.path, s.h, s.body)
		}
		if s.h.Get("Accept") != "application/json" || s.h.Get("Content-Type") != "application/json" {
			t.Errorf("%s: Accept/Content-Type = %q/%q", s.path, s.h.Get("Accept"), s.h.Get("Content-Type"))
		}
	}
	info, _ := request.body["info"].(map[string]any)
	features, _ := info["features"].(map[string]any)
	if info["name"] != "fleetrunner" || features["cancel_gracefully"] != true || features["variables"] != true || features["two_phase_job_commit"] != nil {
		t.Errorf("job request info = %v", info)
	}
	if put.h.Get("Job-Token") != "glcbt-jobtoken" || put.body["token"] != "glcbt-jobtoken" || put.body["state"] != "failed" ||
		put.body["failure_reason"] != "script_failure" || put.body["exit_code"] != float64(2) || put.body["checksum"] != "crc32:00000001" {
		t.Errorf("PUT = %v %v", put.h, put.body)
	}
	if out, _ := put.body["output"].(map[string]any); out["checksum"] != "crc32:00000001" || out["bytesize"] != float64(4) {
		t.Errorf("PUT output = %v", put.body["output"])
	}
	if patch.method != http.MethodPatch || patch.h.Get("Content-Range") != "0-3" || patch.h.Get("Content-Type") != "text/plain" ||
		patch.h.Get("Job-Token") != "glcbt-jobtoken" || patch.query != "debug_trace=true" {
		t.Errorf("PATCH = %s %v %s", patch.method, patch.h, patch.query)
	}
	if reset.path != "/api/v4/runners/9/reset_authentication_token" || reset.h.Get("Private-Token") != "glpat-secretsecret" {
		t.Errorf("PAT reset = %s %v", reset.path, reset.h)
	}
}

func TestVerifyRunnerAnswers(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		ctype     string
		body      string
		wantToken string
		wantErr   error
	}{
		{"json", 200, "application/json", `{"id":3,"token":"glrt-x","token_expires_at":null}`, "glrt-x", nil},
		{"legacy plain text", 200, "text/plain", "200", "glrt-given", nil},
		{"revoked", 403, "application/json", `{"message":"403 Forbidden"}`, "", ErrForbidden},
		{"orphaned", 422, "application/json", `{"message":"orphaned"}`, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			tr, err := c.VerifyRunner(t.Context(), "glrt-given", "")
			switch {
			case tc.status == 200 && (err != nil || tr.Token != tc.wantToken || !tr.TokenExpiresAt.IsZero()):
				t.Fatalf("VerifyRunner = %+v, %v", tr, err)
			case tc.status != 200 && err == nil:
				t.Fatal("expected an error")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			case tc.status == 422 && errors.Is(err, ErrForbidden):
				t.Fatalf("422 must not read as a revoked token: %v", err)
			}
		})
	}
}

func TestJSONOnlyWithExactMediaType(t *testing.T) {
	c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(201)
		_, _ = io.WriteString(w, `{"id":1,"token":"glrt-x"}`)
	})
	if _, err := c.RegisterRunner(t.Context(), RegisterRequest{Token: "GR1348941reg"}); err == nil || !strings.Contains(err.Error(), "not application/json") {
		t.Fatalf("err = %v, want a content-type error", err)
	}
}

func TestRegisterErrors(t *testing.T) {
	tests := []struct {
		status  int
		body    string
		wantIs  error
		wantMsg string
	}{
		{403, `{"message":"403 Forbidden"}`, ErrForbidden, "registration token was not accepted"},
		{410, `{"message":"runner registration disallowed"}`, ErrGone, "registration tokens disabled"},
		{400, `{"message":{"runner_projects.base":["Maximum number of ci registered project runners (1) exceeded"]}}`, nil,
			"runner_projects.base: Maximum number of ci registered project runners (1) exceeded"},
	}
	for _, tc := range tests {
		c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(tc.status)
			_, _ = io.WriteString(w, tc.body)
		})
		_, err := c.RegisterRunner(t.Context(), RegisterRequest{Token: "GR1348941reg", Tags: []string{"a", "b"}})
		if err == nil || !strings.Contains(err.Error(), tc.wantMsg) || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) {
			t.Errorf("status %d: err = %v", tc.status, err)
		}
	}
}

func TestErrorMessageFlattening(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"message":"403 Forbidden"}`, "403 Forbidden"},
		{`{"message":{"b":["x","y"],"a":["z"]}}`, "a: z; b: x; y"},
		{`{"error":"token is missing"}`, "token is missing"},
		{`not json`, ""},
	}
	for _, tc := range tests {
		if got := errorMessage([]byte(tc.in)); got != tc.want {
			t.Errorf("errorMessage(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLastUpdatePerRunnerToken(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]any{}
	c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		tok := body["token"].(string)
		mu.Lock()
		got[tok] = append(got[tok], body["last_update"])
		n := len(got[tok])
		mu.Unlock()
		if tok == "glrt-a" && n == 1 {
			w.Header().Set("X-GitLab-Last-Update", "queue-1")
		}
		w.WriteHeader(204)
	})
	for _, tok := range []string{"glrt-a", "glrt-b", "glrt-a", "glrt-a"} {
		c.RequestJob(t.Context(), tok, "")
	}
	// The third call's 204 had no header (as from Workhorse): the stored value is kept.
	want := map[string][]any{"glrt-a": {nil, "queue-1", "queue-1"}, "glrt-b": {nil}}
	for tok, w := range want {
		if len(got[tok]) != len(w) {
			t.Fatalf("%s: last_update sent %v, want %v", tok, got[tok], w)
		}
		for i := range w {
			if got[tok][i] != w[i] {
				t.Fatalf("%s: last_update sent %v, want %v", tok, got[tok], w)
			}
		}
	}
}

func TestBackoffPerEndpoint(t *testing.T) {
	var mu sync.Mutex
	status := 500
	c, sl, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
	})
	ctx := t.Context()
	jc := JobCredentials{ID: 1, Token: "glcbt-t"}
	for range 3 {
		c.UpdateJob(ctx, jc, UpdateJobInfo{State: JobRunning})
	}
	c.PatchTrace(ctx, jc, []byte("x"), 0, false) // another endpoint: its own back-off
	d := sl.take()
	bounds := [][2]time.Duration{{50, 100}, {100, 200}, {200, 400}, {50, 100}}
	if len(d) != len(bounds) {
		t.Fatalf("sleeps = %v", d)
	}
	for i, b := range bounds {
		if d[i] < b[0]*time.Millisecond || d[i] > b[1]*time.Millisecond {
			t.Errorf("sleep %d = %v, want within [%dms, %dms]", i, d[i], b[0], b[1])
		}
	}
	mu.Lock()
	status = 200
	mu.Unlock()
	c.UpdateJob(ctx, jc, UpdateJobInfo{State: JobRunning})
	mu.Lock()
	status = 500
	mu.Unlock()
	c.UpdateJob(ctx, jc, UpdateJobInfo{State: JobRunning})
	if d := sl.take(); len(d) != 1 || d[0] > 100*time.Millisecond {
		t.Fatalf("after a success the back-off must restart at 100 ms, sleeps = %v", d)
	}
	for range 20 {
		c.UpdateJob(ctx, jc, UpdateJobInfo{State: JobRunning})
	}
	for _, d := range sl.take() {
		if d > 60*time.Second {
			t.Fatalf("back-off %v exceeds 60 s", d)
		}
	}
}

func TestRateLimit429(t *testing.T) {
	tests := []struct {
		name      string
		reset     string
		wantCalls int
		wantSleep time.Duration // per retry, approximately
	}{
		{"reset time honoured, 5 retries", time.Now().Add(30 * time.Second).UTC().Format(time.RFC1123), 6, 30 * time.Second},
		{"unparsable: one minute", "soon", 6, time.Minute},
		{"no header: returned at once", "", 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			calls := 0
			c, sl, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				mu.Unlock()
				if tc.reset != "" {
					w.Header().Set("RateLimit-ResetTime", tc.reset)
				}
				w.WriteHeader(429)
			})
			r := c.RequestJob(t.Context(), "glrt-x", "")
			if r.Status != 429 || !r.Healthy || r.Err == nil {
				t.Fatalf("RequestJob = %+v", r)
			}
			if calls != tc.wantCalls {
				t.Fatalf("%d calls, want %d", calls, tc.wantCalls)
			}
			d := sl.take()
			// the rate-limit waits, then one back-off wait for the final error status
			if len(d) != tc.wantCalls {
				t.Fatalf("sleeps = %v", d)
			}
			for _, w := range d[:len(d)-1] {
				if w > tc.wantSleep || w < tc.wantSleep-2*time.Second {
					t.Errorf("rate-limit wait %v, want about %v", w, tc.wantSleep)
				}
			}
		})
	}
}

func TestRequestJobClassification(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		body        string
		wantHealthy bool
		wantJob     bool
		wantErr     bool
	}{
		{"job", 201, `{"id":42,"token":"glcbt-j","job_info":{"name":"build"},"unknown_key":{"x":1}}`, true, true, false},
		{"malformed payload with id", 201, `{"id":43,"token":"glcbt-j","steps":"not a list"}`, true, true, true},
		{"malformed payload without id", 201, `{"id":`, true, false, true},
		{"no job", 204, "", true, false, false},
		{"forbidden", 403, `{"message":"403 Forbidden"}`, false, false, true},
		{"conflict", 409, "", true, false, true},
		{"unavailable", 503, "", true, false, true},
		{"other", 500, "", true, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			r := c.RequestJob(t.Context(), "glrt-x", "")
			if r.Status != tc.status || r.Healthy != tc.wantHealthy || (r.Job != nil) != tc.wantJob || (r.Err != nil) != tc.wantErr {
				t.Fatalf("RequestJob = %+v", r)
			}
			if r.Job != nil && (r.Job.ID == 0 || r.Job.Token != "glcbt-j") {
				t.Fatalf("job = %+v", r.Job)
			}
		})
	}
	t.Run("transport error", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		c, err := NewClient(logrus.New(), ClientConfig{URL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		if r := c.RequestJob(t.Context(), "glrt-x", ""); r.Healthy || r.Status != StatusTransportError || r.Err == nil {
			t.Fatalf("RequestJob = %+v", r)
		}
	})
}

func TestUpdateAndPatchClassification(t *testing.T) {
	tests := []struct {
		status     int
		jobStatus  string
		rangeHdr   string
		wantUpdate UpdateState
		wantPatch  PatchState
		wantCancel bool
	}{
		{200, "running", "", UpdateSucceeded, PatchFailed, false},
		{202, "canceling", "0-10", UpdateAcceptedButNotCompleted, PatchSucceeded, true},
		{200, "canceled", "", UpdateAbort, PatchAbort, false},
		{202, "failed", "0-10", UpdateAbort, PatchAbort, false},
		{403, "", "", UpdateAbort, PatchAbort, false},
		{404, "", "", UpdateNotFound, PatchNotFound, false},
		{412, "", "", UpdateTraceValidationFailed, PatchFailed, false},
		{416, "", "0-2", UpdateFailed, PatchRangeMismatch, false},
		{500, "", "", UpdateFailed, PatchFailed, false},
	}
	for _, tc := range tests {
		c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
			if tc.jobStatus != "" {
				w.Header().Set("Job-Status", tc.jobStatus)
			}
			if tc.rangeHdr != "" {
				w.Header().Set("Range", tc.rangeHdr)
			}
			w.Header().Set("X-GitLab-Trace-Update-Interval", "99999")
			w.WriteHeader(tc.status)
		})
		jc := JobCredentials{ID: 3, Token: "glcbt-t"}
		u := c.UpdateJob(t.Context(), jc, UpdateJobInfo{State: JobRunning})
		if u.State != tc.wantUpdate || u.CancelRequested != tc.wantCancel || u.NewUpdateInterval != 15*time.Minute {
			t.Errorf("%d %s: UpdateJob = %+v", tc.status, tc.jobStatus, u)
		}
		p := c.PatchTrace(t.Context(), jc, []byte("abcdefghij"), 0, false)
		if p.State != tc.wantPatch || p.CancelRequested != tc.wantCancel {
			t.Errorf("%d %s: PatchTrace = %+v", tc.status, tc.jobStatus, p)
		}
		if tc.status == 416 && p.SentOffset != 2 {
			t.Errorf("416: SentOffset = %d, want 2", p.SentOffset)
		}
		if tc.status == 202 && tc.wantPatch == PatchSucceeded && p.SentOffset != 10 {
			t.Errorf("202: SentOffset = %d, want 10", p.SentOffset)
		}
	}
}

func TestFinalStateAcceptedDespiteJobStatus(t *testing.T) {
	c, _, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Job-Status", "canceled") // canceling -> canceled by our final PUT
		w.WriteHeader(200)
	})
	u := c.UpdateJob(t.Context(), JobCredentials{ID: 1, Token: "glcbt-t"}, UpdateJobInfo{State: JobFailed, FailureReason: job.UnknownFailure})
	if u.State != UpdateSucceeded {
		t.Fatalf("a 200 to a final state must count as applied, got %+v", u)
	}
}

func TestTLSCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"id": 1, "token": "glrt-x"})
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	without, err := NewClient(logrus.New(), ClientConfig{URL: srv.URL, Sleep: (&sleeps{}).sleep})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := without.VerifyRunner(t.Context(), "glrt-x", ""); err == nil {
		t.Fatal("an unknown CA must be refused")
	}
	with, err := NewClient(logrus.New(), ClientConfig{URL: srv.URL, TLSCAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := with.VerifyRunner(t.Context(), "glrt-x", ""); err != nil {
		t.Fatalf("with tls-ca-file: %v", err)
	}
	if _, err := NewClient(logrus.New(), ClientConfig{URL: srv.URL, TLSCertFile: ca}); err == nil {
		t.Fatal("a cert without a key must be refused")
	}
	if _, err := NewClient(logrus.New(), ClientConfig{URL: srv.URL, TLSCAFile: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("a missing CA file must be refused")
	}
}

func TestTokensNeverLogged(t *testing.T) {
	c, _, logBuf := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(403)
		_, _ = io.WriteString(w, `{"message":"403 Forbidden"}`)
	})
	ctx := t.Context()
	const runnerTok, jobTok, pat = "glrt-SECRETrunner123", "glcbt-SECRETjob456", "glpat-SECRETpat789"
	r := c.RequestJob(ctx, runnerTok, "s_1")
	_, err1 := c.VerifyRunner(ctx, runnerTok, "s_1")
	_, err2 := c.ResetTokenWithPAT(ctx, 1, pat)
	c.UpdateJob(ctx, JobCredentials{ID: 1, Token: jobTok}, UpdateJobInfo{State: JobRunning})
	c.PatchTrace(ctx, JobCredentials{ID: 1, Token: jobTok}, []byte("x"), 0, false)
	text := logBuf.String() + r.Err.Error() + err1.Error() + err2.Error()
	if strings.Contains(text, "SECRET") {
		t.Fatalf("a token reached the log or an error: %s", text)
	}
	if !strings.Contains(logBuf.String(), "status=403") {
		t.Fatalf("expected debug log lines, got %q", logBuf.String())
	}
}
