package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/service"
)

// fakeSystemd points the service commands at a temporary unit directory and a systemctl stand-in that
// records its calls and answers is-active with state. It returns the unit directory and the calls.
func fakeSystemd(t *testing.T, state string) (string, *[]string) {
	t.Helper()
	unitDir := filepath.Join(t.TempDir(), "units")
	sdDir := t.TempDir()
	var calls []string
	run := func(_ context.Context, args ...string) (string, error) {
		calls = append(calls, strings.Join(args, " "))
		if slices.Contains(args, "is-active") {
			return state + "\n", nil
		}
		return "", nil
	}
	orig := newServiceManager
	t.Cleanup(func() { newServiceManager = orig })
	newServiceManager = func(log logrus.FieldLogger, name string, userService bool) (*service.Manager, error) {
		return &service.Manager{
			Log: log, Name: name, UserService: userService, UnitDir: unitDir,
			Systemctl: run, SystemdDir: sdDir, Root: true,
		}, nil
	}
	t.Setenv("CONFIG_FILE", "")
	return unitDir, &calls
}

func TestServiceInstallCommand(t *testing.T) {
	unitDir, calls := fakeSystemd(t, "active")
	work := t.TempDir()
	t.Chdir(work)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	res := cli(t.Context(), nil, nil, "install", "-c", "conf/config.toml", "--service", "runner-2", "--user", "gitlab-runner", "--syslog", "-d", "state")
	if res.err != nil {
		t.Fatalf("install: %v\n%s", res.err, res.stderr)
	}
	unit, err := os.ReadFile(filepath.Join(unitDir, "runner-2.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nExecStart=" + exe + " run --config " + filepath.Join(work, "conf", "config.toml") + "\n",
		"\nWorkingDirectory=" + filepath.Join(work, "state") + "\n",
		"\nUser=gitlab-runner\n", "\nSyslogIdentifier=runner-2\n", "\nKillSignal=SIGQUIT\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if want := []string{"daemon-reload", "enable runner-2.service"}; !slices.Equal(*calls, want) {
		t.Errorf("systemctl calls = %q, want %q", *calls, want)
	}
	if !strings.Contains(res.stdout.String(), "Start it with: fleetrunner start --service runner-2\n") {
		t.Errorf("stdout = %q, want the start hint", res.stdout)
	}
	if !strings.Contains(res.stderr.String(), "config file does not exist yet") {
		t.Errorf("stderr = %q, want a warning about the missing config file", res.stderr)
	}

	// Another unit under the same name is refused, then replaced with --force.
	res = cli(t.Context(), nil, nil, "install", "-c", "conf/config.toml", "--service", "runner-2")
	if res.err == nil || !strings.Contains(res.err.Error(), "pass --force to replace it") {
		t.Fatalf("second install: err = %v, want a refusal naming --force", res.err)
	}
	res = cli(t.Context(), nil, nil, "install", "-c", "conf/config.toml", "--service", "runner-2", "--force")
	if res.err != nil {
		t.Fatalf("install --force: %v", res.err)
	}
	if unit, _ := os.ReadFile(filepath.Join(unitDir, "runner-2.service")); strings.Contains(string(unit), "User=") {
		t.Errorf("unit not replaced:\n%s", unit)
	}
}

func TestServiceUserInstallRejectsUser(t *testing.T) {
	_, calls := fakeSystemd(t, "active")
	res := cli(t.Context(), nil, nil, "install", "-c", "/etc/fleetrunner/config.toml", "--user-service", "--user", "ci")
	if res.err == nil || !strings.Contains(res.err.Error(), "--user cannot be used with --user-service") {
		t.Errorf("err = %v, want the --user/--user-service conflict", res.err)
	}
	if len(*calls) != 0 {
		t.Errorf("systemctl called: %q", *calls)
	}
}

func TestServiceCommandsCallSystemctl(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"start"}, []string{"start fleetrunner.service"}},
		{[]string{"stop", "-n", "runner-2"}, []string{"stop runner-2.service"}},
		{[]string{"restart", "--user-service"}, []string{"--user restart fleetrunner.service"}},
		{[]string{"status", "--user-service"}, []string{"--user is-active fleetrunner.service"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, calls := fakeSystemd(t, "active")
			if res := cli(t.Context(), nil, nil, tt.args...); res.err != nil {
				t.Fatalf("%v\n%s", res.err, res.stderr)
			}
			if !slices.Equal(*calls, tt.want) {
				t.Errorf("systemctl calls = %q, want %q", *calls, tt.want)
			}
		})
	}
}

func TestServiceUninstallCommand(t *testing.T) {
	unitDir, calls := fakeSystemd(t, "active")
	if res := cli(t.Context(), nil, nil, "install", "-c", "/etc/fleetrunner/config.toml", "--user-service"); res.err != nil {
		t.Fatal(res.err)
	}
	*calls = nil
	res := cli(t.Context(), nil, nil, "uninstall", "--user-service")
	if res.err != nil {
		t.Fatal(res.err)
	}
	want := []string{"--user stop fleetrunner.service", "--user disable fleetrunner.service", "--user daemon-reload"}
	if !slices.Equal(*calls, want) {
		t.Errorf("systemctl calls = %q, want %q", *calls, want)
	}
	if _, err := os.Stat(filepath.Join(unitDir, "fleetrunner.service")); !os.IsNotExist(err) {
		t.Errorf("unit file still present: %v", err)
	}
	if res := cli(t.Context(), nil, nil, "uninstall", "--user-service"); res.err == nil || !strings.Contains(res.err.Error(), "service is not installed: no unit file at") {
		t.Errorf("second uninstall: err = %v", res.err)
	}
}

func TestServiceStatusExit(t *testing.T) {
	tests := []struct {
		state   string
		wantErr string
	}{
		{"active", ""},
		{"inactive", "service fleetrunner is not running (inactive): see its log with journalctl -u fleetrunner"},
		{"failed", "service fleetrunner is not running (failed)"},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			fakeSystemd(t, tt.state)
			res := cli(t.Context(), nil, nil, "status")
			if got := res.stdout.String(); got != "fleetrunner: "+tt.state+"\n" {
				t.Errorf("stdout = %q", got)
			}
			switch {
			case tt.wantErr == "" && res.err != nil:
				t.Errorf("err = %v, want exit 0", res.err)
			case tt.wantErr != "" && (res.err == nil || !strings.Contains(res.err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want %q (exit 1)", res.err, tt.wantErr)
			}
		})
	}
}

// TestServiceWithoutSystemd uses the real manager: on a host without systemd (a container) the
// commands explain themselves; on one with systemd, status only reads.
func TestServiceWithoutSystemd(t *testing.T) {
	if _, err := os.Stat(service.SystemdRunDir); err == nil {
		t.Skip("systemd runs this host; the missing-systemd message is covered in common/service")
	}
	t.Setenv("CONFIG_FILE", "")
	res := cli(t.Context(), nil, nil, "status")
	if res.err == nil || !strings.Contains(res.err.Error(), "systemd is not running on this host") {
		t.Errorf("err = %v, want the missing-systemd explanation", res.err)
	}
}
