package gitlabsim

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestPatchTrace(t *testing.T) {
	s := newSim(t, Options{TraceUpdateInterval: 7})
	_, token := s.CreateRunner(RunnerOptions{})
	id := s.Enqueue(JobSpec{Name: "a", Script: []string{"true"}})
	j := takeJob(t, s, token, allFeatures)

	tests := []struct {
		name, token, contentRange, data string
		want                            int
		wantRange, wantStatus           string
	}{
		{"wrong token", "glcbt-nope", "0-4", "hello", http.StatusForbidden, "", ""},
		{"no Content-Range", j.Token, "", "hello", http.StatusBadRequest, "", ""},
		{"garbage Content-Range", j.Token, "x-y", "hello", http.StatusBadRequest, "", ""},
		{"gap", j.Token, "3-7", "hello", http.StatusRequestedRangeNotSatisfiable, "0-0", ""},
		{"first chunk", j.Token, "0-4", "hello", http.StatusAccepted, "0-5", "running"},
		{"repeat of the first chunk", j.Token, "0-4", "hello", http.StatusRequestedRangeNotSatisfiable, "0-5", ""},
		{"end in the header is ignored", j.Token, "5-99", " world", http.StatusAccepted, "0-11", "running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := patchTrace(t, s, id, tt.token, tt.contentRange, tt.data)
			if r.code != tt.want || r.header.Get("Range") != tt.wantRange || r.header.Get("Job-Status") != tt.wantStatus {
				t.Fatalf("PATCH = %d Range %q Job-Status %q (%s), want %d %q %q", r.code, r.header.Get("Range"),
					r.header.Get("Job-Status"), r.body, tt.want, tt.wantRange, tt.wantStatus)
			}
			if r.code == http.StatusAccepted && r.header.Get("X-GitLab-Trace-Update-Interval") != "7" {
				t.Fatalf("X-GitLab-Trace-Update-Interval = %q, want 7", r.header.Get("X-GitLab-Trace-Update-Interval"))
			}
		})
	}
	if snap, _ := s.Job(id); string(snap.Trace) != "hello world" {
		t.Fatalf("trace %q", snap.Trace)
	}
	putJob(t, s, id, map[string]any{"token": j.Token, "state": "success"})
	r := patchTrace(t, s, id, j.Token, "11-11", "!")
	if r.code != http.StatusForbidden || r.header.Get("Job-Status") != "success" {
		t.Fatalf("PATCH after the end = %d %q, want 403 success", r.code, r.header.Get("Job-Status"))
	}
}

func TestTraceSizeLimit(t *testing.T) {
	s := newSim(t, Options{TraceSizeLimit: 8})
	_, token := s.CreateRunner(RunnerOptions{})
	id := s.Enqueue(JobSpec{Name: "a", Script: []string{"true"}})
	j := takeJob(t, s, token, allFeatures)
	if r := patchTrace(t, s, id, j.Token, "0-7", "12345678"); r.code != http.StatusAccepted {
		t.Fatalf("PATCH up to the limit = %d", r.code)
	}
	r := patchTrace(t, s, id, j.Token, "8-8", "9")
	if r.code != http.StatusForbidden || r.header.Get("Job-Status") != StatusFailed {
		t.Fatalf("PATCH over the limit = %d %q, want 403 failed", r.code, r.header.Get("Job-Status"))
	}
	if snap, _ := s.Job(id); snap.FailureReason != "trace_size_exceeded" || string(snap.Trace) != "12345678" {
		t.Fatalf("job %s/%s trace %q", snap.Status, snap.FailureReason, snap.Trace)
	}
}

// GitLab checks the size limit before the offset: an oversized chunk at a wrong offset still fails
// the job (AppendBuildTraceService).
func TestTraceSizeLimitBeforeRange(t *testing.T) {
	s := newSim(t, Options{TraceSizeLimit: 8})
	_, token := s.CreateRunner(RunnerOptions{})
	id := s.Enqueue(JobSpec{Name: "a", Script: []string{"true"}})
	j := takeJob(t, s, token, allFeatures)
	r := patchTrace(t, s, id, j.Token, "3-11", "123456789")
	if r.code != http.StatusForbidden {
		t.Fatalf("oversized PATCH at a wrong offset = %d, want 403", r.code)
	}
	if snap, _ := s.Job(id); snap.Status != StatusFailed || snap.FailureReason != "trace_size_exceeded" {
		t.Fatalf("job %s/%s, want failed/trace_size_exceeded", snap.Status, snap.FailureReason)
	}
}

// GitLab hides the job token and the registration token in each appended chunk with as many x
// characters, so offsets stay valid (Ci::Build#hide_secrets).
func TestTraceHidesTokensServerSide(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	id := s.Enqueue(JobSpec{Name: "a", Script: []string{"true"}})
	j := takeJob(t, s, token, allFeatures)
	chunk := "job " + j.Token + " reg " + s.RegistrationToken() + "\n"
	r := patchTrace(t, s, id, j.Token, "0-"+strconv.Itoa(len(chunk)-1), chunk)
	if r.code != http.StatusAccepted || r.header.Get("Range") != "0-"+strconv.Itoa(len(chunk)) {
		t.Fatalf("PATCH = %d Range %q", r.code, r.header.Get("Range"))
	}
	want := "job " + strings.Repeat("x", len(j.Token)) + " reg " + strings.Repeat("x", len(s.RegistrationToken())) + "\n"
	if snap, _ := s.Job(id); string(snap.Trace) != want {
		t.Fatalf("stored %q, want %q", snap.Trace, want)
	}
}
