package static_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/fleetingtest"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/static"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// sshHosts starts n sshd processes with the local plugin's launcher and describes them as static hosts
// that log in with a key file.
func sshHosts(t *testing.T, n int) []static.Host {
	t.Helper()
	dir := t.TempDir()
	priv, pub, err := local.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "id_ed25519")
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(authorized, []byte(pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	net := fmt.Sprintf("127.%d.%d", 200+rand.IntN(50), rand.IntN(256))
	var hosts []static.Host
	for i := range n {
		s, err := local.StartSSHD(t.Context(), local.SSHDOptions{
			Dir:                filepath.Join(dir, fmt.Sprint(i)),
			Address:            fmt.Sprintf("%s.%d", net, 10+i),
			AuthorizedKeysFile: authorized,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Kill() })
		hosts = append(hosts, static.Host{ID: fmt.Sprintf("host-%d", i), Address: s.Addr(), Username: u.Username, KeyPath: keyPath})
	}
	return hosts
}

func TestConformance(t *testing.T) {
	testenv.RequireSSHD(t)
	hosts := sshHosts(t, 3)
	fleetingtest.Run(t, func(t *testing.T) fleeting.InstanceGroup {
		return &static.InstanceGroup{Hosts: hosts}
	}, fleetingtest.Config{})
}

func TestHeartbeatFailsForDeadHost(t *testing.T) {
	testenv.RequireSSHD(t)
	hosts := sshHosts(t, 1)
	// Nothing listens on .254 of that network.
	dead := hosts[0]
	dead.ID = "dead"
	dead.Address = strings.Replace(dead.Address, ".10:", ".254:", 1)
	g := &static.InstanceGroup{Hosts: []static.Host{hosts[0], dead}}
	log := logrus.New()
	log.SetOutput(io.Discard)
	if _, err := g.Init(t.Context(), log, fleeting.Settings{}); err != nil {
		t.Fatal(err)
	}
	if n, err := g.Increase(t.Context(), 2); n != 2 || err != nil {
		t.Fatalf("Increase(2) = %d, %v", n, err)
	}
	if err := g.Heartbeat(t.Context(), hosts[0].ID); err != nil {
		t.Errorf("Heartbeat(live host) = %v", err)
	}
	if err := g.Heartbeat(t.Context(), "dead"); err == nil {
		t.Errorf("Heartbeat(dead host) = nil, want an error")
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name  string
		hosts []static.Host
		want  []string
	}{
		{"no hosts", nil, []string{"hosts"}},
		{"missing id and address", []static.Host{{}}, []string{"hosts[0]: id", "address"}},
		{"duplicate id", []static.Host{{ID: "a", Address: "x"}, {ID: "a", Address: "y"}}, []string{"used twice"}},
		{"unreadable key", []static.Host{{ID: "a", Address: "x", KeyPath: "/nonexistent/key"}}, []string{"key_path", "/nonexistent/key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &static.InstanceGroup{Hosts: tt.hosts}
			_, err := g.Init(t.Context(), logrus.New(), fleeting.Settings{})
			if err == nil {
				t.Fatalf("Init accepted %+v", tt.hosts)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Init error %q does not mention %q", err, w)
				}
			}
		})
	}
}
