package badinput_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
)

// newGitLab starts a gitlabsim for one row and returns it with the glrt- token of a runner it knows.
func newGitLab(t *testing.T) (*gitlabsim.Server, string) {
	t.Helper()
	gl, err := gitlabsim.New(gitlabsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gl.Close() })
	_, token := gl.CreateRunner(gitlabsim.RunnerOptions{Description: "badinput " + t.Name()})
	return gl, token
}

// inDir runs fleetrunner with -c pointing into a directory of its own, which reads $DIR in what it returns.
func (f *fleetrunner) inDir(t *testing.T, wantExit0 bool, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	args = append([]string{"-c", filepath.Join(dir, "config.toml")}, args...)
	out := ""
	if wantExit0 {
		out = f.succeeds(t, args...)
	} else {
		out = f.fails(t, args...)
	}
	return strings.ReplaceAll(out, dir, "$DIR")
}

func cliRows(f *fleetrunner) []row {
	register := func(t *testing.T, args ...string) string {
		return f.inDir(t, false, append([]string{"register", "--non-interactive"}, args...)...)
	}
	return []row{
		{
			name: "unknown command", input: "fleetrunner rnu",
			seen: func(t *testing.T) string { return f.fails(t, "rnu") },
			want: []string{`ERROR: unknown command "rnu" for "fleetrunner"`, "Did you mean this?\n\trun"},
		},
		{
			name: "unknown flag", input: "fleetrunner run --conifg config.toml",
			seen: func(t *testing.T) string { return f.fails(t, "run", "--conifg", "config.toml") },
			want: []string{"ERROR: unknown flag: --conifg (see `fleetrunner run --help`)"},
		},
		{
			name: "stray argument", input: "fleetrunner run config.toml (without -c)",
			seen: func(t *testing.T) string { return f.fails(t, "run", "config.toml") },
			want: []string{"ERROR: `fleetrunner run` takes no arguments, got \"config.toml\": everything is given with flags, the config file with -c/--config (see `fleetrunner run --help`)"},
		},
		{
			name: "log level", input: "--log-level loud",
			seen: func(t *testing.T) string { return f.fails(t, "run", "--log-level", "loud") },
			want: []string{`ERROR: --log-level: unknown log level "loud" (want debug, info, warn, error, fatal or panic)`},
		},
		{
			name: "log format", input: "--log-format xml",
			seen: func(t *testing.T) string { return f.fails(t, "list", "--log-format", "xml") },
			want: []string{`ERROR: --log-format: unknown log format "xml" (want text or json)`},
		},
		{
			name: "listen address", input: "run --listen-address 127.0.0.1:metrics",
			seen: func(t *testing.T) string {
				path := configFile(t, baseConfig)
				return f.fails(t, "run", "-c", path, "--listen-address", "127.0.0.1:metrics")
			},
			want: []string{`ERROR: --listen-address: invalid listen address "127.0.0.1:metrics" (want host:port or host, e.g. ":9252")`},
		},
		{
			name: "listen address taken", input: "run --listen-address on a port another process holds",
			seen: func(t *testing.T) string {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				path := configFile(t, baseConfig)
				return strings.ReplaceAll(f.fails(t, "run", "-c", path, "--listen-address", l.Addr().String()), l.Addr().String(), "$ADDR")
			},
			want: []string{"$ADDR", "address already in use"},
		},
		{
			name: "run without config", input: "fleetrunner run -c a file that does not exist",
			seen: func(t *testing.T) string { return f.inDir(t, false, "run") },
			want: []string{"ERROR: config file $DIR/config.toml does not exist: register a runner first (fleetrunner register) or pass -c/--config"},
		},
		{
			name: "verify removed runner", input: "verify a runner whose token GitLab revoked",
			seen: func(t *testing.T) string {
				gl, token := newGitLab(t)
				gl.RevokeRunner(token)
				path := configFile(t, edited(t, `url = "http://127.0.0.1:9"`, `url = "`+gl.URL()+`"`, "glrt-badinput-token", token))
				out := f.fails(t, "verify", "-c", path)
				return strings.ReplaceAll(strings.ReplaceAll(out, filepath.Dir(path), "$DIR"), gl.URL(), "$URL")
			},
			want: []string{`runner "badinput" (`, ") at $URL: removed from GitLab",
				"ERROR: 1 runner(s) no longer exist in GitLab; run `fleetrunner verify --delete` to drop them from $DIR/config.toml"},
		},
		{
			name: "verify unreachable", input: "verify with nothing listening at the runner's url",
			seen: func(t *testing.T) string {
				out := f.fails(t, "verify", "-c", configFile(t, baseConfig))
				return out
			},
			want: []string{`runner "badinput" (badinput) at http://127.0.0.1:9: could not verify: verifying runner glrt-bad:`, "connection refused",
				"ERROR: 1 runner(s) could not be verified; they were kept: check that GitLab answers at their url from this host (the lines above say why not), then verify again"},
		},
		{
			name: "register without url", input: "register --non-interactive without --url",
			seen: func(t *testing.T) string { return register(t, "--token", "glrt-x", "--executor", "docker") },
			want: []string{"ERROR: --url is required with --non-interactive"},
		},
		{
			name: "register with both tokens", input: "register --token and --registration-token",
			seen: func(t *testing.T) string {
				return register(t, "--url", "http://127.0.0.1:9", "--token", "glrt-x", "--registration-token", "GR1348941x", "--executor", "docker")
			},
			want: []string{"ERROR: give either --token (glrt-...) or --registration-token, not both"},
		},
		{
			name: "register unsupported executor", input: "register --executor shell",
			seen: func(t *testing.T) string {
				return register(t, "--url", "http://127.0.0.1:9", "--token", "glrt-x", "--executor", "shell")
			},
			want: []string{`ERROR: executor "shell" is not supported (want "docker-autoscaler" or "docker")`},
		},
		{
			name: "register autoscaler without template", input: "register --executor docker-autoscaler without --template-config",
			seen: func(t *testing.T) string {
				return register(t, "--url", "http://127.0.0.1:9", "--token", "glrt-x", "--executor", "docker-autoscaler")
			},
			want: []string{`ERROR: executor "docker-autoscaler" needs [runners.autoscaler] settings, which have no flags: put them in a file with one [[runners]] entry and pass --template-config FILE`},
		},
		{
			name: "register missing template", input: "register --template-config naming no file",
			seen: func(t *testing.T) string {
				dir := t.TempDir()
				out := register(t, "--url", "http://127.0.0.1:9", "--token", "glrt-x", "--template-config", filepath.Join(dir, "template.toml"))
				return strings.ReplaceAll(out, dir, "$TEMPLATE_DIR")
			},
			want: []string{"ERROR: --template-config $TEMPLATE_DIR/template.toml:", "no such file or directory"},
		},
		{
			name: "register template with two runners", input: "register --template-config holding two [[runners]]",
			seen: func(t *testing.T) string {
				path := configFile(t, "[[runners]]\n  name = \"a\"\n[[runners]]\n  name = \"b\"\n")
				return strings.ReplaceAll(register(t, "--url", "http://127.0.0.1:9", "--token", "glrt-x", "--template-config", path), path, "$TEMPLATE")
			},
			want: []string{"ERROR: --template-config $TEMPLATE: want exactly one [[runners]] entry, found 2"},
		},
		{
			name: "register bad url", input: "register --url ftp://gitlab.example.com",
			seen: func(t *testing.T) string {
				return register(t, "--url", "ftp://gitlab.example.com", "--token", "glrt-x", "--executor", "docker", "--name", "r")
			},
			want: []string{`ERROR: gitlab url "ftp://gitlab.example.com": scheme must be http or https`},
		},
		{
			name: "register wrong token", input: "register --token with a glrt- token GitLab does not know",
			seen: func(t *testing.T) string {
				gl, _ := newGitLab(t)
				return register(t, "--url", gl.URL(), "--token", "glrt-not-known-to-gitlab", "--executor", "docker", "--name", "r")
			},
			want: []string{"ERROR: verifying runner glrt-not: token is not valid", "token is not valid (the runner was deleted or its token revoked); register it again"},
		},
		{
			name: "register wrong registration token", input: "register --registration-token GitLab does not accept",
			seen: func(t *testing.T) string {
				gl, _ := newGitLab(t)
				return register(t, "--url", gl.URL(), "--registration-token", "GR1348941wrong", "--executor", "docker", "--name", "r")
			},
			want: []string{"ERROR: registering runner: the registration token was not accepted; check it in GitLab"},
		},
		{
			name: "register flag not a number", input: "register --limit many",
			seen: func(t *testing.T) string { return register(t, "--limit", "many") },
			want: []string{`ERROR: invalid argument "many" for "--limit" flag: strconv.ParseInt: parsing "many": invalid syntax (see ` + "`fleetrunner register --help`)"},
		},
		{
			name: "unregister without target", input: "unregister with no --name, --url/--token or --all-runners",
			seen: func(t *testing.T) string { return f.fails(t, "unregister", "-c", configFile(t, baseConfig)) },
			want: []string{"ERROR: say which runner to unregister: --name NAME, --url URL --token TOKEN, or --all-runners"},
		},
		{
			name: "unregister unknown name", input: "unregister --name of no configured runner",
			seen: func(t *testing.T) string {
				path := configFile(t, baseConfig)
				return strings.ReplaceAll(f.fails(t, "unregister", "-c", path, "--name", "nosuch"), filepath.Dir(path), "$DIR")
			},
			want: []string{`ERROR: no runner named "nosuch" in $DIR/config.toml (see ` + "`fleetrunner list`)"},
		},
	}
}
