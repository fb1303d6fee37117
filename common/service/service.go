// Package service installs fleetrunner as a systemd unit (system-wide or as a user unit) and drives it
// through systemctl: install, uninstall, start, stop, restart and status. The unit directory and the
// systemctl runner are injectable, so everything but the real systemctl is testable without root.
package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"
)

// DefaultName is the default service (unit) name.
const DefaultName = "fleetrunner"

// SystemUnitDir holds the units an administrator installs.
const SystemUnitDir = "/etc/systemd/system"

// SystemdRunDir exists only when systemd is the running init system (sd_booted(3)).
const SystemdRunDir = "/run/systemd/system"

// ErrNotInstalled is returned by Uninstall when there is no unit file to remove.
var ErrNotInstalled = errors.New("service is not installed")

// Runner runs systemctl with args and returns its standard output. A non-zero exit is an error that
// carries systemctl's message; stdout is returned with it (is-active prints the state and exits 3).
type Runner func(ctx context.Context, args ...string) (stdout string, err error)

// Systemctl runs the real systemctl.
func Systemctl(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "systemctl", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("systemctl not found in PATH: the service commands need systemd: %w", err)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		return stdout.String(), fmt.Errorf("systemctl %s: %s: %w", strings.Join(args, " "), msg, err)
	}
	return stdout.String(), nil
}

// Manager manages one unit. Build it with New; tests set the fields directly.
type Manager struct {
	Log logrus.FieldLogger
	// Name is the service name without ".service".
	Name string
	// UserService selects a systemd user unit (systemctl --user).
	UserService bool
	// UnitDir is where the unit file is written.
	UnitDir string
	// Systemctl runs systemctl.
	Systemctl Runner
	// SystemdDir is checked to tell whether systemd runs this host (SystemdRunDir).
	SystemdDir string
	// Root tells whether the process may change system units.
	Root bool
}

// New returns a Manager for the real host: units in SystemUnitDir, or in the user's
// $XDG_CONFIG_HOME/systemd/user (default ~/.config/systemd/user) for a user service.
func New(log logrus.FieldLogger, name string, userService bool) (*Manager, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m := &Manager{
		Log: log, Name: name, UserService: userService, UnitDir: SystemUnitDir,
		Systemctl: Systemctl, SystemdDir: SystemdRunDir, Root: os.Geteuid() == 0,
	}
	if userService {
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil, fmt.Errorf("find the user unit directory for --user-service: %w", err)
		}
		m.UnitDir = filepath.Join(dir, "systemd", "user")
	}
	return m, nil
}

// UnitPath is the unit file's path.
func (m *Manager) UnitPath() string { return filepath.Join(m.UnitDir, m.unit()) }

func (m *Manager) unit() string { return m.Name + ".service" }

// check refuses to go on without systemd, or, when change is set, without root for a system unit.
func (m *Manager) check(change bool) error {
	if err := checkName(m.Name); err != nil {
		return err
	}
	if _, err := os.Stat(m.SystemdDir); err != nil {
		return fmt.Errorf("systemd is not running on this host (no %s): the service commands manage systemd units only; "+
			"run `fleetrunner run --config FILE` under your own supervisor instead, with KillSignal SIGQUIT as in deploy/systemd/fleetrunner.service", m.SystemdDir)
	}
	if change && !m.UserService && !m.Root {
		return fmt.Errorf("managing the system unit %s needs root: run this command with sudo, or pass --user-service for a unit of your own user", m.unit())
	}
	return nil
}

func (m *Manager) systemctl(ctx context.Context, args ...string) (string, error) {
	if m.UserService {
		args = append([]string{"--user"}, args...)
	}
	return m.Systemctl(ctx, args...)
}

// Install writes the unit for s (mode 0644), reloads systemd and enables the unit; it does not start it.
// An existing unit with other content is replaced only when force is set. It returns the unit's path.
func (m *Manager) Install(ctx context.Context, s Spec, force bool) (string, error) {
	if err := m.check(true); err != nil {
		return "", err
	}
	unit, err := Render(m.Name, m.UserService, s)
	if err != nil {
		return "", err
	}
	path := m.UnitPath()
	log := m.Log.WithField("unit", path)
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, unit):
		log.Info("unit file unchanged")
	case err == nil && !force:
		return "", fmt.Errorf("%s exists and differs from the unit fleetrunner would write: run `fleetrunner uninstall --service %s` first, or pass --force to replace it", path, m.Name)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read existing unit: %w", err)
	default:
		if err := writeFile(path, unit); err != nil {
			return "", err
		}
		if old != nil {
			log.Warn("replaced the existing unit file; restart the service to apply it")
		} else {
			log.Info("unit file written")
		}
	}
	if _, err := m.systemctl(ctx, "daemon-reload"); err != nil {
		return "", err
	}
	if _, err := m.systemctl(ctx, "enable", m.unit()); err != nil {
		return "", err
	}
	log.Info("service enabled")
	return path, nil
}

// writeFile replaces path atomically with data, mode 0644.
func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create unit directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write unit: %w", err)
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(0o644), f.Close())
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write unit %s: %w", path, err)
	}
	return nil
}

// Uninstall stops the service (running jobs finish first), disables it, removes the unit file and reloads
// systemd.
func (m *Manager) Uninstall(ctx context.Context) (string, error) {
	if err := m.check(true); err != nil {
		return "", err
	}
	path := m.UnitPath()
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: no unit file at %s", ErrNotInstalled, path)
		}
		return "", fmt.Errorf("inspect unit: %w", err)
	}
	if err := m.Stop(ctx); err != nil {
		return "", err
	}
	if _, err := m.systemctl(ctx, "disable", m.unit()); err != nil {
		return "", err
	}
	if err := os.Remove(path); err != nil {
		return "", fmt.Errorf("remove unit: %w", err)
	}
	if _, err := m.systemctl(ctx, "daemon-reload"); err != nil {
		return "", err
	}
	m.Log.WithField("unit", path).Info("service uninstalled")
	return path, nil
}

// Start starts the service.
func (m *Manager) Start(ctx context.Context) error { return m.action(ctx, "start") }

// Stop stops the service; with KillSignal=SIGQUIT it returns once running jobs have finished.
func (m *Manager) Stop(ctx context.Context) error { return m.action(ctx, "stop") }

// Restart restarts the service, waiting for running jobs like Stop.
func (m *Manager) Restart(ctx context.Context) error { return m.action(ctx, "restart") }

func (m *Manager) action(ctx context.Context, verb string) error {
	if err := m.check(true); err != nil {
		return err
	}
	if verb != "start" {
		m.Log.WithField("service", m.Name).Infof("%s: waiting for running jobs to finish", verb)
	}
	_, err := m.systemctl(ctx, verb, m.unit())
	return err
}

// runningStates are the states for which systemctl is-active itself succeeds.
var runningStates = map[string]bool{"active": true, "reloading": true, "refreshing": true}

// Status returns the unit's state as systemctl is-active prints it (active, inactive, failed, …) and
// whether that means the service is running.
func (m *Manager) Status(ctx context.Context) (state string, running bool, err error) {
	if err := m.check(false); err != nil {
		return "", false, err
	}
	out, err := m.systemctl(ctx, "is-active", m.unit())
	state = strings.TrimSpace(out)
	if state == "" {
		if err == nil {
			err = errors.New("systemctl is-active printed no state")
		}
		return "", false, err
	}
	return state, runningStates[state], nil
}
