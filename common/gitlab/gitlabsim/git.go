package gitlabsim

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

const (
	defaultBranch  = "main"
	commitMessage  = "Initial commit"
	defaultProject = "root/sim"
)

// Repo is a repository made by CreateRepo. URL is the clone URL without credentials; Ref the branch
// and SHA its one commit.
type Repo struct{ Name, URL, Ref, SHA string }

// project is a GitLab project; dir is its bare repository, empty for a project without one.
type project struct {
	id   int64
	name string
	path string
	dir  string
	sha  string
}

func (p *project) hasRepo() bool { return p.dir != "" }

// projectPath turns a repository name into a project path: "widget" lives in the root user's namespace.
func projectPath(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	return "root/" + name
}

// projectLocked returns the project for a repository name, creating one without a repository when the
// name is unknown (its clones fail with 404, as for a project whose repository is gone).
func (s *Server) projectLocked(name string) *project {
	p := defaultProject
	if name != "" {
		p = projectPath(name)
	}
	if pr := s.projects[p]; pr != nil {
		return pr
	}
	pr := &project{id: s.nextProjectID, name: path.Base(p), path: p, sha: fakeSHA(p)}
	s.nextProjectID++
	s.projects[p] = pr
	return pr
}

var repoName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$`)

// CreateRepo makes a bare repository with one commit of files on main, served over smart HTTP at
// URL to job tokens of the project's running jobs. It needs the git command.
func (s *Server) CreateRepo(name string, files map[string]string) (Repo, error) {
	if !repoName.MatchString(name) || strings.HasSuffix(name, ".git") {
		return Repo{}, fmt.Errorf("gitlabsim: repository name %q: use letters, digits, '.', '_', '-' and at most one '/'", name)
	}
	p := projectPath(name)
	s.mu.Lock()
	exists := s.projects[p] != nil && s.projects[p].hasRepo()
	s.mu.Unlock()
	if exists {
		return Repo{}, fmt.Errorf("gitlabsim: repository %q already exists", name)
	}
	dir := filepath.Join(s.reposRoot(), p+".git")
	sha, err := s.initRepo(dir, files)
	if err != nil {
		_ = os.RemoveAll(dir)
		return Repo{}, fmt.Errorf("gitlabsim: create repository %q: %w", name, err)
	}
	s.mu.Lock()
	pr := s.projectLocked(name)
	pr.dir, pr.sha = dir, sha
	s.mu.Unlock()
	return Repo{Name: name, URL: s.cloneURL(p, ""), Ref: defaultBranch, SHA: sha}, nil
}

func (s *Server) reposRoot() string { return filepath.Join(s.dataDir, "repos") }

// initRepo creates the bare repository and pushes one commit of files to it.
func (s *Server) initRepo(dir string, files map[string]string) (string, error) {
	work, err := os.MkdirTemp(s.dataDir, "work-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(work) }()
	for name, content := range files {
		f := filepath.Join(work, filepath.FromSlash(name))
		if !strings.HasPrefix(f, work+string(filepath.Separator)) {
			return "", fmt.Errorf("file %q escapes the repository", name)
		}
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return "", err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(f, []byte(content), mode); err != nil {
			return "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	steps := [][]string{
		{"init", "--quiet", "--bare", "--initial-branch=" + defaultBranch, dir},
		{"-C", dir, "config", "http.receivepack", "false"},
		{"-C", work, "init", "--quiet", "--initial-branch=" + defaultBranch},
		{"-C", work, "add", "--all"},
		{"-C", work, "commit", "--quiet", "--allow-empty", "-m", commitMessage},
		{"-C", work, "push", "--quiet", dir, defaultBranch},
	}
	for _, args := range steps {
		if _, err := s.git(ctx, args...); err != nil {
			return "", err
		}
	}
	out, err := s.git(ctx, "-C", dir, "rev-parse", "refs/heads/"+defaultBranch)
	return strings.TrimSpace(out), err
}

// git runs the git command isolated from the user's and the system's configuration.
func (s *Server) git(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = append(os.Environ(), s.gitEnv()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s (is git installed? apt-get install git)", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (s *Server) gitEnv() []string {
	return []string{
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME=" + s.dataDir,
		"GIT_AUTHOR_NAME=Administrator", "GIT_AUTHOR_EMAIL=admin@example.com",
		"GIT_COMMITTER_NAME=Administrator", "GIT_COMMITTER_EMAIL=admin@example.com",
	}
}

// serveGitOrNotFound serves smart HTTP for /<project path>.git/... to a running job of that project
// (user gitlab-ci-token, password its job token) and answers GitLab's JSON 404 for anything else.
func (s *Server) serveGitOrNotFound(w http.ResponseWriter, r *http.Request) {
	projPath, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), ".git/")
	if !ok || strings.HasPrefix(r.URL.Path, "/api/") {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
		return
	}
	if rest == "git-receive-pack" || r.URL.Query().Get("service") == "git-receive-pack" {
		writeError(w, http.StatusForbidden, "You are not allowed to push code to this project.")
		return
	}
	user, token, hasAuth := r.BasicAuth()
	s.mu.Lock()
	pr := s.projects[projPath]
	allowed := hasAuth && user == "gitlab-ci-token" && s.jobCanCloneLocked(token, pr)
	s.mu.Unlock()
	if !allowed {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
		http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
		return
	}
	if !pr.hasRepo() {
		http.Error(w, "The project you were looking for could not be found.", http.StatusNotFound)
		return
	}
	backend, err := s.httpBackend()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	r2 := r.Clone(r.Context())
	r2.Header.Del("Authorization") // the CGI needs no credentials; keep tokens out of its environment
	h := &cgi.Handler{
		Path: backend,
		Root: "/",
		Env:  append([]string{"GIT_PROJECT_ROOT=" + s.reposRoot(), "GIT_HTTP_EXPORT_ALL=1"}, s.gitEnv()...),
	}
	h.ServeHTTP(w, r2)
}

// jobCanCloneLocked: GitLab's default job token scope lets a running job read its own project.
func (s *Server) jobCanCloneLocked(token string, pr *project) bool {
	if pr == nil || token == "" {
		return false
	}
	for _, j := range s.jobs {
		if j.token == token {
			return j.executing() && j.pipeline.project == pr
		}
	}
	return false
}

// httpBackend finds git-http-backend in git's exec path.
func (s *Server) httpBackend() (string, error) {
	s.backendOnce.Do(func() {
		out, err := s.git(context.Background(), "--exec-path")
		if err != nil {
			s.backendErr = err
			return
		}
		p := filepath.Join(strings.TrimSpace(out), "git-http-backend")
		if _, err := os.Stat(p); err != nil {
			s.backendErr = fmt.Errorf("git-http-backend not found (install Debian's git package): %w", err)
			return
		}
		s.backendPath = p
	})
	return s.backendPath, s.backendErr
}
