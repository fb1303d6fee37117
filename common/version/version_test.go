package version

import (
	"regexp"
	"testing"
)

func TestUserAgent(t *testing.T) {
	oldV, oldR := Version, Revision
	t.Cleanup(func() { Version, Revision = oldV, oldR })
	Version, Revision = "1.2.3", "0123abcd"
	re := regexp.MustCompile(`^fleetrunner 1\.2\.3 \(0123abcd; go[^;]+; [a-z0-9]+/[a-z0-9]+\)$`)
	if ua := UserAgent(); !re.MatchString(ua) {
		t.Fatalf("UserAgent() = %q, want match %s", ua, re)
	}
	Revision = ""
	if Rev() == "" {
		t.Fatal("Rev() must never be empty")
	}
}
