package artifacts

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/archive"
)

const token = "glcbt-64_JoBtOkEn"

// fakeGitLab speaks the two artifacts endpoints of the runner API and records what it got.
type fakeGitLab struct {
	mu       sync.Mutex
	stored   map[string][]byte // job id -> archive
	uploads  []upload
	posts    int
	failures []int // status codes to answer to the next POSTs, in order
	redirect bool  // answer the first POST with 307 to /upload-here
}

type upload struct {
	job, filename, query string
}

func newFake(t *testing.T) (*fakeGitLab, *httptest.Server) {
	f := &fakeGitLab{stored: map[string][]byte{}}
	mux := http.NewServeMux()
	store := func(w http.ResponseWriter, r *http.Request, job string) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.posts++
		if r.Header.Get("JOB-TOKEN") != token {
			http.Error(w, `{"message":"403 Forbidden"}`, http.StatusForbidden)
			return
		}
		if f.redirect {
			f.redirect = false
			w.Header().Set("Location", "/upload-here/"+job+"?"+r.URL.RawQuery)
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
		if len(f.failures) > 0 {
			code := f.failures[0]
			f.failures = f.failures[1:]
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"message":"answer %d"}`, code)
			return
		}
		file, hdr, err := r.FormFile("file")
		if err != nil {
			http.Error(w, `{"message":"file is missing"}`, http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(file)
		f.stored[job] = b
		f.uploads = append(f.uploads, upload{job, hdr.Filename, r.URL.RawQuery})
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "201")
	}
	mux.HandleFunc("POST /api/v4/jobs/{id}/artifacts", func(w http.ResponseWriter, r *http.Request) { store(w, r, r.PathValue("id")) })
	mux.HandleFunc("POST /upload-here/{id}", func(w http.ResponseWriter, r *http.Request) { store(w, r, r.PathValue("id")) })
	mux.HandleFunc("GET /api/v4/jobs/{id}/artifacts", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.Header.Get("JOB-TOKEN") != token {
			http.Error(w, `{"message":"401 Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		b, ok := f.stored[r.PathValue("id")]
		if !ok {
			http.Error(w, `{"message":"404 Not Found"}`, http.StatusNotFound)
			return
		}
		_, _ = w.Write(b)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func project(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for rel, c := range map[string]string{"bin/app": "binary", "bin/app.tmp": "tmp", "bin/lib/l.so": "lib", "report.xml": "<testsuite/>", "src/x.go": "x"} {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func client(srv *httptest.Server, out io.Writer) *Client {
	return &Client{URL: srv.URL + "/ci/", Token: token, Out: out, Backoff: time.Millisecond, HTTP: srv.Client()}
}

func TestUploadThenDownload(t *testing.T) {
	f, srv := newFake(t)
	dir := project(t)
	var out bytes.Buffer
	c := client(srv, &out)
	c.HTTP = nil // the default client, with its redirect rule
	f.redirect = true
	err := c.Upload(t.Context(), 41, dir, UploadOptions{Name: "widget-build", ExpireIn: "1 week", Format: archive.FormatZip,
		Selection: archive.Selection{Paths: []string{"bin/"}, Exclude: []string{"bin/*.tmp"}}})
	if err != nil {
		t.Fatalf("Upload: %v\n%s", err, out.String())
	}
	want := upload{"41", "widget-build.zip", "artifact_format=zip&artifact_type=archive&expire_in=1+week"}
	if len(f.uploads) != 1 || f.uploads[0] != want {
		t.Fatalf("uploads = %+v, want [%+v]", f.uploads, want)
	}
	if strings.Contains(out.String(), token) {
		t.Errorf("output leaks the token:\n%s", out.String())
	}

	dst := filepath.Join(t.TempDir(), "build")
	if err := c.Download(t.Context(), 41, dst); err != nil {
		t.Fatalf("Download: %v", err)
	}
	for rel, wantContent := range map[string]string{"bin/app": "binary", "bin/lib/l.so": "lib"} {
		if b, err := os.ReadFile(filepath.Join(dst, rel)); err != nil || string(b) != wantContent {
			t.Errorf("%s = %q, %v", rel, b, err)
		}
	}
	for _, rel := range []string{"bin/app.tmp", "src/x.go"} {
		if _, err := os.Stat(filepath.Join(dst, rel)); err == nil {
			t.Errorf("%s was downloaded although not selected", rel)
		}
	}
}

func TestUploadReportGzip(t *testing.T) {
	f, srv := newFake(t)
	c := client(srv, io.Discard)
	err := c.Upload(t.Context(), 42, project(t), UploadOptions{Name: "junit.xml", Type: "junit", Format: archive.FormatGzip,
		Selection: archive.Selection{Paths: []string{"report.xml"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := upload{"42", "junit.xml.gz", "artifact_format=gzip&artifact_type=junit"}
	if len(f.uploads) != 1 || f.uploads[0] != want {
		t.Fatalf("uploads = %+v, want [%+v]", f.uploads, want)
	}
	if b := f.stored["42"]; len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("stored report is not gzip: % x", b[:min(4, len(b))])
	}
}

func TestUploadStatuses(t *testing.T) {
	tests := []struct {
		name      string
		failures  []int
		wantErr   string
		wantPosts int
	}{
		{"5xx retried then created", []int{503, 502}, "", 3},
		{"429 retried", []int{429}, "", 2},
		{"gives up after the tries", []int{500, 500, 500}, "giving up after 3 tries", 3},
		{"413 final", []int{413}, "413 Request Entity Too Large: answer 413 (the archive is", 1},
		{"403 final", []int{403}, "job not running any more", 1},
		{"400 final", []int{400}, "400 Bad Request: answer 400", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFake(t)
			f.failures = tc.failures
			var out bytes.Buffer
			c := client(srv, &out)
			c.Attempts = 3
			err := c.Upload(t.Context(), 7, project(t), UploadOptions{Format: archive.FormatZip, Selection: archive.Selection{Paths: []string{"src"}}})
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Upload: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if f.posts != tc.wantPosts {
				t.Errorf("posts = %d, want %d\n%s", f.posts, tc.wantPosts, out.String())
			}
			if tc.wantErr == "" && (len(f.uploads) != 1 || f.uploads[0].filename != "default.zip") {
				t.Errorf("uploads = %+v", f.uploads)
			}
		})
	}
}

func TestUploadRefusesPathOutside(t *testing.T) {
	f, srv := newFake(t)
	err := client(srv, io.Discard).Upload(t.Context(), 8, project(t), UploadOptions{Format: archive.FormatZip,
		Selection: archive.Selection{Paths: []string{"bin", "../../etc/passwd"}}})
	if err == nil || !strings.Contains(err.Error(), `"../../etc/passwd"`) || !strings.Contains(err.Error(), "outside the project directory") {
		t.Fatalf("err = %v, want one naming the path", err)
	}
	if f.posts != 0 {
		t.Errorf("%d uploads despite the refusal", f.posts)
	}
}

func TestUploadNothingIsAWarning(t *testing.T) {
	f, srv := newFake(t)
	var out bytes.Buffer
	err := client(srv, &out).Upload(t.Context(), 9, project(t), UploadOptions{Format: archive.FormatZip,
		Selection: archive.Selection{Paths: []string{"dist/"}}})
	if err != nil || f.posts != 0 || !strings.Contains(out.String(), "no files to upload") {
		t.Errorf("err %v, posts %d, out %q", err, f.posts, out.String())
	}
}

func TestDownloadFailures(t *testing.T) {
	f, srv := newFake(t)
	var evil bytes.Buffer
	zw := zip.NewWriter(&evil)
	if _, err := zw.Create("../escaped"); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f.stored["66"] = evil.Bytes()
	tests := []struct {
		name    string
		id      int64
		token   string
		wantErr string
	}{
		{"no artifacts", 65, token, "job 65 has no artifacts: 404 Not Found"},
		{"bad token", 66, "wrong", "401 Unauthorized"},
		{"entry outside", 66, token, "would land outside"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := client(srv, io.Discard)
			c.Token = tc.token
			dst := filepath.Join(t.TempDir(), "b")
			err := c.Download(t.Context(), tc.id, dst)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dst), "escaped")); err == nil {
				t.Error("an entry escaped the directory")
			}
		})
	}
}

func TestBadURL(t *testing.T) {
	c := &Client{URL: "ftp://user:pw@example.test", Token: token, Out: io.Discard}
	err := c.Download(t.Context(), 1, t.TempDir())
	if err == nil || strings.Contains(err.Error(), "pw@") {
		t.Errorf("err = %v, want a refusal without the password", err)
	}
}

// TestDownloadFromObjectStorage: GitLab may answer a download with a redirect to object storage
// (direct_download); the archive is fetched from there, and the job token stays with GitLab.
func TestDownloadFromObjectStorage(t *testing.T) {
	var archiveZip bytes.Buffer
	zw := zip.NewWriter(&archiveZip)
	w, err := zw.Create("out/result.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "from storage"); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("JOB-TOKEN") != "" {
			http.Error(w, "the job token reached object storage", http.StatusBadRequest)
			return
		}
		_, _ = w.Write(archiveZip.Bytes())
	}))
	t.Cleanup(storage.Close)
	gl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("JOB-TOKEN") != token {
			http.Error(w, `{"message":"403 Forbidden"}`, http.StatusForbidden)
			return
		}
		http.Redirect(w, r, storage.URL+"/bucket/artifacts.zip", http.StatusFound)
	}))
	t.Cleanup(gl.Close)

	dst := filepath.Join(t.TempDir(), "b")
	c := &Client{URL: gl.URL, Token: token, Out: io.Discard, Attempts: 1}
	if err := c.Download(t.Context(), 5, dst); err != nil {
		t.Fatalf("Download: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "out/result.txt")); err != nil || string(b) != "from storage" {
		t.Fatalf("out/result.txt = %q, %v", b, err)
	}
}

// TestAgainstGitLabSim: uploads and downloads against the GitLab simulator, which answers as the
// runner API does (a 307 that the upload repeats, a final 413, 401/403 for a wrong token).
func TestAgainstGitLabSim(t *testing.T) {
	sim, err := gitlabsim.New(gitlabsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	gl, err := gitlab.NewClient(logging.Discard(), gitlab.ClientConfig{URL: sim.URL()})
	if err != nil {
		t.Fatal(err)
	}
	_, runnerToken := sim.CreateRunner(gitlabsim.RunnerOptions{})
	id := sim.Enqueue(gitlabsim.JobSpec{Name: "build", Script: []string{"true"}})
	got := gl.RequestJob(t.Context(), runnerToken, "s_1")
	if got.Err != nil || got.Job == nil || got.Job.ID != id {
		t.Fatalf("RequestJob = %+v", got)
	}
	c := &Client{URL: sim.URL(), Token: got.Job.Token, Out: io.Discard, Backoff: time.Millisecond}
	dir := project(t)

	sim.SetFaults(gitlabsim.Faults{ArtifactsRedirect307: 1})
	if err := c.Upload(t.Context(), id, dir, UploadOptions{Name: "artifacts", ExpireIn: "1 week", Format: archive.FormatZip,
		Selection: archive.Selection{Paths: []string{"bin/"}}}); err != nil {
		t.Fatalf("Upload after a 307: %v", err)
	}
	sim.SetFaults(gitlabsim.Faults{Artifacts413: 1})
	err = c.Upload(t.Context(), id, dir, UploadOptions{Name: "junit.xml", Type: "junit", Format: archive.FormatGzip,
		Selection: archive.Selection{Paths: []string{"report.xml"}}})
	if err == nil || !strings.Contains(err.Error(), "413") {
		t.Fatalf("Upload answered 413: err = %v", err)
	}
	snap, _ := sim.Job(id)
	if len(snap.Artifacts) != 1 || snap.Artifacts[0].Filename != "artifacts.zip" || snap.Artifacts[0].ExpireIn != "1 week" {
		t.Fatalf("stored artifacts = %+v", snap.Artifacts)
	}

	dst := filepath.Join(t.TempDir(), "b")
	if err := c.Download(t.Context(), id, dst); err != nil {
		t.Fatalf("Download: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "bin/app")); err != nil || string(b) != "binary" {
		t.Fatalf("bin/app = %q, %v", b, err)
	}
	c.Token = "glcbt-wrong"
	if err := c.Download(t.Context(), id, dst); err == nil || !(strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "403")) {
		t.Fatalf("Download with a wrong token: err = %v, want a 401 or 403", err)
	}
}
