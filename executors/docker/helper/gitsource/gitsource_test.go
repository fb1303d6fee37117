package gitsource

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	git "github.com/go-git/go-git/v5"

	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/gittest"
)

const token = "glcbt-64_sEcReTjObToKeN"

type fixture struct {
	srv  *gittest.Server
	repo *gittest.Repo
	sha1 string // first commit: a.txt, dir/b.txt
	sha2 string // second commit: a.txt changed, c.txt
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := gittest.NewServer(t, token)
	repo := srv.NewRepo(t, "widget")
	f := &fixture{srv: srv, repo: repo}
	f.sha1 = repo.Commit(t, "one", map[string]string{"a.txt": "one\n", "dir/b.txt": "b\n", ".gitignore": "*.log\n"})
	f.sha2 = repo.Commit(t, "two", map[string]string{"a.txt": "two\n", "c.txt": "c\n"})
	repo.Git(t, repo.Work, "tag", "v1", f.sha1)
	repo.Git(t, repo.Work, "push", "-q", "origin", "v1")
	repo.Git(t, repo.Work, "push", "-q", "origin", f.sha2+":refs/pipelines/7")
	return f
}

func (f *fixture) opts(dir string, out *bytes.Buffer) Options {
	return Options{Dir: dir, RepoURL: f.srv.RepoURL("widget"), SHA: f.sha2, Ref: "main", RefType: "branch",
		Depth: 1, Strategy: StrategyClone, Checkout: true, Submodules: SubmodulesNone, Out: out}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func head(t *testing.T, dir string) string {
	t.Helper()
	r, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.Head()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name() != "HEAD" {
		t.Errorf("HEAD is %s, want detached", h.Name())
	}
	return h.Hash().String()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestGetClone(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name      string
		edit      func(o *Options)
		wantSHA   string
		wantA     string
		shallow   bool
		wantOut   string
		wantNoDir bool
	}{
		{name: "depth 1 branch", wantSHA: f.sha2, wantA: "two\n", shallow: true, wantOut: "git depth set to 1"},
		{name: "full history older commit", edit: func(o *Options) { o.Depth = 0; o.SHA = f.sha1 }, wantSHA: f.sha1, wantA: "one\n"},
		{name: "tag depth 1", edit: func(o *Options) { o.Ref, o.RefType, o.SHA = "v1", "tag", f.sha1 }, wantSHA: f.sha1, wantA: "one\n", shallow: true},
		{name: "gitlab refspecs with missing pipeline ref", edit: func(o *Options) {
			o.RefSpecs = []string{"+refs/pipelines/7:refs/pipelines/7", "+refs/pipelines/8:refs/pipelines/8", "+refs/heads/main:refs/remotes/origin/main"}
		}, wantSHA: f.sha2, wantA: "two\n", shallow: true, wantOut: "skipping refspec +refs/pipelines/8"},
		{name: "no checkout", edit: func(o *Options) { o.Checkout = false }, wantOut: "Skipping Git checkout", wantNoDir: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "build")
			var out bytes.Buffer
			o := f.opts(dir, &out)
			if tc.edit != nil {
				tc.edit(&o)
			}
			if err := Get(t.Context(), o); err != nil {
				t.Fatalf("Get: %v\n%s", err, out.String())
			}
			if strings.Contains(out.String(), token) {
				t.Errorf("output leaks the token:\n%s", out.String())
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("output lacks %q:\n%s", tc.wantOut, out.String())
			}
			if cfg := read(t, filepath.Join(dir, ".git", "config")); strings.Contains(cfg, token) {
				t.Errorf(".git/config stores the token:\n%s", cfg)
			}
			if tc.wantNoDir {
				if exists(filepath.Join(dir, "a.txt")) {
					t.Error("a.txt checked out although checkout=false")
				}
				return
			}
			if got := head(t, dir); got != tc.wantSHA {
				t.Errorf("HEAD = %s, want %s", got, tc.wantSHA)
			}
			if got := read(t, filepath.Join(dir, "a.txt")); got != tc.wantA {
				t.Errorf("a.txt = %q, want %q", got, tc.wantA)
			}
			if got := exists(filepath.Join(dir, ".git", "shallow")); got != tc.shallow {
				t.Errorf("shallow = %v, want %v", got, tc.shallow)
			}
		})
	}
}

func TestGetFetchReusesAndCleans(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "build")
	var out bytes.Buffer
	o := f.opts(dir, &out)
	o.SHA, o.Depth = f.sha1, 0
	if err := Get(t.Context(), o); err != nil {
		t.Fatalf("first clone: %v\n%s", err, out.String())
	}
	// What a previous job leaves behind: a changed tracked file, an untracked and an ignored one.
	for p, c := range map[string]string{"a.txt": "dirty\n", "junk/new.txt": "x", "build.log": "x"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	marker := filepath.Join(dir, ".git", "marker")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sha3 := f.repo.Commit(t, "three", map[string]string{"c.txt": "", "d.txt": "d\n"})

	out.Reset()
	o.Strategy, o.SHA, o.Depth = StrategyFetch, sha3, 2
	if err := Get(t.Context(), o); err != nil {
		t.Fatalf("fetch: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Reinitialized existing Git repository") || !exists(marker) {
		t.Errorf("fetch strategy did not reuse the repository:\n%s", out.String())
	}
	if got := head(t, dir); got != sha3 {
		t.Errorf("HEAD = %s, want %s", got, sha3)
	}
	if got := read(t, filepath.Join(dir, "a.txt")); got != "two\n" {
		t.Errorf("a.txt = %q, want the committed content", got)
	}
	for _, p := range []string{"junk", "build.log", "c.txt"} {
		if exists(filepath.Join(dir, p)) {
			t.Errorf("%s survived the fetch", p)
		}
	}
	if !exists(filepath.Join(dir, "d.txt")) || !exists(filepath.Join(dir, "dir", "b.txt")) {
		t.Error("d.txt or dir/b.txt missing after fetch")
	}

	// clone throws the repository away.
	out.Reset()
	o.Strategy = StrategyClone
	if err := Get(t.Context(), o); err != nil {
		t.Fatalf("clone: %v", err)
	}
	if exists(marker) {
		t.Error("clone strategy kept the old .git")
	}
}

func TestGetEmptyAndNone(t *testing.T) {
	tests := []struct {
		strategy Strategy
		wantKept bool
		wantLine string
	}{
		{StrategyNone, true, "GIT_STRATEGY=none"},
		{StrategyEmpty, false, "empty build directory"},
	}
	for _, tc := range tests {
		t.Run(string(tc.strategy), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "left.txt"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := Get(t.Context(), Options{Dir: dir, Strategy: tc.strategy, Out: &out}); err != nil {
				t.Fatal(err)
			}
			if got := exists(filepath.Join(dir, "left.txt")); got != tc.wantKept {
				t.Errorf("left.txt kept = %v, want %v", got, tc.wantKept)
			}
			if !exists(dir) {
				t.Error("build directory removed")
			}
			if !strings.Contains(out.String(), tc.wantLine) {
				t.Errorf("output %q lacks %q", out.String(), tc.wantLine)
			}
		})
	}
}

func TestGetErrorsAreMasked(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		edit func(o *Options)
		want string
	}{
		{"wrong token", func(o *Options) { o.RepoURL = strings.Replace(o.RepoURL, token, token+"x", 1) }, "list refs"},
		{"unknown commit", func(o *Options) { o.SHA = strings.Repeat("ab", 20) }, "raise GIT_DEPTH"},
		{"bad strategy", func(o *Options) { o.Strategy = "copy" }, `git strategy "copy"`},
		{"missing repo", func(o *Options) { o.RepoURL = f.srv.RepoURL("nope") }, "list refs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			o := f.opts(filepath.Join(t.TempDir(), "b"), &out)
			tc.edit(&o)
			err := Get(t.Context(), o)
			if err == nil {
				t.Fatal("Get succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if strings.Contains(err.Error()+out.String(), token) {
				t.Errorf("token leaked: %v\n%s", err, out.String())
			}
		})
	}
}

func TestGetSubmodules(t *testing.T) {
	f := newFixture(t)
	lib := f.srv.NewRepo(t, "lib")
	lib.Commit(t, "lib", map[string]string{"lib.txt": "lib\n"})
	f.repo.Git(t, f.repo.Work, "submodule", "add", "-q", "../lib.git", "vendor/lib")
	f.repo.Git(t, f.repo.Work, "commit", "-q", "-m", "sub")
	f.repo.Git(t, f.repo.Work, "push", "-q", "origin", "HEAD:refs/heads/main")
	sha := f.repo.Git(t, f.repo.Work, "rev-parse", "HEAD")

	for _, sub := range []Submodules{SubmodulesNone, SubmodulesNormal, SubmodulesRecursive} {
		t.Run(string(sub), func(t *testing.T) {
			var out bytes.Buffer
			o := f.opts(filepath.Join(t.TempDir(), "b"), &out)
			o.SHA, o.Submodules = sha, sub
			if err := Get(t.Context(), o); err != nil {
				t.Fatalf("Get: %v\n%s", err, out.String())
			}
			got := exists(filepath.Join(o.Dir, "vendor", "lib", "lib.txt"))
			if want := sub != SubmodulesNone; got != want {
				t.Errorf("submodule checked out = %v, want %v\n%s", got, want, out.String())
			}
		})
	}
}

// Checked-out files and directories get git's modes narrowed by the umask, as the git binary gives
// them: under upstream's umask 0000 a non-root job user can change its checkout.
func TestCheckoutModesFollowTheUmask(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		umask         int
		file, dir, gd os.FileMode
	}{{0o000, 0o666, 0o777, 0o777}, {0o022, 0o644, 0o755, 0o755}} {
		t.Run(fmt.Sprintf("umask %04o", tc.umask), func(t *testing.T) {
			old := syscall.Umask(tc.umask)
			defer syscall.Umask(old)
			dir := filepath.Join(t.TempDir(), "build")
			var out bytes.Buffer
			o := f.opts(dir, &out)
			o.SHA = f.sha1
			o.Depth = 0
			if err := Get(t.Context(), o); err != nil {
				t.Fatalf("Get: %v\n%s", err, out.String())
			}
			for p, want := range map[string]os.FileMode{"a.txt": tc.file, "dir/b.txt": tc.file, "dir": tc.dir, ".git": tc.gd, ".git/refs": tc.gd} {
				fi, err := os.Stat(filepath.Join(dir, p))
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != want {
					t.Errorf("%s has mode %04o, want %04o", p, got, want)
				}
			}
			// Objects, packs and the index stay readable for others, so a non-root user can run git.
			err := filepath.WalkDir(filepath.Join(dir, ".git"), func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o004 == 0 {
					t.Errorf("%s has mode %04o: others cannot read it", p, fi.Mode().Perm())
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
