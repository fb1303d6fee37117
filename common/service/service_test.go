package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// recorder stands in for systemctl: it records each call and answers from a table keyed by the
// call's arguments.
type recorder struct {
	calls   []string
	answers map[string]answer
}

type answer struct {
	out string
	err error
}

func (r *recorder) run(_ context.Context, args ...string) (string, error) {
	call := strings.Join(args, " ")
	r.calls = append(r.calls, call)
	a := r.answers[call]
	return a.out, a.err
}

// newTestManager returns a Manager on a temporary unit directory with systemd "running".
func newTestManager(t *testing.T, userService, root bool) (*Manager, *recorder) {
	t.Helper()
	log, _ := test.NewNullLogger()
	sd := filepath.Join(t.TempDir(), "run-systemd-system")
	if err := os.Mkdir(sd, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{answers: map[string]answer{}}
	return &Manager{
		Log: log, Name: DefaultName, UserService: userService, UnitDir: filepath.Join(t.TempDir(), "units"),
		Systemctl: rec.run, SystemdDir: sd, Root: root,
	}, rec
}

func TestInstall(t *testing.T) {
	for _, userService := range []bool{false, true} {
		t.Run(fmt.Sprint("user=", userService), func(t *testing.T) {
			m, rec := newTestManager(t, userService, !userService)
			path, err := m.Install(t.Context(), defaultSpec, false)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(m.UnitDir, "fleetrunner.service"); path != want {
				t.Errorf("path = %s, want %s", path, want)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o644 {
				t.Errorf("mode = %v, want 0644", fi.Mode().Perm())
			}
			got, _ := os.ReadFile(path)
			want, _ := Render(DefaultName, userService, defaultSpec)
			if string(got) != string(want) {
				t.Errorf("unit file:\n%s\nwant:\n%s", got, want)
			}
			wantCalls := []string{"daemon-reload", "enable fleetrunner.service"}
			if userService {
				wantCalls = []string{"--user daemon-reload", "--user enable fleetrunner.service"}
			}
			if !slices.Equal(rec.calls, wantCalls) {
				t.Errorf("systemctl calls = %q, want %q", rec.calls, wantCalls)
			}
			entries, _ := os.ReadDir(m.UnitDir)
			if len(entries) != 1 {
				t.Errorf("unit dir holds %d entries, want only the unit (no temp file left)", len(entries))
			}
		})
	}
}

func TestInstallExisting(t *testing.T) {
	other := defaultSpec
	other.User = "gitlab-runner"
	tests := []struct {
		name      string
		existing  Spec
		force     bool
		wantErr   string
		wantCalls []string
	}{
		{name: "same unit is re-enabled", existing: defaultSpec, wantCalls: []string{"daemon-reload", "enable fleetrunner.service"}},
		{name: "different unit is refused", existing: other, wantErr: "exists and differs from the unit fleetrunner would write: run `fleetrunner uninstall --service fleetrunner` first, or pass --force"},
		{name: "different unit replaced with force", existing: other, force: true, wantCalls: []string{"daemon-reload", "enable fleetrunner.service"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, rec := newTestManager(t, false, true)
			old, _ := Render(DefaultName, false, tt.existing)
			if err := os.MkdirAll(m.UnitDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(m.UnitPath(), old, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := m.Install(t.Context(), defaultSpec, tt.force)
			got, _ := os.ReadFile(m.UnitPath())
			want, _ := Render(DefaultName, false, defaultSpec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				want = old
			} else if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("unit file after install:\n%s\nwant:\n%s", got, want)
			}
			if !slices.Equal(rec.calls, tt.wantCalls) {
				t.Errorf("systemctl calls = %q, want %q", rec.calls, tt.wantCalls)
			}
		})
	}
}

func TestUninstall(t *testing.T) {
	for _, userService := range []bool{false, true} {
		t.Run(fmt.Sprint("user=", userService), func(t *testing.T) {
			m, rec := newTestManager(t, userService, false)
			m.Root = !userService
			if _, err := m.Install(t.Context(), defaultSpec, false); err != nil {
				t.Fatal(err)
			}
			rec.calls = nil
			path, err := m.Uninstall(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("unit file still there: %v", err)
			}
			want := []string{"stop fleetrunner.service", "disable fleetrunner.service", "daemon-reload"}
			if userService {
				for i := range want {
					want[i] = "--user " + want[i]
				}
			}
			if !slices.Equal(rec.calls, want) {
				t.Errorf("systemctl calls = %q, want %q", rec.calls, want)
			}
			if _, err := m.Uninstall(t.Context()); !errors.Is(err, ErrNotInstalled) {
				t.Errorf("second uninstall: err = %v, want ErrNotInstalled", err)
			}
		})
	}
}

// TestUninstallStopFails keeps the unit when the service could not be stopped.
func TestUninstallStopFails(t *testing.T) {
	m, rec := newTestManager(t, false, true)
	if _, err := m.Install(t.Context(), defaultSpec, false); err != nil {
		t.Fatal(err)
	}
	rec.calls = nil
	rec.answers["stop fleetrunner.service"] = answer{err: errors.New("systemctl stop fleetrunner.service: Access denied: exit status 1")}
	if _, err := m.Uninstall(t.Context()); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Fatalf("err = %v, want systemctl's message", err)
	}
	if _, err := os.Stat(m.UnitPath()); err != nil {
		t.Errorf("unit file removed although the service did not stop: %v", err)
	}
	if !slices.Equal(rec.calls, []string{"stop fleetrunner.service"}) {
		t.Errorf("systemctl calls = %q, want only the stop", rec.calls)
	}
}

func TestActions(t *testing.T) {
	tests := []struct {
		name        string
		do          func(*Manager, context.Context) error
		userService bool
		want        string
	}{
		{"start", (*Manager).Start, false, "start fleetrunner.service"},
		{"stop", (*Manager).Stop, false, "stop fleetrunner.service"},
		{"restart", (*Manager).Restart, false, "restart fleetrunner.service"},
		{"user start", (*Manager).Start, true, "--user start fleetrunner.service"},
		{"user stop", (*Manager).Stop, true, "--user stop fleetrunner.service"},
		{"user restart", (*Manager).Restart, true, "--user restart fleetrunner.service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, rec := newTestManager(t, tt.userService, !tt.userService)
			if err := tt.do(m, t.Context()); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rec.calls, []string{tt.want}) {
				t.Errorf("systemctl calls = %q, want [%q]", rec.calls, tt.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	exit3 := errors.New("systemctl is-active fleetrunner.service: : exit status 3")
	tests := []struct {
		name        string
		ans         answer
		userService bool
		wantState   string
		wantRunning bool
		wantErr     string
	}{
		{name: "active", ans: answer{out: "active\n"}, wantState: "active", wantRunning: true},
		{name: "reloading", ans: answer{out: "reloading\n"}, wantState: "reloading", wantRunning: true},
		{name: "inactive", ans: answer{out: "inactive\n", err: exit3}, wantState: "inactive"},
		{name: "failed", ans: answer{out: "failed\n", err: exit3}, wantState: "failed"},
		{name: "activating", ans: answer{out: "activating\n", err: exit3}, wantState: "activating"},
		{name: "user active", ans: answer{out: "active\n"}, userService: true, wantState: "active", wantRunning: true},
		{name: "no bus", ans: answer{err: errors.New("systemctl --user is-active fleetrunner.service: Failed to connect to bus: exit status 1")}, wantErr: "Failed to connect to bus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Status needs no root.
			m, rec := newTestManager(t, tt.userService, false)
			call := "is-active fleetrunner.service"
			if tt.userService {
				call = "--user " + call
			}
			rec.answers[call] = tt.ans
			state, running, err := m.Status(t.Context())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || state != tt.wantState || running != tt.wantRunning {
				t.Errorf("Status() = %q, %v, %v; want %q, %v, nil", state, running, err, tt.wantState, tt.wantRunning)
			}
			if !slices.Equal(rec.calls, []string{call}) {
				t.Errorf("systemctl calls = %q, want [%q]", rec.calls, call)
			}
		})
	}
}

// TestRefusals: no systemd, or no root for a system unit, stops every command before systemctl runs.
func TestRefusals(t *testing.T) {
	ops := map[string]func(*Manager, context.Context) error{
		"install":   func(m *Manager, ctx context.Context) error { _, err := m.Install(ctx, defaultSpec, false); return err },
		"uninstall": func(m *Manager, ctx context.Context) error { _, err := m.Uninstall(ctx); return err },
		"start":     (*Manager).Start,
		"stop":      (*Manager).Stop,
		"restart":   (*Manager).Restart,
		"status":    func(m *Manager, ctx context.Context) error { _, _, err := m.Status(ctx); return err },
	}
	for name, op := range ops {
		t.Run(name+" without systemd", func(t *testing.T) {
			m, rec := newTestManager(t, false, true)
			m.SystemdDir = filepath.Join(t.TempDir(), "absent")
			err := op(m, t.Context())
			if err == nil || !strings.Contains(err.Error(), "systemd is not running on this host (no "+m.SystemdDir+")") ||
				!strings.Contains(err.Error(), "run `fleetrunner run --config FILE` under your own supervisor") {
				t.Errorf("err = %v, want the missing-systemd explanation", err)
			}
			if len(rec.calls) != 0 {
				t.Errorf("systemctl called: %q", rec.calls)
			}
		})
		if name == "status" {
			continue
		}
		t.Run(name+" without root", func(t *testing.T) {
			m, rec := newTestManager(t, false, false)
			err := op(m, t.Context())
			if err == nil || !strings.Contains(err.Error(), "needs root: run this command with sudo, or pass --user-service") {
				t.Errorf("err = %v, want the needs-root explanation", err)
			}
			if len(rec.calls) != 0 {
				t.Errorf("systemctl called: %q", rec.calls)
			}
		})
	}
}

func TestSystemctlErrorStopsInstall(t *testing.T) {
	m, rec := newTestManager(t, false, true)
	rec.answers["daemon-reload"] = answer{err: errors.New("systemctl daemon-reload: Failed to connect to bus: exit status 1")}
	if _, err := m.Install(t.Context(), defaultSpec, false); err == nil || !strings.Contains(err.Error(), "Failed to connect to bus") {
		t.Fatalf("err = %v, want systemctl's message", err)
	}
	if !slices.Equal(rec.calls, []string{"daemon-reload"}) {
		t.Errorf("systemctl calls = %q, want enable skipped", rec.calls)
	}
}

func TestNew(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/home/ci/.config")
	log := logrus.New()
	m, err := New(log, "runner-2", true)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/home/ci/.config/systemd/user/runner-2.service"; m.UnitPath() != want {
		t.Errorf("user unit path = %s, want %s", m.UnitPath(), want)
	}
	if m, err = New(log, DefaultName, false); err != nil || m.UnitPath() != "/etc/systemd/system/fleetrunner.service" || m.SystemdDir != "/run/systemd/system" {
		t.Errorf("system manager = %+v, %v", m, err)
	}
	if _, err := New(log, "a/b", false); err == nil {
		t.Error("New accepted a name with a slash")
	}
}

// TestSystemctlExec runs Systemctl against a stand-in script on PATH, never the real systemctl.
func TestSystemctlExec(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"args: $*\" >&2\necho inactive\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	out, err := Systemctl(t.Context(), "is-active", "fleetrunner.service")
	if out != "inactive\n" {
		t.Errorf("stdout = %q, want inactive", out)
	}
	if err == nil || err.Error() != "systemctl is-active fleetrunner.service: args: is-active fleetrunner.service: exit status 3" {
		t.Errorf("err = %v, want the command, its stderr and its exit status", err)
	}

	t.Setenv("PATH", t.TempDir())
	if _, err := Systemctl(t.Context(), "daemon-reload"); err == nil || !strings.Contains(err.Error(), "systemctl not found in PATH") {
		t.Errorf("err = %v, want systemctl not found", err)
	}
}
