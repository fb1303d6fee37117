package gitlabsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// FuzzPatchTraceContentRange sends one PATCH /jobs/:id/trace with a fuzzed Content-Range to a job
// whose log already holds prefix, and asserts, as GitLab behaves (spec gitlab-api.md §1.9):
//   - only the start counts: the chunk is appended (202) exactly when the start is the stored size,
//     also when the header's end disagrees with the body; otherwise nothing is stored (416 with
//     `Range: 0-<size>`, or 400 for a header without a number to start from);
//   - a chunk whose end (start + body length, in exact arithmetic) passes the size limit fails the
//     job with 403 before the start is looked at, and stores nothing;
//   - every Range answer is `0-<stored size>`;
//   - a Content-Range written as the runner writes it (`<start>-<start+len-1>`) is accepted, before
//     and after the fuzzed request.
func FuzzPatchTraceContentRange(f *testing.F) {
	f.Add([]byte("hello"), "5-10", []byte(" world"))
	f.Add([]byte("hello"), "5-99", []byte(" world"))
	f.Add([]byte("hello"), "0-4", []byte("hello"))
	f.Add([]byte{}, "3-7", []byte("gap"))
	f.Add([]byte("abc"), "3-1", []byte("inverted"))
	f.Add([]byte("abc"), "-3", []byte("no start"))
	f.Add([]byte("abc"), " 3 -", []byte("spaces"))
	f.Add([]byte("abc"), "+3-3", []byte("sign"))
	f.Add([]byte("abc"), "x-y", []byte("garbage"))
	f.Add([]byte("abc"), "", []byte("missing"))
	f.Add([]byte("abc"), "3", []byte("no dash"))

	// Large enough for the chunks the fuzzer writes, small enough for starts beyond it to be common.
	const limit = 1 << 16
	// One simulator serves many inputs, each with a job of its own: a simulator per input would
	// spend most of the time creating directories and sockets. It is replaced now and then because
	// every job request walks all jobs.
	var s *Server
	var runnerToken string
	jobs := 0
	f.Cleanup(func() {
		if s != nil {
			_ = s.Close()
		}
	})
	f.Fuzz(func(t *testing.T, prefix []byte, contentRange string, body []byte) {
		if len(prefix)+2*len(body) > limit {
			return
		}
		if s == nil || jobs == 200 {
			if s != nil {
				_ = s.Close()
			}
			var err error
			if s, err = New(Options{TraceSizeLimit: limit}); err != nil {
				t.Fatal(err)
			}
			_, runnerToken = s.CreateRunner(RunnerOptions{})
			jobs = 0
		}
		jobs++
		t.Cleanup(func() {
			if t.Failed() { // a job left pending would be handed to the next input
				_ = s.Close()
				s = nil
			}
		})
		serve := s.http.Handler
		id := s.Enqueue(JobSpec{Name: "fuzz", Script: []string{"true"}})
		reqBody, err := json.Marshal(jobRequest(runnerToken, "", allFeatures))
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		serve.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v4/jobs/request", bytes.NewReader(reqBody)))
		j, err := job.Decode(rec.Body.Bytes())
		if rec.Code != http.StatusCreated || err != nil || j.ID != id {
			t.Fatalf("jobs/request = %d %s (%v), want job %d", rec.Code, rec.Body, err, id)
		}
		patch := func(contentRange string, chunk []byte) *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodPatch, fmt.Sprintf("/api/v4/jobs/%d/trace", id), bytes.NewReader(chunk))
			req.Header.Set("JOB-TOKEN", j.Token)
			if contentRange != "" {
				req.Header.Set("Content-Range", contentRange)
			}
			rec := httptest.NewRecorder()
			serve.ServeHTTP(rec, req)
			return rec
		}
		stored := func() int {
			snap, _ := s.Job(id)
			return len(snap.Trace)
		}
		// appendAsRunner sends chunk with the Content-Range the runner writes (common/gitlab PatchTrace).
		appendAsRunner := func(chunk []byte) {
			t.Helper()
			size := stored()
			r := patch(fmt.Sprintf("%d-%d", size, size+len(chunk)-1), chunk)
			if r.Code != http.StatusAccepted || r.Header().Get("Range") != "0-"+strconv.Itoa(size+len(chunk)) || stored() != size+len(chunk) {
				t.Fatalf("runner's PATCH of %d bytes at %d = %d Range %q, stored %d", len(chunk), size, r.Code, r.Header().Get("Range"), stored())
			}
		}

		if len(prefix) > 0 {
			appendAsRunner(prefix)
		}
		size := stored()
		r := patch(contentRange, body)
		after := stored()
		start, startOK := startOf(contentRange)
		if startOK && start > limit-int64(len(body)) {
			if r.Code != http.StatusForbidden || r.Header().Get("Job-Status") != StatusFailed || after != size {
				t.Fatalf("Content-Range %q with %d bytes passes the limit: %d Job-Status %q, stored %d → %d",
					contentRange, len(body), r.Code, r.Header().Get("Job-Status"), size, after)
			}
			return
		}
		switch r.Code {
		case http.StatusAccepted:
			if !startOK || start != int64(size) {
				t.Fatalf("Content-Range %q accepted with %d bytes stored", contentRange, size)
			}
			if after != size+len(body) || r.Header().Get("Range") != "0-"+strconv.Itoa(after) {
				t.Fatalf("Content-Range %q: stored %d bytes after %d+%d, Range %q", contentRange, after, size, len(body), r.Header().Get("Range"))
			}
		case http.StatusRequestedRangeNotSatisfiable:
			if !startOK || start == int64(size) {
				t.Fatalf("Content-Range %q refused with 416 with %d bytes stored", contentRange, size)
			}
			if after != size || r.Header().Get("Range") != "0-"+strconv.Itoa(size) {
				t.Fatalf("416 to %q: stored %d → %d, Range %q", contentRange, size, after, r.Header().Get("Range"))
			}
		case http.StatusBadRequest:
			if startOK || after != size {
				t.Fatalf("Content-Range %q refused with 400 (stored %d → %d)", contentRange, size, after)
			}
		default:
			t.Fatalf("Content-Range %q: %d %s", contentRange, r.Code, r.Body)
		}
		if len(body) > 0 {
			appendAsRunner(body)
		}
	})
}

// startOf is the start of a Content-Range: the decimal number before the first dash (or the whole
// value without one), surrounding spaces allowed. GitLab reads nothing else from the header.
func startOf(contentRange string) (int64, bool) {
	text, _, _ := strings.Cut(contentRange, "-")
	n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
	return n, err == nil
}
