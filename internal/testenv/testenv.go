// Package testenv decides whether a test that needs a real Docker Engine, OpenSSH sshd, git or moto can
// run. Where one is missing the test is skipped with a message, except when FLEETRUNNER_REQUIRE_ALL is
// set (as .ci/run does): then the missing piece fails the test, so CI cannot go green by skipping.
package testenv

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// RequireAllEnv turns skips into failures when set to a non-empty value.
const RequireAllEnv = "FLEETRUNNER_REQUIRE_ALL"

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireAllEnv) != "" {
		t.Fatalf("required by %s but missing: "+format, append([]any{RequireAllEnv}, args...)...)
	}
	t.Skipf("skipping: "+format, args...)
}

// DockerSocket is the engine socket the tests use: DOCKER_HOST's unix path or the default.
func DockerSocket() string {
	if h := os.Getenv("DOCKER_HOST"); len(h) > len("unix://") && h[:7] == "unix://" {
		return h[7:]
	}
	return "/var/run/docker.sock"
}

// RequireDocker skips (or fails in CI) unless a Docker Engine answers on DockerSocket.
func RequireDocker(t testing.TB) {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(context.Background(), "unix", DockerSocket())
	if err != nil {
		skipOrFail(t, "no Docker Engine at %s (%v); start dockerd or set DOCKER_HOST", DockerSocket(), err)
		return
	}
	_ = conn.Close()
}

// SSHDPath is where Debian's openssh-server installs sshd.
const SSHDPath = "/usr/sbin/sshd"

// RequireSSHD skips (or fails in CI) unless OpenSSH's sshd is installed.
func RequireSSHD(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(SSHDPath); err != nil {
		skipOrFail(t, "no OpenSSH sshd at %s; apt-get install openssh-server", SSHDPath)
	}
}

// RequireCommand skips (or fails in CI) unless name is on PATH; hint says how to install it.
func RequireCommand(t testing.TB, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not on PATH; %s", name, hint)
	}
	return p
}
