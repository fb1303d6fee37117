package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// NoExpiry is the Expires of a file lease that is held: it lasts as long as its holder's process.
var NoExpiry = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// FileLease is the file backend's lease: an exclusive flock on a lock file beside the runner's state
// file. It keeps a second manager on the same host (or on a file system whose locks work across hosts)
// from managing the same runner. It has no standby: it never expires, and the kernel drops it when its
// holder's process ends, however it ends.
type FileLease struct {
	path string
	key  string
	me   Holder
	now  func() time.Time

	mu   sync.Mutex
	file *os.File // open while held
	held fileLeaseRecord
}

var _ Lease = (*FileLease)(nil)

// fileLeaseRecord is the lock file's content: who holds or last held the lease.
type fileLeaseRecord struct {
	SystemID string    `json:"system_id"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Token    Token     `json:"token"`
	Acquired time.Time `json:"acquired"`
}

// LeasePath is where a runner's lock file lives: beside its state file (Path).
func LeasePath(dir string, r Runner) string {
	return filepath.Join(dir, Key(r), "lease.json")
}

// NewFileLease returns the file lease of runner r below dir (the resolved state_storage.dir) for me.
func NewFileLease(dir string, r Runner, me Holder) *FileLease {
	return &FileLease{path: LeasePath(dir, r), key: Key(r), me: me, now: time.Now}
}

// Acquire implements Lease.
func (l *FileLease) Acquire(context.Context) (Token, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
			return 0, fmt.Errorf("create taskscaler state directory %s: %w", filepath.Dir(l.path), err)
		}
		f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return 0, fmt.Errorf("open lease file %s: %w", l.path, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			rec, _ := readFileLease(f)
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return 0, &LeaseError{Key: l.key, Err: ErrHeld, Current: rec.tenure(true)}
			}
			return 0, fmt.Errorf("lock lease file %s: %w", l.path, err)
		}
		// The last holder's token, if any, so that tokens grow across holders as with a shared table.
		last, _ := readFileLease(f)
		l.file, l.held.Token = f, last.Token
	}
	l.held = fileLeaseRecord{SystemID: l.me.SystemID, Host: l.me.Host, PID: l.me.PID, Token: l.held.Token + 1, Acquired: l.now()}
	b, err := json.Marshal(l.held)
	if err != nil {
		return 0, fmt.Errorf("encode lease file %s: %w", l.path, err)
	}
	if err := l.file.Truncate(0); err != nil {
		return 0, fmt.Errorf("write lease file %s: %w", l.path, err)
	}
	if _, err := l.file.WriteAt(b, 0); err != nil {
		return 0, fmt.Errorf("write lease file %s: %w", l.path, err)
	}
	return l.held.Token, nil
}

// Renew implements Lease: a held flock needs no renewal.
func (l *FileLease) Renew(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		return &LeaseError{Key: l.key, Err: ErrLost, Cause: errors.New("not acquired")}
	}
	return nil
}

// Release implements Lease: it drops the lock and leaves the file naming the last holder.
func (l *FileLease) Release(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file == nil {
		return nil
	}
	err := l.file.Close() // closing the only descriptor drops the flock
	l.file = nil
	if err != nil {
		return fmt.Errorf("release lease file %s: %w", l.path, err)
	}
	return nil
}

// Holder implements Lease: the holder the lock file names, held when its lock is taken.
func (l *FileLease) Holder(context.Context) (Tenure, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		return l.held.tenure(true), nil
	}
	f, err := os.Open(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return Tenure{}, nil
	}
	if err != nil {
		return Tenure{}, fmt.Errorf("open lease file %s: %w", l.path, err)
	}
	defer f.Close()
	rec, err := readFileLease(f)
	if err != nil {
		return Tenure{}, err
	}
	// A shared lock of our own is refused exactly while another process holds the exclusive one.
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return rec.tenure(true), nil
	case err != nil:
		return Tenure{}, fmt.Errorf("lock lease file %s: %w", l.path, err)
	}
	return rec.tenure(false), nil
}

func readFileLease(f *os.File) (fileLeaseRecord, error) {
	var rec fileLeaseRecord
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
	if err != nil {
		return rec, fmt.Errorf("read lease file %s: %w", f.Name(), err)
	}
	if len(b) == 0 {
		return rec, nil
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return fileLeaseRecord{}, fmt.Errorf("lease file %s is corrupt (delete it while no fleetrunner runs): %w", f.Name(), err)
	}
	return rec, nil
}

// tenure is the record as a Tenure; a file lease is renewed by holding it, so Renewed is Acquired.
func (r fileLeaseRecord) tenure(held bool) Tenure {
	t := Tenure{Holder: Holder{SystemID: r.SystemID, Host: r.Host, PID: r.PID}, Token: r.Token, Acquired: r.Acquired, Renewed: r.Acquired}
	if held {
		t.Expires = NoExpiry
	}
	return t
}
