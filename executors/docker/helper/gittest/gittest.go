// Package gittest serves bare git repositories over smart HTTP (git http-backend through net/http/cgi)
// on loopback, behind a job-token check, for the helper's and the helper image's tests.
package gittest

import (
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// Server serves every bare repository under Root as http://HOST/NAME.git.
type Server struct {
	URL   string // http://127.0.0.1:PORT, no credentials
	Root  string
	Token string
	home  string
}

// NewServer starts a server on 127.0.0.1 that accepts any user with token as password.
func NewServer(t testing.TB, token string) *Server {
	t.Helper()
	testenv.RequireCommand(t, "git", "apt-get install git")
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	s := &Server{Root: t.TempDir(), Token: token, home: t.TempDir()}
	h := &cgi.Handler{
		Path: backend,
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + s.Root, "GIT_HTTP_EXPORT_ALL=1", "HOME=" + s.home},
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pw, ok := r.BasicAuth(); !ok || pw != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
			http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// RepoURL is the clone URL of name with the job token in its user info, as GitLab sends it.
func (s *Server) RepoURL(name string) string {
	return strings.Replace(s.URL, "http://", "http://gitlab-ci-token:"+s.Token+"@", 1) + "/" + name + ".git"
}

// Repo is a bare repository on the server and a work tree that pushes to it.
type Repo struct {
	Bare string
	Work string
	env  []string
}

// NewRepo creates NAME.git with branch main and a work tree for it.
func (s *Server) NewRepo(t testing.TB, name string) *Repo {
	t.Helper()
	r := &Repo{
		Bare: filepath.Join(s.Root, name+".git"),
		Work: filepath.Join(t.TempDir(), name),
		env: []string{"HOME=" + s.home, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.test",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.test", "PATH=" + os.Getenv("PATH")},
	}
	r.Git(t, s.Root, "init", "-q", "--bare", "-b", "main", r.Bare)
	r.Git(t, s.Root, "init", "-q", "-b", "main", r.Work)
	r.Git(t, r.Work, "remote", "add", "origin", r.Bare)
	return r
}

// Git runs git in dir and returns its trimmed output.
func (r *Repo) Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "protocol.file.allow=always"}, args...)...)
	cmd.Dir = dir
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Commit writes files (path -> content; "" deletes), commits them on main, pushes, and returns the SHA.
func (r *Repo) Commit(t testing.TB, msg string, files map[string]string) string {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(r.Work, filepath.FromSlash(p))
		if content == "" {
			if err := os.Remove(full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.Git(t, r.Work, "add", "-A")
	r.Git(t, r.Work, "commit", "-q", "-m", msg)
	r.Git(t, r.Work, "push", "-q", "origin", "HEAD:refs/heads/main")
	return r.Git(t, r.Work, "rev-parse", "HEAD")
}
