package archive

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	git "github.com/go-git/go-git/v5"
)

// tree writes files (path -> content) under a new temp dir; a content starting with "->" makes a symlink.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(p, "/"):
			err = os.MkdirAll(full, 0o755)
		case strings.HasPrefix(c, "->"):
			err = os.Symlink(c[2:], full)
		default:
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCollect(t *testing.T) {
	outside := t.TempDir()
	dir := tree(t, map[string]string{
		"bin/app": "app", "bin/app.tmp": "tmp", "bin/sub/x.txt": "x", "docs/a.txt": "a", "docs/deep/b.txt": "b",
		"empty/": "", "link": "->bin/app", "escape": "->" + outside, "cache/keep/k": "k", "cache/drop/d": "d",
	})
	tests := []struct {
		name          string
		sel           Selection
		want          []string
		wantUnmatched []string
		wantOutside   string
	}{
		{name: "directory with exclude", sel: Selection{Paths: []string{"bin/"}, Exclude: []string{"bin/*.tmp"}},
			want: []string{"bin", "bin/app", "bin/sub", "bin/sub/x.txt"}},
		{name: "doublestar glob", sel: Selection{Paths: []string{"**/*.txt"}},
			want: []string{"bin/sub/x.txt", "docs/a.txt", "docs/deep/b.txt"}},
		{name: "excluded directory", sel: Selection{Paths: []string{"cache"}, Exclude: []string{"cache/drop"}},
			want: []string{"cache", "cache/keep", "cache/keep/k"}},
		{name: "absolute path inside and symlink kept as link", sel: Selection{Paths: []string{filepath.Join("DIR", "docs", "a.txt"), "link", "empty"}},
			want: []string{"docs/a.txt", "empty", "link"}},
		{name: "unmatched reported", sel: Selection{Paths: []string{"nothing/*", "docs/a.txt"}},
			want: []string{"docs/a.txt"}, wantUnmatched: []string{"nothing/*"}},
		{name: "dot dot refused", sel: Selection{Paths: []string{"../secret"}}, wantOutside: "../secret"},
		{name: "absolute outside refused", sel: Selection{Paths: []string{"/etc/passwd"}}, wantOutside: "/etc/passwd"},
		{name: "through symlinked directory refused", sel: Selection{Paths: []string{"escape/*"}}, wantOutside: "escape/*"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(outside, "s"), []byte("secret"), 0o644); err != nil {
				t.Fatal(err)
			}
			for i, p := range tc.sel.Paths {
				tc.sel.Paths[i] = strings.Replace(p, "DIR", dir, 1)
			}
			c, err := Collect(dir, tc.sel)
			if tc.wantOutside != "" {
				var oe *OutsideError
				if !errors.As(err, &oe) || !strings.Contains(err.Error(), tc.wantOutside) {
					t.Fatalf("err = %v, want an OutsideError naming %q", err, tc.wantOutside)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Entries, tc.want) {
				t.Errorf("entries = %q, want %q", c.Entries, tc.want)
			}
			if !slices.Equal(c.Unmatched, tc.wantUnmatched) {
				t.Errorf("unmatched = %q, want %q", c.Unmatched, tc.wantUnmatched)
			}
		})
	}
}

func TestCollectUntracked(t *testing.T) {
	dir := tree(t, map[string]string{"tracked.txt": "t", "new.txt": "n", "out/build.log": "l", ".gitignore": "*.log\n"})
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"tracked.txt", ".gitignore"} {
		if _, err := wt.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Collect(dir, Selection{Untracked: true, Exclude: []string{"new.*"}})
	if err != nil {
		t.Fatal(err)
	}
	// Ignored files count as untracked (upstream's rule); .git is never taken.
	if want := []string{"out/build.log"}; !slices.Equal(c.Entries, want) || c.Excluded != 1 {
		t.Errorf("entries = %q (excluded %d), want %q (excluded 1)", c.Entries, c.Excluded, want)
	}
	if _, err := Collect(t.TempDir(), Selection{Untracked: true}); err == nil || !strings.Contains(err.Error(), "git work tree") {
		t.Errorf("untracked outside a repository: err = %v", err)
	}
}

func TestZipRoundTrip(t *testing.T) {
	src := tree(t, map[string]string{"a/b.txt": "hello", "a/empty/": "", "a/link": "->b.txt", "run.sh": "#!/bin/sh\n"})
	if err := os.Chmod(filepath.Join(src, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Collect(src, Selection{Paths: []string{"a", "run.sh"}})
	if err != nil {
		t.Fatal(err)
	}
	zipPath := filepath.Join(t.TempDir(), "sub", "x.zip")
	if err := WriteFileAtomic(zipPath, func(w io.Writer) error { return WriteZip(w, src, c.Entries) }); err != nil {
		t.Fatal(err)
	}
	dst := tree(t, map[string]string{"a/b.txt": "old", "keep.txt": "k"})
	n, err := ExtractZip(zipPath, dst)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(c.Entries) {
		t.Errorf("extracted %d entries, want %d", n, len(c.Entries))
	}
	checks := []struct{ path, want string }{{"a/b.txt", "hello"}, {"keep.txt", "k"}, {"a/link", "hello"}}
	for _, ck := range checks {
		if b, err := os.ReadFile(filepath.Join(dst, ck.path)); err != nil || string(b) != ck.want {
			t.Errorf("%s = %q, %v; want %q", ck.path, b, err, ck.want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(dst, "a", "link")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("a/link is not a symlink: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("run.sh mode lost: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "a", "empty")); err != nil || !fi.IsDir() {
		t.Errorf("empty directory lost: %v", err)
	}
}

// evilZip writes a zip with the given entries (name -> content; "->" prefix makes a symlink).
func evilZip(t *testing.T, entries [][2]string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "evil.zip")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e[0]}
		content := e[1]
		if strings.HasPrefix(content, "->") {
			h.SetMode(os.ModeSymlink | 0o777)
			content = content[2:]
		} else {
			h.SetMode(0o644)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, content); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExtractStaysInside(t *testing.T) {
	outside := t.TempDir()
	tests := []struct {
		name    string
		entries [][2]string
	}{
		{"dot dot", [][2]string{{"../escaped", "x"}}},
		{"absolute", [][2]string{{"/" + filepath.Join(outside, "escaped"), "x"}}},
		{"through a planted symlink", [][2]string{{"link", "->" + outside}, {"link/escaped", "x"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "d")
			if _, err := ExtractZip(evilZip(t, tc.entries), dst); err == nil {
				t.Error("ExtractZip succeeded")
			}
			for _, p := range []string{filepath.Join(outside, "escaped"), filepath.Join(filepath.Dir(dst), "escaped")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written", p)
				}
			}
		})
	}
}

func TestWriteGzipAndRaw(t *testing.T) {
	dir := tree(t, map[string]string{"r/one.xml": "<one/>", "r/two.xml": "<two/>"})
	var buf bytes.Buffer
	if err := Write(&buf, FormatGzip, dir, []string{"r", "r/one.xml", "r/two.xml"}); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		zr.Multistream(false)
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, zr.Name+"="+string(b))
		if err := zr.Reset(&buf); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"r/one.xml=<one/>", "r/two.xml=<two/>"}; !slices.Equal(got, want) {
		t.Errorf("gzip members = %q, want %q", got, want)
	}

	buf.Reset()
	if err := Write(&buf, FormatRaw, dir, []string{"r", "r/one.xml"}); err != nil || buf.String() != "<one/>" {
		t.Errorf("raw = %q, %v", buf.String(), err)
	}
	if err := Write(io.Discard, FormatRaw, dir, []string{"r/one.xml", "r/two.xml"}); err == nil || !strings.Contains(err.Error(), "exactly one file") {
		t.Errorf("raw with two files: err = %v", err)
	}
	if err := Write(io.Discard, FormatGzip, dir, []string{"r"}); !errors.Is(err, ErrNoFiles) {
		t.Errorf("gzip of a bare directory: err = %v, want ErrNoFiles", err)
	}
	if _, err := ParseFormat("tar"); err == nil {
		t.Error("ParseFormat(tar) succeeded")
	}
}
