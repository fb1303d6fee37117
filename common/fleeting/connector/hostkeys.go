package connector

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// HostKeyStore pins one SSH host key per instance ID. Keys are kept in authorized_keys form
// ("ssh-ed25519 AAAA..."), so any store that can hold a string per instance (the taskscaler's state
// file, for one) can implement it.
type HostKeyStore interface {
	// HostKey returns the pinned key of an instance, if there is one.
	HostKey(instance string) (key string, ok bool, err error)
	// PinHostKey records the key of an instance seen for the first time.
	PinHostKey(instance, key string) error
	// ForgetHostKey drops the pin, e.g. once the instance is deleted.
	ForgetHostKey(instance string) error
}

// ErrHostKeyChanged is wrapped by HostKeyChangedError.
var ErrHostKeyChanged = errors.New("host key changed")

// HostKeyLocator is implemented by stores that can tell an operator where an instance's pin lives.
type HostKeyLocator interface {
	HostKeyLocation(instance string) string
}

// HostKeyChangedError is returned when an instance offers a host key other than the one pinned for it.
type HostKeyChangedError struct {
	Instance string
	// Pinned and Offered are SHA256 fingerprints.
	Pinned  string
	Offered string
	// Location says where the pin lives (HostKeyLocator); empty for a store that cannot say.
	Location string
}

func (e *HostKeyChangedError) Error() string {
	where := "the host key store"
	if e.Location != "" {
		where = e.Location
	}
	return fmt.Sprintf("host key of instance %s changed: pinned %s, offered %s; refusing to connect "+
		"(if the instance was really rebuilt, remove its entry from %s)",
		e.Instance, e.Pinned, e.Offered, where)
}

// Unwrap makes errors.Is(err, ErrHostKeyChanged) work.
func (e *HostKeyChangedError) Unwrap() error { return ErrHostKeyChanged }

// MemoryHostKeys is a HostKeyStore held in memory. The zero value is ready to use.
type MemoryHostKeys struct {
	mu   sync.Mutex
	keys map[string]string
}

var _ HostKeyStore = (*MemoryHostKeys)(nil)

// HostKey implements HostKeyStore.
func (m *MemoryHostKeys) HostKey(instance string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[instance]
	return k, ok, nil
}

// PinHostKey implements HostKeyStore.
func (m *MemoryHostKeys) PinHostKey(instance, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys == nil {
		m.keys = map[string]string{}
	}
	m.keys[instance] = key
	return nil
}

// ForgetHostKey implements HostKeyStore.
func (m *MemoryHostKeys) ForgetHostKey(instance string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, instance)
	return nil
}

// FileHostKeys is a HostKeyStore kept in a JSON file ({"instance": "ssh-ed25519 AAAA..."}), rewritten
// atomically on every change so that a restarted manager keeps its pins.
type FileHostKeys struct {
	path string
	mem  MemoryHostKeys
	mu   sync.Mutex // serialises file writes
}

var (
	_ HostKeyStore   = (*FileHostKeys)(nil)
	_ HostKeyLocator = (*FileHostKeys)(nil)
)

// HostKeyLocation implements HostKeyLocator.
func (f *FileHostKeys) HostKeyLocation(instance string) string {
	return fmt.Sprintf("the host key file %s (key %q)", f.path, instance)
}

// OpenFileHostKeys loads the store at path; a missing file is an empty store.
func OpenFileHostKeys(path string) (*FileHostKeys, error) {
	f := &FileHostKeys{path: path}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return f, nil
	case err != nil:
		return nil, fmt.Errorf("read host key store %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &f.mem.keys); err != nil {
		return nil, fmt.Errorf("host key store %s is not valid JSON (fix or remove it): %w", path, err)
	}
	return f, nil
}

// HostKey implements HostKeyStore.
func (f *FileHostKeys) HostKey(instance string) (string, bool, error) {
	return f.mem.HostKey(instance)
}

// PinHostKey implements HostKeyStore.
func (f *FileHostKeys) PinHostKey(instance, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = f.mem.PinHostKey(instance, key)
	return f.save()
}

// ForgetHostKey implements HostKeyStore.
func (f *FileHostKeys) ForgetHostKey(instance string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = f.mem.ForgetHostKey(instance)
	return f.save()
}

func (f *FileHostKeys) save() error {
	f.mem.mu.Lock()
	data, err := json.MarshalIndent(maps.Clone(f.mem.keys), "", "  ")
	f.mem.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode host key store: %w", err)
	}
	return WriteFileAtomic(f.path, data, 0o600)
}

// WriteFileAtomic writes data to a temporary file next to path and renames it over path, so that a
// reader (or a crash) never sees half a file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// hostKeyCallback pins the first key an instance offers and refuses any other key afterwards.
func hostKeyCallback(store HostKeyStore, instance string) ssh.HostKeyCallback {
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		offered := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
		pinned, ok, err := store.HostKey(instance)
		if err != nil {
			return fmt.Errorf("look up pinned host key of instance %s: %w", instance, err)
		}
		if !ok {
			if err := store.PinHostKey(instance, offered); err != nil {
				return fmt.Errorf("pin host key of instance %s: %w", instance, err)
			}
			return nil
		}
		if pinned == offered {
			return nil
		}
		pinnedFP := "unparseable pinned key"
		if pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pinned)); err == nil {
			pinnedFP = ssh.FingerprintSHA256(pk)
		}
		changed := &HostKeyChangedError{Instance: instance, Pinned: pinnedFP, Offered: ssh.FingerprintSHA256(key)}
		if l, ok := store.(HostKeyLocator); ok {
			changed.Location = l.HostKeyLocation(instance)
		}
		return changed
	}
}

// hostKeyAlgorithms restricts negotiation to the pinned key's type, as OpenSSH does for known hosts:
// a server with several host keys would otherwise be free to present another one and look changed.
func hostKeyAlgorithms(store HostKeyStore, instance string) []string {
	pinned, ok, err := store.HostKey(instance)
	if err != nil || !ok {
		return nil
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pinned))
	if err != nil {
		return nil
	}
	if pk.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{pk.Type()}
}
