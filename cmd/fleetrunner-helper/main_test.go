package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestRun(t *testing.T) {
	project := t.TempDir()
	if err := os.WriteFile(filepath.Join(project, "keep.txt"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	cacheFile := filepath.Join(t.TempDir(), "c", "cache.zip")
	restored := t.TempDir()
	const secret = "glcbt-secretTOKEN"
	listening, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listening.Close()
	open := strconv.Itoa(listening.Addr().(*net.TCPAddr).Port)
	closedL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := strconv.Itoa(closedL.Addr().(*net.TCPAddr).Port)
	closedL.Close()
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"no command", nil, 2, "", "usage: fleetrunner-helper COMMAND"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"version", []string{"version"}, 0, "fleetrunner-helper ", ""},
		{"missing flags", []string{"artifacts-upload", "--dir", project}, 1, "", "missing --id, --token, --url"},
		{"unknown flag", []string{"cache-extract", "--bogus"}, 1, "", "flag provided but not defined: -bogus"},
		{"stray argument", []string{"cache-archive", "--dir", project, "--file", cacheFile, "extra"}, 1, "", `unexpected argument "extra"`},
		{"cache archive", []string{"cache-archive", "--dir", project, "--file", cacheFile, "--path", "*.txt"}, 0, "Created cache", ""},
		{"cache extract fallback", []string{"cache-extract", "--dir", restored, "--file", cacheFile + ".nope", "--file", cacheFile}, 0, "Successfully extracted cache", ""},
		{"cache extract cold", []string{"cache-extract", "--dir", restored, "--file", cacheFile + ".nope"}, 0, "No cache found", ""},
		{"upload outside refused", []string{"artifacts-upload", "--url", "http://127.0.0.1:1", "--id", "5", "--token", secret,
			"--dir", project, "--path", "../../etc/passwd"}, 1, "", `fleetrunner-helper artifacts-upload: path "../../etc/passwd" resolves outside`},
		{"bad format", []string{"artifacts-upload", "--url", "http://127.0.0.1:1", "--id", "5", "--token", secret,
			"--dir", project, "--format", "tar"}, 1, "", `artifact format "tar"`},
		{"bad job id", []string{"artifacts-download", "--url", "http://127.0.0.1:1", "--id", "x", "--token", secret, "--dir", project}, 1, "", `--id "x" is not a job ID`},
		{"health-check listening", []string{"health-check", "--port", open, "--timeout", "5s"}, 0, "", ""},
		{"health-check names the silent port", []string{"health-check", "--port", open, "--port", closed, "--timeout", "300ms"},
			1, "", "port " + closed + " did not listen within 300ms"},
		{"workdir", []string{"workdir", "--base", project, "--dir", filepath.Join(project, "g", "p")}, 0, "", ""},
		{"workdir outside refused", []string{"workdir", "--base", project, "--dir", "/etc"}, 1, "", "is not inside the builds directory"},
		{"workdir bad owner", []string{"workdir", "--base", project, "--dir", filepath.Join(project, "g", "p"), "--owner", "node"}, 1, "", "want numeric uid:gid"},
		{"get-sources masks token", []string{"get-sources", "--dir", filepath.Join(t.TempDir(), "b"), "--repo-url",
			"http://gitlab-ci-token:" + secret + "@127.0.0.1:1/g/p.git", "--sha", strings.Repeat("a", 40), "--ref", "main", "--strategy", "clone"},
			1, "", "fleetrunner-helper get-sources: list refs of http://127.0.0.1:1/g/p.git"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) || !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stdout %q, stderr %q; want %q, %q", stdout.String(), stderr.String(), tc.wantStdout, tc.wantStderr)
			}
			if strings.Contains(stdout.String()+stderr.String(), secret) {
				t.Error("the token reached the output")
			}
			if code == 1 && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("failure is not one line: %q", stderr.String())
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join(restored, "keep.txt")); err != nil || string(b) != "k" {
		t.Errorf("restored keep.txt = %q, %v", b, err)
	}
}

// TestTokenFromStdin: "--token -" reads the job token from stdin, so the executor never has to put it
// on the helper container's command line; it reaches GitLab (artifacts) and the git host (sources).
func TestTokenFromStdin(t *testing.T) {
	const secret = "glcbt-stdinTOKEN"
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pw, _ := r.BasicAuth()
		mu.Lock()
		got = append(got, r.Header.Get("JOB-TOKEN")+"|"+pw)
		mu.Unlock()
		http.Error(w, "nope", http.StatusForbidden)
	}))
	defer srv.Close()
	tests := [][]string{
		{"artifacts-download", "--url", srv.URL, "--id", "5", "--token", "-", "--dir", t.TempDir()},
		{"get-sources", "--dir", filepath.Join(t.TempDir(), "b"), "--repo-url", strings.Replace(srv.URL, "://", "://gitlab-ci-token@", 1) + "/g/p.git",
			"--token", "-", "--sha", strings.Repeat("a", 40), "--ref", "main", "--strategy", "clone"},
	}
	for _, args := range tests {
		mu.Lock()
		got = nil
		mu.Unlock()
		secretInput = strings.NewReader(secret + "\n")
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), args, &stdout, &stderr); code != 1 {
			t.Errorf("%s: exit %d, want 1 (the server refuses); stderr %q", args[0], code, stderr.String())
		}
		mu.Lock()
		if len(got) == 0 || !strings.Contains(got[0], secret) {
			t.Errorf("%s: the server saw tokens %q, want %q", args[0], got, secret)
		}
		mu.Unlock()
		if strings.Contains(stdout.String()+stderr.String(), secret) {
			t.Errorf("%s: the token reached the output", args[0])
		}
	}
	secretInput = strings.NewReader("")
	var stderr bytes.Buffer
	if code := run(t.Context(), tests[0], io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "read the job token from stdin") {
		t.Errorf("empty stdin: exit %d, stderr %q", code, stderr.String())
	}
}

// FLEETRUNNER_HELPER_UMASK sets the umask the command runs under; a bad value stops it before it runs.
func TestUmaskEnv(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "g", "p")
	t.Setenv("FLEETRUNNER_HELPER_UMASK", "nine")
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"workdir", "--base", base, "--dir", dir}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "not an octal umask") {
		t.Fatalf("bad umask: exit %d, stderr %q", code, stderr.String())
	}
	if err := os.WriteFile(filepath.Join(base, "keep.txt"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	t.Setenv("FLEETRUNNER_HELPER_UMASK", "0000")
	if code := run(t.Context(), []string{"cache-archive", "--dir", base, "--file", filepath.Join(base, "out", "c.zip"), "--path", "keep.txt"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	fi, err := os.Stat(filepath.Join(base, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o777 {
		t.Errorf("directory made under FLEETRUNNER_HELPER_UMASK=0000 has mode %04o, want 0777", got)
	}
}

// The cache commands take presigned URLs on stdin only: a signature on the command line could be read
// by anyone who may inspect the helper container. The URLs are tried in order and never printed whole.
func TestCacheURLsFromStdin(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	project, tmp := t.TempDir(), t.TempDir()
	const sig = "?X-Amz-Signature=sig0123"
	secretInput = strings.NewReader(srv.URL + "/b/key" + sig + "\n\n" + srv.URL + "/b/fallback" + sig + "\n")
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"cache-extract", "--dir", project, "--urls", "-", "--tmp-dir", tmp}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	mu.Lock()
	got := strings.Join(paths, ",")
	mu.Unlock()
	if got != "GET /b/key,GET /b/fallback" {
		t.Errorf("requests %s, want the two URLs in order", got)
	}
	if out := stdout.String(); !strings.Contains(out, "No cache found") || strings.Contains(out, "sig0123") {
		t.Errorf("output %q: want a miss, without the signature", out)
	}
	for _, args := range [][]string{
		{"cache-extract", "--dir", project, "--urls", srv.URL + "/b/key" + sig, "--tmp-dir", tmp},
		{"cache-archive", "--dir", project, "--url", "-", "--path", "x"},
	} {
		secretInput = strings.NewReader(srv.URL + "/b/key" + sig + "\n")
		stderr.Reset()
		if code := run(t.Context(), args, io.Discard, &stderr); code == 0 || strings.Contains(stderr.String(), "sig0123") {
			t.Errorf("%v: exit %d, stderr %q; want a refusal that does not repeat the URL", args, code, stderr.String())
		}
	}
	secretInput = strings.NewReader("")
}
