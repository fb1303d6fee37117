package testenv

import (
	"os"
	"testing"
)

// RequireRoot skips (or fails in CI) unless the test runs as root, as one needs to listen on port 22 or
// to hide a Docker socket in a mount namespace of its own.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "not root, which %s needs; run the tests as root (CI does)", why)
	}
}
