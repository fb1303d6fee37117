package demo

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// TestKillLeftovers: an instance whose sshd outlived the runner is found in the plugin's state dir and
// killed; a record whose sshd is gone is not reported.
func TestKillLeftovers(t *testing.T) {
	testenv.RequireSSHD(t)
	stateDir := t.TempDir()
	record := func(id string, pid int, s *local.SSHD) {
		dir := filepath.Join(stateDir, "instances", id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		rec := map[string]any{"id": id, "pid": pid}
		if s != nil {
			rec["address"], rec["port"] = s.Address, s.Port
		}
		data, _ := json.Marshal(rec)
		if err := os.WriteFile(filepath.Join(dir, "instance.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(stateDir, "instances", "demo-alive")
	keys := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(keys, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := local.StartSSHD(t.Context(), local.SSHDOptions{Dir: dir, Address: "127.0.0.1", AuthorizedKeysFile: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Kill() })
	record("demo-alive", s.Pid, s)
	// A pid that is not this instance's sshd (our own test process) must not be taken for it.
	record("demo-gone", os.Getpid(), nil)

	left, err := killLeftovers(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(left, []string{"demo-alive"}) {
		t.Errorf("left = %v, want [demo-alive]", left)
	}
	// Looked at from /proc as the demo does: our own child may stay a zombie until its Wait reaps it.
	if _, alive := local.AdoptSSHD(s.Pid, dir, s.Address, s.Port, ""); alive {
		t.Error("the leftover sshd still runs")
	}
	if left, err := killLeftovers(stateDir); err != nil || len(left) != 0 {
		t.Errorf("second look: %v, %v; want nothing left", left, err)
	}
}
