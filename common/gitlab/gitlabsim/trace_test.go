package gitlabsim

import (
	"net/http"
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
