package connector_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

func TestCredentials(t *testing.T) {
	r := startRig(t, "i-cred")
	tests := []struct {
		name string
		edit func(*fleeting.ConnectInfo)
	}{
		{"key from plugin", func(*fleeting.ConnectInfo) {}},
		{"key_path", func(i *fleeting.ConnectInfo) { i.Key, i.KeyPath = nil, r.keyPath }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := r.info
			tt.edit(&info)
			c, err := connector.Dial(t.Context(), info, connector.Config{})
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			out, code, err := c.Run(t.Context(), "echo hello; exit 3")
			if err != nil || code != 3 || strings.TrimSpace(string(out)) != "hello" {
				t.Errorf("Run = %q, %d, %v; want \"hello\", 3, nil", out, code, err)
			}
		})
	}
}

func TestPassword(t *testing.T) {
	addr := passwordServer(t, "alice", "s3cret")
	info := fleeting.ConnectInfo{ID: "i-pw", InternalAddr: addr}
	info.Username, info.Password = "alice", "s3cret"
	c, err := connector.Dial(t.Context(), info, connector.Config{})
	if err != nil {
		t.Fatalf("Dial with password: %v", err)
	}
	defer c.Close()
	out, code, err := c.Run(t.Context(), "true")
	if err != nil || code != 0 || string(out) != "ran: true" {
		t.Errorf("Run = %q, %d, %v", out, code, err)
	}

	// Refused credentials are tried again until the timeout (a booting machine may not have installed
	// them yet), then reported with the reason.
	info.Password = "hunter2-wrong"
	_, err = connector.Dial(t.Context(), info, connector.Config{Timeout: 600 * time.Millisecond})
	if err == nil {
		t.Fatal("Dial with a wrong password succeeded")
	}
	for _, want := range []string{"i-pw", "600ms", "unable to authenticate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), info.Password) {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestCredentialErrors(t *testing.T) {
	tests := []struct {
		name string
		info fleeting.ConnectInfo
		want string
	}{
		{"none", fleeting.ConnectInfo{ID: "i-1", InternalAddr: "127.0.0.1"}, "no credentials for instance i-1"},
		{"unreadable key_path", fleeting.ConnectInfo{ID: "i-2", InternalAddr: "127.0.0.1",
			ConnectorConfig: fleeting.ConnectorConfig{KeyPath: "/nonexistent/id_rsa"}}, "/nonexistent/id_rsa"},
		{"garbage key", fleeting.ConnectInfo{ID: "i-3", InternalAddr: "127.0.0.1",
			ConnectorConfig: fleeting.ConnectorConfig{Key: []byte("not a key")}}, "parse private key (the plugin's key) for instance i-3"},
		{"no address", fleeting.ConnectInfo{ID: "i-4"}, "instance i-4 has no address"},
		{"winrm", fleeting.ConnectInfo{ID: "i-5", ConnectorConfig: fleeting.ConnectorConfig{Protocol: "winrm"}}, `protocol "winrm"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := connector.Dial(t.Context(), tt.info, connector.Config{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Dial = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestAddress(t *testing.T) {
	tests := []struct {
		name     string
		info     fleeting.ConnectInfo
		external bool
		want     string
	}{
		{"internal default port", fleeting.ConnectInfo{InternalAddr: "10.0.0.1", ExternalAddr: "1.2.3.4"}, false, "10.0.0.1:22"},
		{"external asked", fleeting.ConnectInfo{InternalAddr: "10.0.0.1", ExternalAddr: "1.2.3.4"}, true, "1.2.3.4:22"},
		{"external asked, only internal", fleeting.ConnectInfo{InternalAddr: "10.0.0.1"}, true, "10.0.0.1:22"},
		{"only external", fleeting.ConnectInfo{ExternalAddr: "1.2.3.4"}, false, "1.2.3.4:22"},
		{"protocol_port", fleeting.ConnectInfo{InternalAddr: "10.0.0.1", ConnectorConfig: fleeting.ConnectorConfig{ProtocolPort: 2222}}, false, "10.0.0.1:2222"},
		{"port in address wins", fleeting.ConnectInfo{InternalAddr: "10.0.0.1:2200", ConnectorConfig: fleeting.ConnectorConfig{ProtocolPort: 2222}}, false, "10.0.0.1:2200"},
		{"ipv6", fleeting.ConnectInfo{InternalAddr: "fd00::1"}, false, "[fd00::1]:22"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := connector.Address(tt.info, tt.external)
			if err != nil || got != tt.want {
				t.Errorf("Address = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestHostKeyPinnedThenChangeRefused(t *testing.T) {
	r := startRig(t, "i-hk")
	store := &connector.MemoryHostKeys{}
	cfg := connector.Config{HostKeys: store}
	c, err := connector.Dial(t.Context(), r.info, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	pinned, ok, _ := store.HostKey("i-hk")
	if !ok || pinned != r.sshd.HostKey {
		t.Fatalf("pinned %q, want the instance's host key %q", pinned, r.sshd.HostKey)
	}
	// The same key again is accepted.
	c, err = connector.Dial(t.Context(), r.info, cfg)
	if err != nil {
		t.Fatalf("second Dial with the pinned key: %v", err)
	}
	c.Close()

	// Same address and port, new host key: refused, naming the instance and both fingerprints.
	if err := r.sshd.Kill(); err != nil {
		t.Fatal(err)
	}
	r.opts.Dir = filepath.Join(t.TempDir(), "rebuilt")
	r.start(t)
	_, err = connector.Dial(t.Context(), r.info, cfg)
	var changed *connector.HostKeyChangedError
	if !errors.As(err, &changed) || !errors.Is(err, connector.ErrHostKeyChanged) {
		t.Fatalf("Dial after the host key changed = %v, want HostKeyChangedError", err)
	}
	oldKey, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(pinned))
	newKey, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(r.sshd.HostKey))
	for _, want := range []string{"i-hk", ssh.FingerprintSHA256(oldKey), ssh.FingerprintSHA256(newKey)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// Forgetting the pin (the instance was really replaced) lets it in again.
	_ = store.ForgetHostKey("i-hk")
	c, err = connector.Dial(t.Context(), r.info, cfg)
	if err != nil {
		t.Fatalf("Dial after ForgetHostKey: %v", err)
	}
	c.Close()
}

func TestFileHostKeysPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hostkeys.json")
	s, err := connector.OpenFileHostKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PinHostKey("i-1", "ssh-ed25519 AAAA1"); err != nil {
		t.Fatal(err)
	}
	if err := s.PinHostKey("i-2", "ssh-ed25519 AAAA2"); err != nil {
		t.Fatal(err)
	}
	if err := s.ForgetHostKey("i-2"); err != nil {
		t.Fatal(err)
	}
	s2, err := connector.OpenFileHostKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok, _ := s2.HostKey("i-1"); !ok || k != "ssh-ed25519 AAAA1" {
		t.Errorf("reloaded i-1 = %q, %v", k, ok)
	}
	if _, ok, _ := s2.HostKey("i-2"); ok {
		t.Errorf("forgotten i-2 came back after reload")
	}
}

func TestKeepaliveDetectsFrozenInstance(t *testing.T) {
	r := startRig(t, "i-ka")
	c, err := connector.Dial(t.Context(), r.info, connector.Config{Keepalive: 200 * time.Millisecond, KeepaliveMaxMissed: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := r.sshd.Freeze(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("connection to a frozen instance still open")
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "keepalive") || !strings.Contains(err.Error(), "i-ka") {
		t.Errorf("Err() = %v, want a keepalive error naming the instance", err)
	}
	_, _, err = c.Run(t.Context(), "true")
	if err == nil {
		t.Errorf("Run on a closed connection succeeded")
	}
}

func TestRunHonoursContext(t *testing.T) {
	r := startRig(t, "i-ctx")
	c, err := connector.Dial(t.Context(), r.info, connector.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, code, err := c.Run(ctx, "sleep 30")
	if !errors.Is(err, context.DeadlineExceeded) || code != -1 {
		t.Errorf("Run(sleep 30) with a short deadline = %d, %v; want -1, deadline exceeded", code, err)
	}
}

// A session the server refuses because its MaxSessions are in use is tried again until one is free, as
// happens when a job opens a Docker connection the moment another one's closes.
func TestRefusedSessionIsRetried(t *testing.T) {
	r := startRig(t, "i-sessions", func(o *local.SSHDOptions) { o.MaxSessions = 1 })
	c, err := connector.Dial(t.Context(), r.info, connector.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	marker := filepath.Join(t.TempDir(), "started")
	first := make(chan error, 1)
	go func() {
		_, _, err := c.Run(t.Context(), "touch "+marker+"; sleep 1")
		first <- err
	}()
	for { // the first session holds the only slot once its command runs
		if _, err := os.Stat(marker); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, code, err := c.Run(t.Context(), "echo second")
	if err != nil || code != 0 || string(out) != "second\n" {
		t.Fatalf("Run while the only session is taken = %q, %d, %v; want it to wait for the session", out, code, err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first Run: %v", err)
	}
}

func TestDialTimeout(t *testing.T) {
	r := startRig(t, "i-slow")
	if err := r.sshd.Freeze(); err != nil { // accepts TCP (kernel backlog) but never speaks SSH
		t.Fatal(err)
	}
	_, err := connector.Dial(t.Context(), r.info, connector.Config{Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "i-slow") || !strings.Contains(err.Error(), "300ms") {
		t.Errorf("Dial to a hung instance = %v, want a handshake timeout naming the instance and the timeout", err)
	}
}
