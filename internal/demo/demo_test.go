package demo

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// TestDemo runs the whole demo with the real fleetrunner binary: every job of the pipeline succeeds,
// instances are created and retired (max_use_count forces more instances than max_instances), the
// live view shows it, and no instance's sshd is left once the runner stopped.
func TestDemo(t *testing.T) {
	testenv.RequireDocker(t)
	testenv.RequireSSHD(t)
	testenv.RequireCommand(t, "busybox", "apt-get install busybox-static")
	testenv.RequireCommand(t, "go", "install Go to build fleetrunner")
	var out bytes.Buffer
	logPath := filepath.Join(t.TempDir(), "demo.log")
	sum, err := Run(t.Context(), Options{Out: &out, LogPath: logPath})
	if err != nil {
		t.Fatalf("demo: %v\n%s\nlog ends:\n%s", err, out.String(), tailFile(logPath, 30))
	}
	if sum.Jobs != 12 || sum.Succeeded != 12 || sum.Failed != 0 {
		t.Errorf("summary %+v, want 12 jobs all succeeded\n%s", sum, out.String())
	}
	// 12 jobs at max_use_count 4 need at least 3 instances; each that ran 4 jobs is retired.
	if sum.InstancesCreated < 3 || sum.InstancesRetired < 1 {
		t.Errorf("instances created %d, retired %d; want at least 3 and 1\n%s", sum.InstancesCreated, sum.InstancesRetired, out.String())
	}
	if sum.LeftRunning != 0 {
		t.Errorf("%d instances left running after fleetrunner stopped", sum.LeftRunning)
	}
	for _, want := range []string{"▲ instance demo-", "● job compile", "✔ job package", "▼ instance demo-", "fleet: ",
		"gitlab_runner_jobs_total 12, failed 0", "no instance is left running",
		"Summary: 12 jobs: 12 succeeded, 0 failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("live view lacks %q:\n%s", want, out.String())
		}
	}
	// The runner's own log went to the log file, and it stopped gracefully.
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"metrics server listening", "signal=quit", "deleted all instances on shutdown"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("the runner's log lacks %q", want)
		}
	}
	// Neither the runner token nor a job token reaches the screen or the log.
	token := regexp.MustCompile(`(glrt|glcbt)-[A-Za-z0-9_]{8,}`)
	if m := token.Find(out.Bytes()); m != nil {
		t.Errorf("the live view shows a token: %s", m)
	}
	if m := token.Find(log); m != nil {
		t.Errorf("the log shows a token: %s", m)
	}
}

func TestMissingPrerequisites(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		fleetrunner string
		want        string
	}{
		{"no docker", map[string]string{"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "", "no Docker Engine answers"},
		{"no go", map[string]string{"PATH": t.TempDir()}, "", "no Go toolchain (go) on PATH"},
		{"bad binary", nil, "/nonexistent/fleetrunner", "--fleetrunner /nonexistent/fleetrunner is not an executable file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := Run(t.Context(), Options{Fleetrunner: tt.fleetrunner})
			if !errors.Is(err, ErrPrerequisite) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v, want a prerequisite error saying %q", err, tt.want)
			}
		})
	}
}
