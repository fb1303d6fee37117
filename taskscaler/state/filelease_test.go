package state

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestFileLease(t *testing.T) {
	dir := t.TempDir()
	r := Runner{ID: 9, URL: "https://gitlab.example.com"}
	alpha := Holder{SystemID: "s_0123456789ab", Host: "manager", PID: 101}
	beta := Holder{SystemID: "s_ba9876543210", Host: "manager", PID: 202}
	// Two leases in one process stand for two managers: flock locks belong to the open file, not the
	// process.
	a, b := NewFileLease(dir, r, alpha), NewFileLease(dir, r, beta)
	now := time.Now()

	if got, err := b.Holder(t.Context()); err != nil || got != (Tenure{}) {
		t.Fatalf("Holder before any acquisition = %+v, %v; want the zero Tenure", got, err)
	}
	if tok, err := a.Acquire(t.Context()); err != nil || tok != 1 {
		t.Fatalf("first Acquire = %d, %v; want token 1", tok, err)
	}
	_, err := b.Acquire(t.Context())
	var le *LeaseError
	if !errors.Is(err, ErrHeld) || !errors.As(err, &le) || le.Current.Holder != alpha {
		t.Fatalf("second manager's Acquire = %v, want ErrHeld naming %s", err, alpha)
	}
	if !strings.Contains(err.Error(), alpha.SystemID) || !strings.Contains(err.Error(), "pid 101") {
		t.Errorf("refusal %q does not name the holder", err)
	}
	if got, err := b.Holder(t.Context()); err != nil || got.Holder != alpha || !got.HeldAt(now) {
		t.Fatalf("Holder seen by the other manager = %+v, %v; want %s holding it", got, err, alpha)
	}
	if err := a.Renew(t.Context()); err != nil {
		t.Fatalf("Renew by the holder: %v", err)
	}
	if err := b.Renew(t.Context()); !errors.Is(err, ErrLost) {
		t.Fatalf("Renew by a manager that never held it = %v, want ErrLost", err)
	}

	if err := a.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Holder(t.Context()); err != nil || got.Holder != alpha || got.HeldAt(now) {
		t.Fatalf("Holder after the release = %+v, %v; want %s named but not holding it", got, err, alpha)
	}
	if tok, err := b.Acquire(t.Context()); err != nil || tok != 2 {
		t.Fatalf("Acquire after the release = %d, %v; want token 2", tok, err)
	}
	if got, err := a.Holder(t.Context()); err != nil || got.Holder != beta || got.Token != 2 || !got.HeldAt(now) {
		t.Fatalf("Holder after the handover = %+v, %v; want %s with token 2", got, err, beta)
	}
	if fi, err := os.Stat(LeasePath(dir, r)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lease file: %v, %v; want mode 0600", fi, err)
	}
}

func TestFileLeaseCorrupt(t *testing.T) {
	dir := t.TempDir()
	r := Runner{ID: 9, URL: "https://gitlab.example.com"}
	l := NewFileLease(dir, r, Holder{SystemID: "s_0123456789ab", Host: "manager", PID: 1})
	if _, err := l.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(LeasePath(dir, r), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Holder(t.Context()); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("Holder of a corrupt lease file: %v, want an error saying what to do", err)
	}
}
