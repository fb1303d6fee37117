package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestRunPrintsTokensAndServes(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--pipeline", "testdata/pipeline.yml", "--trace-update-interval", "1"}, pw, io.Discard)
		_ = pw.Close()
	}()
	lines := map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		lines[k] = strings.TrimSpace(v)
		if k == "Inspect" {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if !strings.HasPrefix(lines["Runner token"], "glrt-") || !strings.HasPrefix(lines["Registration token"], "GR1348941") {
		t.Fatalf("printed %v", lines)
	}
	if !strings.HasPrefix(lines["Pipeline 501"], "jobs [") {
		t.Fatalf("pipeline not loaded: %v", lines)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", lines["URL"]+"/sim/jobs", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var jobs []struct{ Name, Status string }
	err = json.NewDecoder(resp.Body).Decode(&jobs)
	_ = resp.Body.Close()
	if err != nil || len(jobs) != 2 || jobs[0].Status != "pending" || jobs[1].Status != "created" {
		t.Fatalf("jobs %+v, %v", jobs, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--log-level", "loud"}, {"--pipeline", "testdata/missing.yml"}, {"extra"}, {"--listen", "256.0.0.1:1"}} {
		if err := run(t.Context(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
