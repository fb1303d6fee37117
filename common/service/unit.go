package service

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

// Spec is what the unit runs: `<Executable> run --config <ConfigFile>` in WorkingDirectory.
type Spec struct {
	// Executable is the absolute path of the fleetrunner binary.
	Executable string
	// ConfigFile is the absolute path of config.toml.
	ConfigFile string
	// WorkingDirectory is absolute; empty means the config file's directory.
	WorkingDirectory string
	// User runs a system unit as this account (User=); empty means root. Not allowed for user units.
	User string
	// Syslog tags the journal lines with the service name (journald forwards them to syslog).
	Syslog bool
}

// unitTemplate mirrors deploy/systemd/fleetrunner.service; a test keeps the two in step.
var unitTemplate = template.Must(template.New("unit").Parse(`# Written by "fleetrunner install"; "fleetrunner uninstall" removes it.
[Unit]
Description=fleetrunner: GitLab Runner with a built-in Docker Autoscaler
Documentation=file:///usr/local/share/doc/fleetrunner/README.md
{{- if not .UserService}}
After=network-online.target
Wants=network-online.target
{{- end}}

[Service]
ExecStart={{.ExecStart}}
ExecReload=/bin/kill -HUP $MAINPID
# SIGQUIT stops asking GitLab for jobs and lets running jobs finish; instances are kept (state file)
# so a restart adopts them instead of creating new ones.
KillSignal=SIGQUIT
TimeoutStopSec=infinity
Restart=on-failure
RestartSec=5
WorkingDirectory={{.WorkingDirectory}}
{{- if .User}}
User={{.User}}
{{- end}}
{{- if .SyslogIdentifier}}
StandardOutput=journal
StandardError=journal
SyslogIdentifier={{.SyslogIdentifier}}
{{- end}}
# The AWS plugin reads credentials from the instance profile (IMDS) or the usual AWS_* variables.
EnvironmentFile=-/etc/default/{{.Name}}

[Install]
WantedBy={{if .UserService}}default.target{{else}}multi-user.target{{end}}
`))

var (
	// unitNameRE is systemd's character set for unit names, without the template '@'.
	unitNameRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+$`)
	// userNameRE accepts POSIX-style account names and numeric IDs.
	userNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$`)
	// plainArgRE needs no quoting in ExecStart.
	plainArgRE = regexp.MustCompile(`^[A-Za-z0-9_./:=@+,-]+$`)
)

func checkName(name string) error {
	if !unitNameRE.MatchString(name) || strings.HasSuffix(name, ".service") {
		return fmt.Errorf("service name %q is not usable as a systemd unit name: use letters, digits and :_.- only, without .service", name)
	}
	return nil
}

// Render returns the unit file for service name. userService selects a systemd user unit.
func Render(name string, userService bool, s Spec) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var errs []error
	for _, p := range []struct{ what, path string }{
		{"executable", s.Executable}, {"config file", s.ConfigFile}, {"working directory", s.WorkingDirectory},
	} {
		if p.path == "" && p.what == "working directory" {
			continue
		}
		if !filepath.IsAbs(p.path) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", p.what, p.path))
		}
		if strings.ContainsFunc(p.path, isControl) {
			errs = append(errs, fmt.Errorf("%s %q contains a control character, which a unit file cannot hold", p.what, p.path))
		}
	}
	switch {
	case s.User != "" && userService:
		errs = append(errs, errors.New("--user cannot be used with --user-service: a user unit always runs as the user who installed it"))
	case s.User != "" && !userNameRE.MatchString(s.User):
		errs = append(errs, fmt.Errorf("user %q is not a valid account name", s.User))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	wd := s.WorkingDirectory
	if wd == "" {
		wd = filepath.Dir(s.ConfigFile)
	}
	data := struct {
		Name, ExecStart, WorkingDirectory, User, SyslogIdentifier string
		UserService                                               bool
	}{
		Name:             name,
		ExecStart:        execLine(s.Executable, "run", "--config", s.ConfigFile),
		WorkingDirectory: escapeSpecifiers(filepath.Clean(wd)),
		User:             s.User,
		UserService:      userService,
	}
	if s.Syslog {
		data.SyslogIdentifier = name
	}
	var b bytes.Buffer
	if err := unitTemplate.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render unit %s: %w", name, err)
	}
	return b.Bytes(), nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// execLine quotes each word as systemd's ExecStart= parser reads it back: double quotes with C escapes,
// and "$" and "%" doubled because systemd expands variables and specifiers even inside quotes.
func execLine(words ...string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if plainArgRE.MatchString(w) {
			out[i] = w
			continue
		}
		w = strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`).Replace(w)
		out[i] = `"` + w + `"`
	}
	return strings.Join(out, " ")
}

// escapeSpecifiers doubles "%": WorkingDirectory= takes the rest of the line literally except specifiers.
func escapeSpecifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }
