package service

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var defaultSpec = Spec{Executable: "/usr/local/bin/fleetrunner", ConfigFile: "/etc/fleetrunner/config.toml"}

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		golden      string
		name        string
		userService bool
		spec        Spec
	}{
		{"system.service", DefaultName, false, defaultSpec},
		{"user.service", DefaultName, true, Spec{Executable: "/home/ci/bin/fleetrunner", ConfigFile: "/home/ci/.fleetrunner/config.toml"}},
		{"options.service", "runner-2", false, Spec{
			Executable: "/opt/fleet runner/bin/fleetrunner", ConfigFile: `/srv/my "100%" $HOME\config.toml`,
			WorkingDirectory: "/var/lib/fleet runner/50%", User: "gitlab-runner", Syslog: true,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := Render(tt.name, tt.userService, tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendered unit differs from %s (go test -run TestRenderGolden -update rewrites it):\n%s", path, got)
			}
		})
	}
}

// TestRenderMatchesDeployExample keeps the generated unit and the shipped example saying the same thing.
func TestRenderMatchesDeployExample(t *testing.T) {
	example, err := os.ReadFile("../../deploy/systemd/fleetrunner.service")
	if err != nil {
		t.Fatal(err)
	}
	spec := defaultSpec
	spec.WorkingDirectory = "/etc/fleetrunner"
	got, err := Render(DefaultName, false, spec)
	if err != nil {
		t.Fatal(err)
	}
	gotLines, wantLines := directives(got), directives(example)
	if strings.Join(gotLines, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("directives differ from deploy/systemd/fleetrunner.service\n got: %q\nwant: %q", gotLines, wantLines)
	}
}

// directives returns a unit's sections and settings, without comments and blank lines.
func directives(unit []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func TestRenderEssentials(t *testing.T) {
	got, err := Render(DefaultName, false, defaultSpec)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nExecStart=/usr/local/bin/fleetrunner run --config /etc/fleetrunner/config.toml\n",
		"\nKillSignal=SIGQUIT\n", "\nTimeoutStopSec=infinity\n", "\nRestart=on-failure\n",
		"\nExecReload=/bin/kill -HUP $MAINPID\n", "\nWorkingDirectory=/etc/fleetrunner\n",
		"\nWantedBy=multi-user.target\n",
	} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("unit lacks %q:\n%s", want, got)
		}
	}
	if bytes.Contains(got, []byte("User=")) {
		t.Errorf("unit without --user sets User=:\n%s", got)
	}
}

func TestExecLineQuoting(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/usr/local/bin/fleetrunner", "/usr/local/bin/fleetrunner"},
		{"/opt/fleet runner/x", `"/opt/fleet runner/x"`},
		{`/a"b`, `"/a\"b"`},
		{`/a\b`, `"/a\\b"`},
		{"/a$HOME", `"/a$$HOME"`},
		{"/100%", `"/100%%"`},
		{"/a'b", `"/a'b"`},
		{"/a;b", `"/a;b"`},
	}
	for _, tt := range tests {
		if got := execLine(tt.in); got != tt.want {
			t.Errorf("execLine(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestRenderRejects(t *testing.T) {
	tests := []struct {
		name        string
		service     string
		userService bool
		spec        Spec
		want        string
	}{
		{"relative executable", DefaultName, false, Spec{Executable: "fleetrunner", ConfigFile: "/etc/c.toml"}, `executable "fleetrunner" must be an absolute path`},
		{"relative config", DefaultName, false, Spec{Executable: "/bin/f", ConfigFile: "config.toml"}, `config file "config.toml" must be an absolute path`},
		{"missing config", DefaultName, false, Spec{Executable: "/bin/f"}, `config file "" must be an absolute path`},
		{"relative working dir", DefaultName, false, Spec{Executable: "/bin/f", ConfigFile: "/c.toml", WorkingDirectory: "work"}, `working directory "work" must be an absolute path`},
		{"newline in path", DefaultName, false, Spec{Executable: "/bin/f", ConfigFile: "/c\n.toml"}, "contains a control character"},
		{"user with user service", DefaultName, true, Spec{Executable: "/bin/f", ConfigFile: "/c.toml", User: "ci"}, "--user cannot be used with --user-service"},
		{"bad user", DefaultName, false, Spec{Executable: "/bin/f", ConfigFile: "/c.toml", User: "ci\nExecStartPre=/bin/sh"}, "is not a valid account name"},
		{"name with slash", "../evil", false, defaultSpec, "not usable as a systemd unit name"},
		{"name with suffix", "fleetrunner.service", false, defaultSpec, "without .service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(tt.service, tt.userService, tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestRenderVerifiedBySystemd has systemd's own parser read a unit whose paths need quoting and escaping:
// it fails when the executable path is split at a space or a specifier is left unescaped.
func TestRenderVerifiedBySystemd(t *testing.T) {
	analyze := testenv.RequireCommand(t, "systemd-analyze", "install it with: apt-get install systemd")
	dir := t.TempDir()
	bin := filepath.Join(dir, "fleet runner 100%", "fleetrunner")
	work := filepath.Join(dir, "work dir 50%")
	units := filepath.Join(dir, "units")
	for _, d := range []string{filepath.Dir(bin), work, units} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := Render("verify-me", false, Spec{Executable: bin, ConfigFile: `/etc/my "fleet" $HOME\config.toml`, WorkingDirectory: work, Syslog: true})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(units, "verify-me.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), analyze, "verify", "--man=no", path)
	cmd.Env = append(os.Environ(), "TMPDIR="+dir, "SYSTEMD_LOG_LEVEL=warning")
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("verify-me")) {
		t.Errorf("systemd-analyze verify: %v\n%s\nunit:\n%s", err, out, unit)
	}
}
