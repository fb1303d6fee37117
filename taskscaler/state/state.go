// Package state keeps the taskscaler's memory across a restart: which instances it owns, how often each
// was used, what callers pinned on them (host keys), and which jobs were in flight. The file store writes
// atomically (temp file, fsync, rename) with mode 0600, so a crash leaves either the old or the new file.
package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// Version is the format version written to new files.
const Version = 1

// Instance is one instance the taskscaler owned when the snapshot was taken.
type Instance struct {
	ID string `json:"id"`
	// State is the taskscaler's own state name (creating, readying, ready, draining, remove, removing).
	State    string `json:"state"`
	UseCount int    `json:"use_count"`
	// ConnectInfo is kept for the operator's benefit with its credentials (key, password) removed;
	// a restarted taskscaler asks the plugin again.
	ConnectInfo *fleeting.ConnectInfo `json:"connect_info,omitempty"`
	// Data is opaque per-caller data, e.g. the SSH connector's pinned host key.
	Data      map[string][]byte `json:"data,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	ReadyAt   time.Time         `json:"ready_at,omitzero"`
	IdleSince time.Time         `json:"idle_since,omitzero"`
}

// Job is a job that was in flight: reserved, waiting for a slot, or running on an instance.
type Job struct {
	Key   string `json:"key"`
	JobID int64  `json:"job_id"`
	// InstanceID is where it ran; empty if it was still waiting for a slot.
	InstanceID string `json:"instance_id,omitempty"`
	// Data is the caller's opaque blob (what it needs to report the job failed).
	Data  []byte    `json:"data,omitempty"`
	Since time.Time `json:"since"`
}

// Snapshot is the whole persisted state.
type Snapshot struct {
	Version   int        `json:"version"`
	SavedAt   time.Time  `json:"saved_at"`
	Instances []Instance `json:"instances"`
	Jobs      []Job      `json:"jobs"`
	// Forecast is the online forecast's history; nil when forecasting is off or has seen nothing.
	Forecast *Forecast `json:"forecast,omitempty"`
}

// Forecast is what taskscaler/forecast learnt: one record per watched hour (at most the history, 1344
// hours) and the last boot delays.
type Forecast struct {
	Hours      []ForecastHour  `json:"hours"`
	BootDelays []time.Duration `json:"boot_delays,omitempty"`
}

// ForecastHour is one watched hour: Hour counts hours since the Unix epoch, Peak is the most jobs that
// arrived within one boot delay of each other in it.
type ForecastHour struct {
	Hour int64 `json:"hour"`
	Peak int   `json:"peak"`
}

// Store loads and saves snapshots.
type Store interface {
	// Load returns the saved snapshot, or nil and no error when nothing was saved yet.
	Load() (*Snapshot, error)
	Save(*Snapshot) error
}

// File stores the snapshot as one JSON file.
type File struct {
	Path string
}

// NewFile returns a store writing to path.
func NewFile(path string) *File { return &File{Path: path} }

// Load implements Store.
func (f *File) Load() (*Snapshot, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read taskscaler state %s: %w", f.Path, err)
	}
	snap, err := Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("taskscaler state %s: %w", f.Path, err)
	}
	return snap, nil
}

// Save implements Store: the file is replaced atomically and readable by its owner only.
func (f *File) Save(s *Snapshot) error {
	b, err := Marshal(s)
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create taskscaler state directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write taskscaler state in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write taskscaler state %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write taskscaler state %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync taskscaler state %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write taskscaler state %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("replace taskscaler state %s: %w", f.Path, err)
	}
	// The rename is durable only once the directory entry is on disk.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Marshal encodes a snapshot as every store writes it: at the current Version, indented for the operator
// who reads it, and without the instances' credentials (a restarted taskscaler asks the plugin again).
func Marshal(s *Snapshot) ([]byte, error) {
	cp := *s
	cp.Version = Version
	cp.Instances = make([]Instance, len(s.Instances))
	for i, in := range s.Instances {
		if in.ConnectInfo != nil {
			ci := *in.ConnectInfo
			ci.Key, ci.Password = nil, ""
			in.ConnectInfo = &ci
		}
		cp.Instances[i] = in
	}
	b, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode taskscaler state: %w", err)
	}
	return b, nil
}

// Unmarshal decodes what Marshal wrote; the caller names where it came from.
func Unmarshal(b []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("corrupt (move it aside or delete it to start without it; instances it listed will then be removed as unknown): %w", err)
	}
	if s.Version > Version {
		return nil, fmt.Errorf("format version %d, this build reads up to %d", s.Version, Version)
	}
	return &s, nil
}

// Runner is what names a runner's state directory.
type Runner struct {
	// ID is GitLab's runner id, 0 when unknown.
	ID   int64
	URL  string
	Name string
	// ShortToken is the runner's short token, which named the directory before Key (and still does
	// upstream).
	ShortToken string
}

// Path is where a runner's state file lives: one subdirectory per runner, named by Key, below dir (the
// resolved state_storage.dir).
func Path(dir string, r Runner) string {
	return filepath.Join(dir, Key(r), "state.json")
}

// Key names a runner's state directory after what survives a token rotation, so that a rotated token
// does not make the runner look new and lose (or prune) its instances (upstream issue 39380):
// "runner-<id>-<hash of the URL>" when GitLab's runner id is known (the URL part keeps runners of two
// GitLab instances with the same id apart), else "runner-<hash of URL and name>", else the short token
// as upstream names it.
func Key(r Runner) string {
	url := strings.TrimRight(r.URL, "/")
	switch {
	case r.ID != 0:
		return fmt.Sprintf("runner-%d-%s", r.ID, digest(url)[:8])
	case r.Name != "":
		return "runner-" + digest(url + "\n" + r.Name)[:16]
	default:
		return legacyName(r)
	}
}

// MigrateLegacy renames, below dir, a state directory named after the runner's short token (upstream's
// layout, and fleetrunner's before Key) to the one Path uses, so the instances it lists are adopted. It
// does nothing when there is no such directory, or when it already has the stable name. When both exist
// the stable one wins and the error names the one left behind.
func MigrateLegacy(dir string, r Runner) (moved bool, err error) {
	legacy := filepath.Join(dir, legacyName(r))
	stable := filepath.Join(dir, Key(r))
	if legacy == stable {
		return false, nil
	}
	if _, err := os.Stat(legacy); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("taskscaler state: %w", err)
	}
	if _, err := os.Stat(stable); err == nil {
		return false, fmt.Errorf("taskscaler state: both %s and %s exist; using %s (remove the other once no instance it lists is needed)", legacy, stable, stable)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("taskscaler state: %w", err)
	}
	if err := os.Rename(legacy, stable); err != nil {
		return false, fmt.Errorf("taskscaler state: moving %s to %s (move it by hand while fleetrunner is stopped): %w", legacy, stable, err)
	}
	return true, nil
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// legacyName names a runner's legacy state directory after its short token.
func legacyName(r Runner) string {
	if r.ShortToken != "" {
		return r.ShortToken
	}
	return "runner"
}
