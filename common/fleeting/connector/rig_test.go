package connector_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// rig is one real sshd "instance" and the ConnectInfo that reaches it.
type rig struct {
	mu         sync.Mutex // guards sshd for rigs started in the background
	sshd       *local.SSHD
	info       fleeting.ConnectInfo
	keyPath    string
	authorized string
	opts       local.SSHDOptions
}

// startRig starts an sshd on a loopback address of its own that accepts a fresh client key.
func startRig(t *testing.T, id string, configure ...func(*local.SSHDOptions)) *rig {
	t.Helper()
	r := newRig(t, id, configure...)
	r.start(t)
	return r
}

// newRig prepares an instance whose sshd is not started yet (a machine still booting): its address,
// port, keys and ConnectInfo are fixed, r.start brings it up.
func newRig(t *testing.T, id string, configure ...func(*local.SSHDOptions)) *rig {
	t.Helper()
	testenv.RequireSSHD(t)
	dir := t.TempDir()
	priv, pub, err := local.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{keyPath: filepath.Join(dir, "client_key"), authorized: filepath.Join(dir, "authorized_keys")}
	if err := os.WriteFile(r.keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.authorized, []byte(pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	r.opts = local.SSHDOptions{
		Dir:                filepath.Join(dir, "instance"),
		Address:            fmt.Sprintf("127.%d.%d.%d", 200+mrand.IntN(50), mrand.IntN(256), 2+mrand.IntN(250)),
		AuthorizedKeysFile: r.authorized,
	}
	for _, c := range configure {
		c(&r.opts)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(r.opts.Address, "0"))
	if err != nil {
		t.Fatal(err)
	}
	r.opts.Port = l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r.info = fleeting.ConnectInfo{
		ConnectorConfig: fleeting.ConnectorConfig{Protocol: fleeting.ProtocolSSH, Username: u.Username, Key: priv},
		ID:              id,
		InternalAddr:    r.opts.Address,
	}
	r.info.ProtocolPort = r.opts.Port
	return r
}

// start (re)starts the rig's sshd, on the same address, port and directory (so the same host key).
func (r *rig) start(t *testing.T) {
	t.Helper()
	s, err := local.StartSSHD(t.Context(), r.opts)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.sshd = s
	r.mu.Unlock()
	t.Cleanup(func() {
		s.Thaw()
		_ = s.Kill()
	})
}

// passwordServer is an in-process SSH server (OpenSSH here cannot check a password without touching the
// machine's user database) that lets user in with password and answers every exec with
// "ran: <command>" and exit status 0.
func passwordServer(t *testing.T, user, password string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PasswordCallback: func(c ssh.ConnMetadata, p []byte) (*ssh.Permissions, error) {
		if c.User() == user && string(p) == password {
			return nil, nil
		}
		return nil, errors.New("wrong password")
	}}
	cfg.AddHostKey(signer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveSSH(conn, cfg)
		}
	}()
	return l.Addr().String()
}

func serveSSH(conn net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		_ = conn.Close()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			for req := range creqs {
				if req.Type != "exec" {
					_ = req.Reply(false, nil)
					continue
				}
				var exec struct{ Command string }
				_ = ssh.Unmarshal(req.Payload, &exec)
				_ = req.Reply(true, nil)
				_, _ = ch.Write([]byte("ran: " + exec.Command))
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
				_ = ch.Close()
			}
		}()
	}
}
