package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// start runs gitlabsim with args until stop is called, and returns what it printed by label.
func start(t *testing.T, args ...string) (lines map[string]string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, pw, io.Discard)
		_ = pw.Close()
	}()
	lines = map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		lines[k] = strings.TrimSpace(v)
		if k == "Inspect" {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return lines, func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v", err)
		}
	}
}

func TestRunPrintsTokensAndServes(t *testing.T) {
	lines, stop := start(t, "--listen", "127.0.0.1:0", "--pipeline", "testdata/pipeline.yml", "--trace-update-interval", "1")
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
	stop()
}

// A runner's config.toml written once against a fixed address and token stays valid when the
// simulator restarts.
func TestFixedListenAndTokenSurviveRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	const token = "glrt-fixed-for-restarts"
	verify := func(url, token string) int {
		t.Helper()
		body := strings.NewReader(`{"token":"` + token + `","system_id":"s_0123456789ab"}`)
		req, _ := http.NewRequestWithContext(t.Context(), "POST", url+"/api/v4/runners/verify", body)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for run := range 2 {
		lines, stop := start(t, "--listen", addr, "--token", token)
		if lines["URL"] != "http://"+addr || lines["Runner token"] != token {
			t.Fatalf("start %d printed %v, want URL http://%s and token %s", run+1, lines, addr, token)
		}
		if got := verify(lines["URL"], token); got != http.StatusOK {
			t.Errorf("start %d: verify with the fixed token answered %d, want 200", run+1, got)
		}
		if got := verify(lines["URL"], "glrt-some-other-token"); got != http.StatusForbidden {
			t.Errorf("start %d: verify with another token answered %d, want 403", run+1, got)
		}
		stop()
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--log-level", "loud"}, {"--pipeline", "testdata/missing.yml"}, {"extra"}, {"--listen", "256.0.0.1:1"}, {"--token", "not-a-runner-token"}} {
		if err := run(t.Context(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
