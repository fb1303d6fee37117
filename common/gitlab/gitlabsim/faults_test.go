package gitlabsim

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaultRates(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})

	s.SetFaults(Faults{ErrorRate: 1})
	r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": token})
	if r.code < 500 || r.code > 503 {
		t.Fatalf("with ErrorRate 1 verify = %d, want 5xx", r.code)
	}
	if r := do(t, s, "GET", "/sim/jobs", nil); r.code != http.StatusOK {
		t.Fatalf("/sim/ is faulted too: %d", r.code)
	}

	s.SetFaults(Faults{DropRate: 1})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", s.URL()+"/api/v4/runners/verify", strings.NewReader(`{"token":"`+token+`"}`))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_ = resp.Body.Close()
		t.Fatalf("with DropRate 1 got an answer: %d", resp.StatusCode)
	}

	s.SetFaults(Faults{Latency: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "POST", s.URL()+"/api/v4/runners/verify", strings.NewReader(`{"token":"`+token+`"}`))
	if resp, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if resp != nil {
			_ = resp.Body.Close()
		}
		t.Fatalf("with a minute of latency: %v, want the client's deadline", err)
	}

	s.SetFaults(Faults{})
	if r := do(t, s, "POST", "/api/v4/runners/verify", map[string]any{"token": token}); r.code != http.StatusOK {
		t.Fatalf("without faults verify = %d", r.code)
	}
}

func TestRequestFaults(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	s.Enqueue(JobSpec{Name: "a", Script: []string{"true"}})
	s.SetFaults(Faults{RateLimit429: 1, Conflict409: 1})
	r := do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, "", nil))
	reset, err := http.ParseTime(r.header.Get("RateLimit-ResetTime"))
	if r.code != http.StatusTooManyRequests || err != nil || !reset.After(time.Now().Add(-time.Second)) {
		t.Fatalf("first = %d RateLimit-ResetTime %q (%v), want 429 with a future time", r.code, r.header.Get("RateLimit-ResetTime"), err)
	}
	if r := do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, "", nil)); r.code != http.StatusConflict {
		t.Fatalf("second = %d, want 409", r.code)
	}
	takeJob(t, s, token, allFeatures)
}

func TestFinalStateFaults(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	s.SetFaults(Faults{TraceValidation412: 1, FinalState202: 2, RangeMismatch416: 1})
	id := s.Enqueue(JobSpec{Name: "a", Script: []string{"true"}})
	j := takeJob(t, s, token, allFeatures)

	r := patchTrace(t, s, id, j.Token, "0-1", "ok")
	if r.code != http.StatusRequestedRangeNotSatisfiable || r.header.Get("Range") != "0-0" {
		t.Fatalf("first PATCH = %d %q, want 416 0-0", r.code, r.header.Get("Range"))
	}
	if r := patchTrace(t, s, id, j.Token, "0-1", "ok"); r.code != http.StatusAccepted {
		t.Fatalf("second PATCH = %d, want 202", r.code)
	}
	final := map[string]any{"token": j.Token, "state": "success", "output": map[string]any{"checksum": "crc32:47b13d6d", "bytesize": 2}}
	for i, want := range []int{412, 202, 202, 200} {
		r := putJob(t, s, id, final)
		if r.code != want {
			t.Fatalf("final PUT %d = %d, want %d", i+1, r.code, want)
		}
		if want == 202 && r.header.Get("X-GitLab-Trace-Update-Interval") != "1" {
			t.Fatalf("202 without X-GitLab-Trace-Update-Interval: 1")
		}
		if r.header.Get("Job-Status") == "" {
			t.Fatalf("final PUT %d has no Job-Status", i+1)
		}
	}
	if snap, _ := s.Job(id); snap.Status != StatusSuccess || snap.Updates != 4 {
		t.Fatalf("job %s after %d updates", snap.Status, snap.Updates)
	}
}
