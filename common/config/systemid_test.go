package config

import (
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
)

var systemIDFormat = regexp.MustCompile(`^s_[0-9a-f]{12}$`)

func TestSystemIDIsCreatedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "etc", "config.toml")
	id, err := LoadOrCreateSystemID(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !systemIDFormat.MatchString(id) {
		t.Fatalf("system ID %q does not match s_ + 12 hex", id)
	}
	idPath := filepath.Join(dir, "etc", SystemIDFileName)
	info, err := os.Stat(idPath)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", info.Mode().Perm())
	}
	for range 3 {
		again, err := LoadOrCreateSystemID(cfgPath)
		if err != nil || again != id {
			t.Fatalf("second run got %q, %v; want %q", again, err, id)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(idPath))
	if len(entries) != 1 {
		t.Fatalf("stray files beside the ID: %v", entries)
	}
}

func TestSystemIDKeepsUpstreamAndReplacesGarbage(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	idPath := filepath.Join(dir, SystemIDFileName)

	if err := os.WriteFile(idPath, []byte("r_0123456789ab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if id, err := LoadOrCreateSystemID(cfgPath); err != nil || id != "r_0123456789ab" {
		t.Fatalf("upstream ID not kept: %q, %v", id, err)
	}

	if err := os.WriteFile(idPath, []byte("not an id"), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := LoadOrCreateSystemID(cfgPath)
	if err != nil || !systemIDFormat.MatchString(id) {
		t.Fatalf("garbage not replaced: %q, %v", id, err)
	}
	if again, _ := LoadOrCreateSystemID(cfgPath); again != id {
		t.Fatalf("replacement not kept: %q then %q", id, again)
	}
}

func TestSystemIDConcurrentCreatorsAgree(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			id, err := LoadOrCreateSystemID(cfgPath)
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("creators disagree: %v", ids)
		}
	}
}

func TestDefaultPath(t *testing.T) {
	t.Setenv("CONFIG_FILE", "/tmp/x/config.toml")
	if got := DefaultPath(); got != "/tmp/x/config.toml" {
		t.Fatalf("with CONFIG_FILE: %s", got)
	}
	t.Setenv("CONFIG_FILE", "")
	home := t.TempDir()
	t.Setenv("HOME", home)
	want := filepath.Join(home, ".fleetrunner", "config.toml")
	if os.Geteuid() == 0 {
		want = "/etc/fleetrunner/config.toml"
	}
	if got := DefaultPath(); got != want {
		t.Fatalf("DefaultPath() = %s, want %s", got, want)
	}
}
