package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/executors"
)

const checkedConfig = `concurrent = 1
[[runners]]
  name = "r"
  url = "https://gitlab.example.com"
  token = "glrt-abc"
  executor = "docker"
  [runners.docker]
    image = "alpine"
`

func writeConfigFile(t *testing.T, content string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "config.toml", content)
}

func TestCheckNamesFileKeyAndSuggestion(t *testing.T) {
	good := writeConfigFile(t, checkedConfig)
	typo := writeConfigFile(t, strings.Replace(checkedConfig, "concurrent = 1", "concurent = 1", 1))
	invalid := writeConfigFile(t, strings.Replace(checkedConfig, `image = "alpine"`, "image = \"alpine\"\n    shm_size = \"big\"", 1))

	res := cli(t.Context(), executors.Registry{}, nil, "check", good)
	if res.err != nil || !strings.Contains(res.stdout.String(), good+": ok") {
		t.Fatalf("good file: %v\n%s", res.err, res.stdout)
	}
	res = cli(t.Context(), executors.Registry{}, nil, "-c", typo, "check")
	if res.err == nil || !strings.Contains(res.stdout.String(), typo+": concurent: unknown key; did you mean `concurrent`?") {
		t.Fatalf("typo: err %v, output\n%s", res.err, res.stdout)
	}
	res = cli(t.Context(), executors.Registry{}, nil, "check", good, invalid)
	if res.err == nil || !strings.Contains(res.stdout.String(), invalid+": runners[0].docker.shm_size: ") || !strings.Contains(res.err.Error(), invalid) {
		t.Fatalf("invalid value: err %v, output\n%s", res.err, res.stdout)
	}
}

// Operators' CI reads the exit status, so the test runs the real main in a child process.
func TestCheckExitStatus(t *testing.T) {
	if args := os.Getenv("FLEETRUNNER_TEST_MAIN_ARGS"); args != "" {
		os.Args = append([]string{"fleetrunner"}, strings.Split(args, "\n")...)
		main()
		os.Exit(0)
	}
	for _, c := range []struct {
		content string
		status  int
	}{
		{checkedConfig, 0},
		{strings.Replace(checkedConfig, "[runners.docker]", "[runners.dokcer]", 1), 1},
		{strings.Replace(checkedConfig, "concurrent = 1", "concurrent = \"one\"", 1), 1},
	} {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCheckExitStatus$")
		cmd.Env = append(os.Environ(), "FLEETRUNNER_TEST_MAIN_ARGS=check\n"+writeConfigFile(t, c.content))
		out, err := cmd.CombinedOutput()
		status := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			status = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if status != c.status {
			t.Errorf("exit status %d, want %d; output:\n%s", status, c.status, out)
		}
	}
}
