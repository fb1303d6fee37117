package gitlabsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

func newSim(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type result struct {
	code   int
	header http.Header
	body   []byte
}

func (r result) decode(t *testing.T, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json (body %s)", ct, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends one request; body is a string/[]byte sent as is, or a value sent as JSON.
// hdr holds header name/value pairs.
func do(t *testing.T, s *Server, method, path string, body any, hdr ...string) result {
	t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ctype = bytes.NewBufferString(b), "text/plain"
	case []byte:
		rd, ctype = bytes.NewReader(b), "text/plain"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, ctype = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("%s %s: no X-Request-Id in the answer", method, path)
	}
	return result{code: resp.StatusCode, header: resp.Header, body: data}
}

// allFeatures is what a full runner declares.
var allFeatures = map[string]bool{
	"variables": true, "artifacts": true, "upload_multiple_artifacts": true, "artifacts_exclude": true,
	"fallback_cache_keys": true, "refspecs": true, "masking": true, "trace_reset": true, "trace_checksum": true,
	"trace_size": true, "cancelable": true, "cancel_gracefully": true,
}

func jobRequest(token, lastUpdate string, features map[string]bool) map[string]any {
	req := map[string]any{"token": token, "system_id": "s_0123456789ab",
		"info": map[string]any{"name": "gitlab-runner", "features": features}}
	if lastUpdate != "" {
		req["last_update"] = lastUpdate
	}
	return req
}

// takeJob enqueues nothing; it asks for a job and fails unless one is handed out.
func takeJob(t *testing.T, s *Server, token string, features map[string]bool) *job.Job {
	t.Helper()
	r := do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, "", features))
	if r.code != http.StatusCreated {
		t.Fatalf("jobs/request = %d %s, want 201", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("payload Content-Type = %q", ct)
	}
	j, err := job.Decode(r.body)
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	return j
}

func putJob(t *testing.T, s *Server, id int64, body map[string]any, hdr ...string) result {
	t.Helper()
	return do(t, s, "PUT", "/api/v4/jobs/"+itoa(id), body, hdr...)
}

func patchTrace(t *testing.T, s *Server, id int64, token, contentRange, data string) result {
	t.Helper()
	hdr := []string{"JOB-TOKEN", token}
	if contentRange != "" {
		hdr = append(hdr, "Content-Range", contentRange)
	}
	return do(t, s, "PATCH", "/api/v4/jobs/"+itoa(id)+"/trace?debug_trace=false", data, hdr...)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
