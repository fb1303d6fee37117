package cache

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/archive"
)

func write(t *testing.T, dir, rel, content string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestArchiveExtractRoundTrip(t *testing.T) {
	project := t.TempDir()
	write(t, project, ".gocache/a/obj", "object")
	write(t, project, "vendor/m/mod.go", "package m")
	write(t, project, "src/main.go", "package main")
	cacheDir := t.TempDir()
	keyFile := filepath.Join(cacheDir, "project", "main-key", "cache.zip")
	fallback := filepath.Join(cacheDir, "project", "default", "cache.zip")

	var out bytes.Buffer
	if err := Archive(project, fallback, archive.Selection{Paths: []string{".gocache/", "vendor/**/*.go", "missing/"}}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "missing/: no matching files") {
		t.Errorf("no warning for an unmatched path:\n%s", out.String())
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(fallback), ".*tmp")); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}

	tests := []struct {
		name     string
		files    []string
		wantUsed string
		wantOut  string
	}{
		{"fallback key", []string{keyFile, fallback}, fallback, "Successfully extracted cache"},
		{"no cache", []string{keyFile}, "", "No cache found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "build")
			out.Reset()
			used, err := Extract(dst, tc.files, &out)
			if err != nil {
				t.Fatal(err)
			}
			if used != tc.wantUsed || !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("used %q, out %q; want %q, %q", used, out.String(), tc.wantUsed, tc.wantOut)
			}
			if tc.wantUsed == "" {
				return
			}
			for rel, want := range map[string]string{".gocache/a/obj": "object", "vendor/m/mod.go": "package m"} {
				if b, err := os.ReadFile(filepath.Join(dst, rel)); err != nil || string(b) != want {
					t.Errorf("%s = %q, %v", rel, b, err)
				}
			}
			if _, err := os.Stat(filepath.Join(dst, "src", "main.go")); err == nil {
				t.Error("src/main.go was cached although no path selects it")
			}
		})
	}

	// The key's own archive wins over the fallback once it exists.
	write(t, project, ".gocache/a/obj", "newer")
	if err := Archive(project, keyFile, archive.Selection{Paths: []string{".gocache"}}, &out); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if used, err := Extract(dst, []string{keyFile, fallback}, &out); err != nil || used != keyFile {
		t.Fatalf("used %q, %v; want the key's archive", used, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, ".gocache/a/obj")); string(b) != "newer" {
		t.Errorf("restored %q, want the key's content", b)
	}
}

func TestArchiveNothingLeavesNoFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cache.zip")
	var out bytes.Buffer
	if err := Archive(t.TempDir(), file, archive.Selection{Paths: []string{"none"}}, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); err == nil || !strings.Contains(out.String(), "no files to cache") {
		t.Errorf("archive written for nothing (stat err %v), out %q", err, out.String())
	}
}

func TestExtractCorruptArchiveFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cache.zip")
	if err := os.WriteFile(file, []byte("not a zip"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(t.TempDir(), []string{file}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("err = %v, want one naming %s", err, file)
	}
}
