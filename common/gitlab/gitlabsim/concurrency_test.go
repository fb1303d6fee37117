package gitlabsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// worker is a minimal runner loop over plain HTTP: ask, log one line, succeed. It returns how many
// jobs it ran, or the first protocol surprise.
func worker(s *Server, token string) (int, error) {
	post := func(method, path string, body any, hdr ...string) (*http.Response, []byte, error) {
		var rd io.Reader
		if b, ok := body.(string); ok {
			rd = bytes.NewBufferString(b)
		} else {
			data, _ := json.Marshal(body)
			rd = bytes.NewReader(data)
		}
		req, _ := http.NewRequest(method, s.URL()+path, rd)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer func() { _ = resp.Body.Close() }()
		data, err := io.ReadAll(resp.Body)
		return resp, data, err
	}
	n := 0
	for {
		resp, data, err := post("POST", "/api/v4/jobs/request", jobRequest(token, "", allFeatures))
		if err != nil {
			return n, err
		}
		if resp.StatusCode == http.StatusNoContent {
			return n, nil
		}
		j, err := job.Decode(data)
		if err != nil {
			return n, err
		}
		line := fmt.Sprintf("job %d\n", j.ID)
		id := strconv.FormatInt(j.ID, 10)
		if resp, _, err := post("PATCH", "/api/v4/jobs/"+id+"/trace", line, "JOB-TOKEN", j.Token,
			"Content-Range", fmt.Sprintf("0-%d", len(line)-1)); err != nil || resp.StatusCode != http.StatusAccepted {
			return n, fmt.Errorf("PATCH job %d: %v %v", j.ID, resp, err)
		}
		if resp, _, err := post("PUT", "/api/v4/jobs/"+id, map[string]any{"token": j.Token, "state": "success"}); err != nil || resp.StatusCode != http.StatusOK {
			return n, fmt.Errorf("PUT job %d: %v %v", j.ID, resp, err)
		}
		n++
	}
}

func TestConcurrentRunners(t *testing.T) {
	s := newSim(t, Options{})
	const jobs, workers = 40, 4
	for i := range jobs {
		s.Enqueue(JobSpec{Name: fmt.Sprintf("j%d", i), Script: []string{"true"}})
	}
	var wg sync.WaitGroup
	counts := make([]int, workers)
	errs := make([]error, workers)
	for w := range workers {
		_, token := s.CreateRunner(RunnerOptions{})
		wg.Go(func() { counts[w], errs[w] = worker(s, token) })
	}
	wg.Wait()
	total := 0
	for w := range workers {
		if errs[w] != nil {
			t.Fatal(errs[w])
		}
		total += counts[w]
	}
	if total != jobs {
		t.Fatalf("ran %d jobs, want %d (each exactly once)", total, jobs)
	}
	for _, j := range s.Jobs() {
		if j.Status != StatusSuccess || string(j.Trace) != fmt.Sprintf("job %d\n", j.ID) {
			t.Fatalf("job %d: %s %q", j.ID, j.Status, j.Trace)
		}
	}
}

// BenchmarkJobRequest measures one POST /jobs/request that hands out a job, payload included.
func BenchmarkJobRequest(b *testing.B) {
	s, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	_, token := s.CreateRunner(RunnerOptions{})
	body, _ := json.Marshal(jobRequest(token, "", allFeatures))
	for b.Loop() {
		b.StopTimer()
		s.Enqueue(JobSpec{Name: "bench", Script: []string{"true"}})
		b.StartTimer()
		resp, err := http.Post(s.URL()+"/api/v4/jobs/request", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
