package badinput_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// row is one bad input and the words the operator must see for it.
type row struct {
	name string
	// input says what is wrong, for the -v listing.
	input string
	// seen returns what the operator sees: the error a command printed, the log lines written.
	seen func(t *testing.T) string
	// want are exact substrings of what is seen.
	want []string
}

// runRows runs every row in parallel. A row's message is logged, so `go test -v` lists them all and a
// plain run prints only the rows that fail.
func runRows(t *testing.T, rows []row) {
	t.Helper()
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			seen := r.seen(t)
			t.Logf("input: %s\nseen:\n%s", r.input, seen)
			for _, w := range r.want {
				if !strings.Contains(seen, w) {
					t.Errorf("the operator does not see %q", w)
				}
			}
		})
	}
}

// commandWithin bounds one fleetrunner command; a row whose input is accepted by mistake would
// otherwise run a manager until the test times out.
const commandWithin = 30 * time.Second

// fleetrunner is the real binary of this checkout, run as an operator runs it.
type fleetrunner struct {
	bin string
	// env is the environment of every command: this one without what would redirect it (AWS_*,
	// CONFIG_FILE, LOG_LEVEL, …).
	env []string
}

func newFleetrunner(t *testing.T) *fleetrunner {
	t.Helper()
	f := &fleetrunner{bin: testrig.BuildFleetrunner(t)}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "AWS_"), k == "CONFIG_FILE", k == "LOG_LEVEL", k == "LOG_FORMAT", k == "LISTEN_ADDRESS",
			strings.HasPrefix(k, "CI_SERVER_"), strings.HasPrefix(k, "REGISTER_"), strings.HasPrefix(k, "RUNNER_"), k == "REGISTRATION_TOKEN":
			continue
		}
		f.env = append(f.env, kv)
	}
	// No instance metadata service on loopback: the SDK must not wait for one.
	f.env = append(f.env, "AWS_EC2_METADATA_DISABLED=true")
	return f
}

// fails runs `fleetrunner args…`, which must exit non-zero, and returns its output (stdout and stderr).
func (f *fleetrunner) fails(t *testing.T, args ...string) string {
	t.Helper()
	out, err := f.exec(t, args)
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Errorf("fleetrunner %s: %v; want it to refuse the input and exit non-zero", strings.Join(args, " "), err)
	}
	return out
}

// succeeds runs `fleetrunner args…`, which must exit 0 (a warning is not a failure), and returns its output.
func (f *fleetrunner) succeeds(t *testing.T, args ...string) string {
	t.Helper()
	out, err := f.exec(t, args)
	if err != nil {
		t.Errorf("fleetrunner %s: %v; want it to accept the input with a warning", strings.Join(args, " "), err)
	}
	return out
}

func (f *fleetrunner) exec(t *testing.T, args []string) (string, error) {
	ctx, cancel := context.WithTimeout(t.Context(), commandWithin)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.bin, args...)
	cmd.Env = f.env
	cmd.Dir = t.TempDir()
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("fleetrunner %s still ran after %s", strings.Join(args, " "), commandWithin)
	}
	return string(out), err
}

// baseConfig is a config.toml that loads: one docker-autoscaler runner on the local plugin. Rows change
// one thing in it. Nothing listens on its GitLab URL (port 9, discard), and it never gets that far.
const baseConfig = `concurrent = 1
check_interval = 1
shutdown_timeout = 5

[[runners]]
  name = "badinput"
  url = "http://127.0.0.1:9"
  token = "glrt-badinput-token"
  executor = "docker-autoscaler"
  [runners.docker]
    image = "busybox:latest"
  [runners.autoscaler]
    plugin = "local"
    capacity_per_instance = 1
    max_instances = 1
    [runners.autoscaler.plugin_config]
      max_size = 1
      base_address = "127.0.99.1"
    [[runners.autoscaler.policy]]
      idle_count = 0
      idle_time = "5m"
`

// configFile writes text as config.toml in a directory of its own and returns its path.
func configFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// edited is baseConfig with each pair of edits (old, new) applied once; an old text that is not there
// is a broken row.
func edited(t *testing.T, edits ...string) string {
	t.Helper()
	text := baseConfig
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(text, edits[i]) {
			t.Fatalf("row edits %q, which the base config does not hold", edits[i])
		}
		text = strings.Replace(text, edits[i], edits[i+1], 1)
	}
	return text
}
