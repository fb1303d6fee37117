package badinput_test

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// sshTimeout is connector_config timeout for the rows: the connector waits this long for an instance
// that does not let it in, as for one still booting, before it gives up. Its attempts start 0, 0.25,
// 0.75 and 1.75 s in; 3 s leaves the last one time to fail on its own, so that its error, which is
// the one reported, is the instance's answer rather than the deadline.
const sshTimeout = 3 * time.Second

// TestBadSSH: instances the connector cannot use, against a real sshd on loopback that accepts one
// client key. What is seen is the error the connector returns, which the runner logs and puts in the
// job's log.
func TestBadSSH(t *testing.T) {
	testenv.RequireSSHD(t)
	dir := t.TempDir()
	priv, pub, err := local.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, otherPub, err := local.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"id_ed25519": priv, "other_ed25519": other, "authorized_keys": []byte(pub + "\n"), "not_a_key": []byte("ssh-ed25519 AAAA… this is a public key\n")}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sshd, err := local.StartSSHD(t.Context(), local.SSHDOptions{Dir: filepath.Join(dir, "sshd"), Address: "127.0.0.1", AuthorizedKeysFile: filepath.Join(dir, "authorized_keys")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sshd.Kill() })
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	// instance is what a plugin hands the connector for the sshd, logging in with keyFile.
	instance := func(keyFile string) fleeting.ConnectInfo {
		return fleeting.ConnectInfo{ID: "i-badinput", InternalAddr: sshd.Addr(),
			ConnectorConfig: fleeting.ConnectorConfig{Username: u.Username, KeyPath: filepath.Join(dir, keyFile), Timeout: sshTimeout}}
	}
	// dial connects as the runner does and returns the error, with the sshd's address as $ADDR.
	dial := func(t *testing.T, info fleeting.ConnectInfo, hostKeys connector.HostKeyStore) string {
		c, err := connector.Dial(t.Context(), info, connector.Config{HostKeys: hostKeys})
		if err == nil {
			_ = c.Close()
			t.Fatalf("the connector logged in to %s", info.InternalAddr)
		}
		return strings.ReplaceAll(err.Error(), info.InternalAddr, "$ADDR")
	}
	runRows(t, []row{
		{
			name: "wrong key", input: "a client key the instance does not accept",
			seen: func(t *testing.T) string { return dial(t, instance("other_ed25519"), nil) },
			want: []string{"instance i-badinput: SSH did not answer within the connector timeout of 3s (",
				"check the instance's security group, sshd and key, or raise connector_config timeout for a slow-booting image",
				`ssh handshake with instance i-badinput at $ADDR as "` + u.Username + `": ssh: handshake failed: ssh: unable to authenticate`},
		},
		{
			name: "host key changed", input: "the instance offers another host key than the one pinned for it",
			seen: func(t *testing.T) string {
				pinned := &connector.MemoryHostKeys{}
				if err := pinned.PinHostKey("i-badinput", otherPub); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				seen := dial(t, instance("id_ed25519"), pinned)
				if waited := time.Since(start); waited >= sshTimeout {
					t.Errorf("the connector waited %s for an instance whose host key changed; it must refuse at once", waited)
				}
				return seen
			},
			want: []string{"host key of instance i-badinput changed: pinned SHA256:", "refusing to connect (if the instance was really rebuilt, remove its entry from the host key store)"},
		},
		{
			name: "nothing listening", input: "no sshd on the instance's address",
			seen: func(t *testing.T) string {
				info := instance("id_ed25519")
				info.InternalAddr = "127.0.0.1:9"
				return dial(t, info, nil)
			},
			want: []string{"instance i-badinput: SSH did not answer within the connector timeout of 3s (",
				"dial instance i-badinput at $ADDR: dial tcp $ADDR: connect: connection refused"},
		},
		{
			name: "key file missing", input: "connector_config key_path names no file",
			seen: func(t *testing.T) string {
				return strings.ReplaceAll(dial(t, instance("missing_ed25519"), nil), dir, "$DIR")
			},
			want: []string{"read key_path for instance i-badinput: open $DIR/missing_ed25519: no such file or directory"},
		},
		{
			name: "key file not a private key", input: "connector_config key_path names a public key",
			seen: func(t *testing.T) string { return strings.ReplaceAll(dial(t, instance("not_a_key"), nil), dir, "$DIR") },
			want: []string{"parse private key (key_path $DIR/not_a_key) for instance i-badinput: ssh: no key found"},
		},
		{
			name: "no credentials", input: "neither key_path nor password",
			seen: func(t *testing.T) string {
				info := instance("")
				info.KeyPath = ""
				return dial(t, info, nil)
			},
			want: []string{"no credentials for instance i-badinput: set key_path or password in connector_config, or use a plugin that provides a key"},
		},
		{
			name: "no Docker Engine", input: "sshd lets the runner in but no Docker Engine listens on the instance",
			seen: func(t *testing.T) string {
				pool := connector.NewPool(connector.Config{Timeout: sshTimeout, DockerHost: "unix://" + filepath.Join(dir, "no-docker.sock")},
					func(context.Context, string) (fleeting.ConnectInfo, error) { return instance("id_ed25519"), nil })
				defer pool.Close()
				err := pool.WaitDocker(t.Context(), "i-badinput")
				if err == nil {
					t.Fatal("the connector found a Docker Engine")
				}
				return strings.ReplaceAll(err.Error(), dir, "$DIR")
			},
			want: []string{"instance i-badinput: Docker Engine did not answer within the connector timeout of 3s (",
				"check that the image or its user data installs and starts Docker and lets the login user use it, or raise connector_config timeout",
				"$DIR/no-docker.sock"},
		},
	})
}
