package gitlabsim

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// gitCmd runs git without any user configuration or credential prompt.
func gitCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "git", args...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestGitCloneWithJobToken(t *testing.T) {
	testenv.RequireCommand(t, "git", "apt-get install git")
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	repo, err := s.CreateRepo("widget", map[string]string{"README.md": "hello\n", "src/run.sh": "#!/bin/sh\necho hi\n"})
	if err != nil {
		t.Fatal(err)
	}
	if len(repo.SHA) != 40 || repo.Ref != "main" || repo.URL != s.URL()+"/root/widget.git" {
		t.Fatalf("repo %+v", repo)
	}
	if _, err := s.CreateRepo("widget", nil); err == nil {
		t.Fatal("a second repository with the same name was created")
	}
	if _, err := s.CreateRepo("../escape", nil); err == nil {
		t.Fatal("a bad repository name was accepted")
	}

	id := s.Enqueue(JobSpec{Name: "clone", Repo: "widget", Script: []string{"true"}, GitDepth: 1})
	j := takeJob(t, s, token, allFeatures)
	if j.GitInfo.Sha != repo.SHA || j.Variables.Get("CI_PROJECT_NAME") != "widget" || j.Variables.Get("CI_PROJECT_PATH") != "root/widget" {
		t.Fatalf("git_info %+v", j.GitInfo)
	}

	// The way the runner fetches: init, fetch the payload's refspecs with its depth, check out the SHA.
	dir := filepath.Join(t.TempDir(), "w")
	steps := [][]string{
		{"init", "--quiet", dir},
		{"-C", dir, "fetch", "--depth", "1", j.GitInfo.RepoURL},
	}
	steps[1] = append(steps[1], j.GitInfo.Refspecs...)
	steps = append(steps, []string{"-C", dir, "checkout", "--quiet", j.GitInfo.Sha})
	for _, args := range steps {
		if out, err := gitCmd(t, args...); err != nil {
			t.Fatalf("git %v: %v\n%s", args[:3], err, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "README.md")); err != nil || string(b) != "hello\n" {
		t.Fatalf("README.md = %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "src", "run.sh")); err != nil || fi.Mode()&0o100 == 0 {
		t.Fatalf("src/run.sh not executable: %v", err)
	}
	// A plain clone works too.
	if out, err := gitCmd(t, "clone", "--quiet", j.GitInfo.RepoURL, filepath.Join(t.TempDir(), "c")); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}

	noToken := repo.URL
	u, _ := url.Parse(repo.URL)
	u.User = url.UserPassword("gitlab-ci-token", "glcbt-wrong")
	wrongToken := u.String()
	u.User = url.UserPassword("someone", j.Token)
	wrongUser := u.String()
	for _, tt := range []struct{ name, url string }{{"no token", noToken}, {"wrong token", wrongToken}, {"wrong user", wrongUser}} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := gitCmd(t, "clone", "--quiet", tt.url, filepath.Join(t.TempDir(), "x"))
			// Without credentials git asks for a username after the 401; prompts are off, so it gives up.
			if err == nil || !(strings.Contains(out, "Authentication failed") || strings.Contains(out, "could not read Username")) {
				t.Fatalf("clone: %v, want an authentication failure\n%s", err, out)
			}
			if strings.Contains(out, j.Token) {
				t.Fatal("git output shows the job token")
			}
		})
	}
	if out, err := gitCmd(t, "-C", dir, "push", j.GitInfo.RepoURL, "HEAD:refs/heads/evil"); err == nil || !strings.Contains(out, "403") {
		t.Fatalf("push: %v, want 403\n%s", err, out)
	}

	putJob(t, s, id, map[string]any{"token": j.Token, "state": "success"})
	if out, err := gitCmd(t, "clone", "--quiet", j.GitInfo.RepoURL, filepath.Join(t.TempDir(), "late")); err == nil || !strings.Contains(out, "Authentication failed") {
		t.Fatalf("clone with a finished job's token: %v\n%s", err, out)
	}
}

func TestGitNotFound(t *testing.T) {
	s := newSim(t, Options{})
	r := do(t, s, "GET", "/api/v4/nothing", nil)
	var body map[string]string
	r.decode(t, &body)
	if r.code != 404 || body["error"] != "404 Not Found" {
		t.Fatalf("unknown API path = %d %v", r.code, body)
	}
}
