package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// SystemIDFileName is the file beside config.toml that keeps this host's system ID.
const SystemIDFileName = ".runner_system_id"

// systemIDPattern accepts upstream's IDs too ("r_" is what upstream writes when it runs as a
// container), so a host migrated from gitlab-runner keeps its identity in GitLab.
var systemIDPattern = regexp.MustCompile(`^[sr]_[0-9a-f]{12}$`)

// LoadOrCreateSystemID returns the system ID kept in .runner_system_id beside configPath, creating
// it ("s_" + 12 lowercase hex digits, mode 0600) on first use or when the file holds no valid ID.
// GitLab uses it to tell runner managers that share one token apart.
func LoadOrCreateSystemID(configPath string) (string, error) {
	path := filepath.Join(filepath.Dir(configPath), SystemIDFileName)
	if id, ok, err := readSystemID(path); err != nil || ok {
		return id, err
	}

	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating system ID: %w", err)
	}
	id := "s_" + hex.EncodeToString(b[:])

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("creating directory for %s: %w", path, err)
	}
	// Link the finished temporary file into place: the link fails if another process created
	// the ID meanwhile, and then that one wins.
	tmp, err := os.CreateTemp(filepath.Dir(path), SystemIDFileName+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("writing system ID: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(id + "\n"); err != nil {
		_ = tmp.Close()
		return "", fmt.Errorf("writing system ID to %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return "", fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	err = os.Link(tmp.Name(), path)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrExist):
		if existing, ok, rerr := readSystemID(path); rerr != nil || ok {
			return existing, rerr
		}
		// The file holds no valid ID: replace it.
		if err := os.Rename(tmp.Name(), path); err != nil {
			return "", fmt.Errorf("replacing invalid system ID in %s: %w", path, err)
		}
	default:
		return "", fmt.Errorf("saving system ID to %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	return id, nil
}

func readSystemID(path string) (id string, ok bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("reading system ID: %w", err)
	}
	id = strings.TrimSpace(string(data))
	return id, systemIDPattern.MatchString(id), nil
}

// DefaultPath is the config file used without -c/--config: $CONFIG_FILE, else
// /etc/fleetrunner/config.toml for root, else ~/.fleetrunner/config.toml (./config.toml when the
// home directory is unknown).
func DefaultPath() string {
	if p := os.Getenv("CONFIG_FILE"); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return "/etc/fleetrunner/config.toml"
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "config.toml"
	}
	return filepath.Join(home, ".fleetrunner", "config.toml")
}
