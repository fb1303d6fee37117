package cache

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/archive"
)

// bucket is an in-process object store answering presigned-style GETs and PUTs as S3 does: 404 with
// an XML error for a missing object, and the signature in the query string (which it ignores).
type bucket struct {
	mu      sync.Mutex
	objects map[string][]byte
	headers map[string]http.Header
}

func newBucket(t *testing.T) (*bucket, *httptest.Server) {
	b := &bucket{objects: map[string][]byte{}, headers: map[string]http.Header{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch r.Method {
		case http.MethodGet:
			data, ok := b.objects[r.URL.Path]
			if strings.HasSuffix(r.URL.Path, "/unlisted") {
				// S3 without s3:ListBucket: a missing object is AccessDenied.
				w.WriteHeader(http.StatusForbidden)
				_, _ = io.WriteString(w, `<Error><Code>AccessDenied</Code></Error>`)
				return
			}
			if strings.HasSuffix(r.URL.Path, "/badsig") {
				w.WriteHeader(http.StatusForbidden)
				_, _ = io.WriteString(w, `<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIASECRETISH</AWSAccessKeyId></Error>`)
				return
			}
			if !ok {
				w.WriteHeader(http.StatusNotFound)
				_, _ = io.WriteString(w, `<Error><Code>NoSuchKey</Code><AWSAccessKeyId>AKIASECRETISH</AWSAccessKeyId></Error>`)
				return
			}
			_, _ = w.Write(data)
		case http.MethodPut:
			if r.ContentLength < 0 {
				http.Error(w, "<Error><Code>MissingContentLength</Code></Error>", http.StatusLengthRequired)
				return
			}
			data, _ := io.ReadAll(r.Body)
			b.objects[r.URL.Path] = data
			b.headers[r.URL.Path] = r.Header.Clone()
		}
	}))
	t.Cleanup(srv.Close)
	return b, srv
}

const signature = "?X-Amz-Credential=AKIASECRETISH%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=abc"

func TestRemoteRoundTripWithFallback(t *testing.T) {
	b, srv := newBucket(t)
	project := t.TempDir()
	write(t, project, "deps/a.txt", "cached content")
	var out bytes.Buffer
	r := &Remote{TmpDir: filepath.Join(t.TempDir(), "tmp"), Out: &out}
	h := http.Header{"X-Amz-Server-Side-Encryption": {"AES256"}}
	if err := r.Upload(t.Context(), srv.URL+"/bucket/fallback"+signature, h, project, archive.Selection{Paths: []string{"deps/"}}, 0); err != nil {
		t.Fatalf("upload: %v\n%s", err, out.String())
	}
	if got := b.headers["/bucket/fallback"].Get("X-Amz-Server-Side-Encryption"); got != "AES256" {
		t.Errorf("signed header not sent: %q", got)
	}

	dst := t.TempDir()
	used, err := r.Download(t.Context(), []string{srv.URL + "/bucket/main" + signature, srv.URL + "/bucket/unlisted" + signature,
		srv.URL + "/bucket/fallback" + signature}, dst)
	if err != nil {
		t.Fatalf("download: %v\n%s", err, out.String())
	}
	if used != srv.URL+"/bucket/fallback" {
		t.Errorf("used %q, want the fallback key's object without its query", used)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "deps", "a.txt")); string(got) != "cached content" {
		t.Errorf("restored %q", got)
	}
	for _, want := range []string{"No cache at " + srv.URL + "/bucket/main\n", "No cache at " + srv.URL + "/bucket/unlisted\n", "Successfully extracted cache"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "AKIASECRETISH") {
		t.Errorf("output shows the URLs' credential:\n%s", out.String())
	}
	if left, _ := os.ReadDir(r.TmpDir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	out.Reset()
	used, err = r.Download(t.Context(), []string{srv.URL + "/bucket/none" + signature}, t.TempDir())
	if err != nil || used != "" || !strings.Contains(out.String(), "No cache found") {
		t.Errorf("a miss: used %q, err %v, output:\n%s", used, err, out.String())
	}
	_, err = r.Download(t.Context(), []string{srv.URL + "/bucket/badsig" + signature, srv.URL + "/bucket/fallback" + signature}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") || strings.Contains(err.Error(), "AKIASECRETISH") {
		t.Errorf("a bad signature is not a miss: err %v", err)
	}
}

func TestRemoteUploadOverMaxSizeIsSkipped(t *testing.T) {
	b, srv := newBucket(t)
	project := t.TempDir()
	write(t, project, "big.bin", strings.Repeat("x", 1<<16))
	var out bytes.Buffer
	r := &Remote{TmpDir: t.TempDir(), Out: &out}
	if err := r.Upload(t.Context(), srv.URL+"/bucket/k"+signature, nil, project, archive.Selection{Paths: []string{"big.bin"}}, 100); err != nil {
		t.Fatal(err)
	}
	if len(b.objects) != 0 {
		t.Error("an archive over the limit was uploaded")
	}
	if !strings.Contains(out.String(), "over MaxUploadedArchiveSize (100 bytes); not uploading it to "+srv.URL+"/bucket/k\n") {
		t.Errorf("no clear line:\n%s", out.String())
	}
}

// An unreachable store or an error answer is an error that names neither the signature nor S3's
// error body, which repeats the access key ID.
func TestRemoteErrorsHideTheSignature(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	_ = l.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `<Error><Code>SlowDown</Code><AWSAccessKeyId>AKIASECRETISH</AWSAccessKeyId></Error>`)
	}))
	defer failing.Close()
	project := t.TempDir()
	write(t, project, "f", "x")
	for _, base := range []string{dead, failing.URL} {
		var out bytes.Buffer
		r := &Remote{TmpDir: t.TempDir(), Out: &out}
		_, derr := r.Download(t.Context(), []string{base + "/bucket/k" + signature}, t.TempDir())
		uerr := r.Upload(t.Context(), base+"/bucket/k"+signature, nil, project, archive.Selection{Paths: []string{"f"}}, 0)
		for _, err := range []error{derr, uerr} {
			if err == nil {
				t.Fatalf("%s: no error", base)
			}
			if strings.Contains(err.Error(), "AKIASECRETISH") || strings.Contains(err.Error(), "Signature") {
				t.Errorf("%s: error shows the credential: %v", base, err)
			}
		}
		if base == failing.URL && !strings.Contains(derr.Error(), "SlowDown") {
			t.Errorf("error %v does not name S3's error code", derr)
		}
	}
}
