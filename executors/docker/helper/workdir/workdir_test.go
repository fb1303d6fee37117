package workdir

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestPrepareWorldWritable(t *testing.T) {
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// A level made earlier by a root step with the usual umask.
	if err := os.Mkdir(filepath.Join(base, "group"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	project := filepath.Join(base, "group", "project")
	if err := Prepare(base, []string{project, project + ".tmp"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(base, "group"), project, project + ".tmp"} {
		if m := mode(t, p); m != 0o777 {
			t.Errorf("%s has mode %o, want 777", p, m)
		}
	}
	if m := mode(t, base); m != 0o755 {
		t.Errorf("the builds directory itself changed to %o", m)
	}
}

func TestPrepareOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing owners needs root; the Docker tests run it in the helper container")
	}
	base := t.TempDir()
	project := filepath.Join(base, "group", "project")
	if err := os.MkdirAll(filepath.Join(project, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(project, "src", "main.go"), []byte("package main"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Prepare(base, []string{project}, &Owner{UID: 1234, GID: 5678}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(base, "group"), project, filepath.Join(project, "src"), filepath.Join(project, "src", "main.go")} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("%s is owned by %d:%d, want 1234:5678", p, st.Uid, st.Gid)
		}
	}
}

func TestPrepareRejects(t *testing.T) {
	base := t.TempDir()
	for _, dir := range []string{base, filepath.Dir(base), filepath.Join(base, "..", "elsewhere")} {
		if err := Prepare(base, []string{dir}, nil); err == nil {
			t.Errorf("Prepare(%s) outside or at the builds directory succeeded", dir)
		}
	}
}

func TestParseOwner(t *testing.T) {
	tests := []struct {
		in   string
		want Owner
		ok   bool
	}{
		{"1000:1000", Owner{1000, 1000}, true},
		{"0:5", Owner{0, 5}, true},
		{"1000", Owner{}, false},
		{"node:node", Owner{}, false},
		{"-1:2", Owner{}, false},
	}
	for _, tt := range tests {
		got, err := ParseOwner(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseOwner(%q) = %v, %v", tt.in, got, err)
		}
	}
}
