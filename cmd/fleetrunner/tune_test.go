package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/executors"
)

func tuneCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	t.Setenv("CONFIG_FILE", "")
	return cli(t.Context(), executors.Registry{}, nil, append([]string{"tune"}, args...)...)
}

// burstTrace writes days of a pipeline of 4 one-minute jobs at 09:30 each day, nothing else.
func burstTrace(t *testing.T, dir string, days int) string {
	var b strings.Builder
	b.WriteString("arrival_s,duration_s,pipeline\n")
	for d := range days {
		for range 4 {
			fmt.Fprintf(&b, "%d,60,%d\n", d*86400+9*3600+1800, d)
		}
	}
	return writeFile(t, dir, "bursts.csv", b.String())
}

func TestTune(t *testing.T) {
	dir := t.TempDir()
	trace := burstTrace(t, dir, 3)
	cfg := writeFile(t, dir, "config.toml", strings.Replace(simConfig, "IDLE", "2", 1))
	out := filepath.Join(dir, "policy.toml")
	res := tuneCLI(t, "--trace", trace, "--target-p95", "0s", "--boot-delay", "60s", "--capacity-per-instance", "1", "-c", cfg, "--out", out, "--forecast")
	if res.err != nil {
		t.Fatalf("tune: %v\nstdout: %s\nstderr: %s", res.err, res.stdout, res.stderr)
	}
	text := res.stdout.String()
	t.Log(text)
	for _, want := range []string{
		"holding out 2026-11-24 00:00:00", "[[runners.autoscaler.policy]]", `periods = ["* 9 * * *"]`, "idle_count = 4",
		"on the held-out days (8 jobs", "current config.toml/fleet", "idle_count=0 idle_time=20m0s", "idle_count=10 idle_time=20m0s",
		"tuned meets the target on the held-out days", "forecast mode (run on the whole trace, measured on the held-out days)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	data, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(data), "idle_count = 4") {
		t.Errorf("--out file: %v\n%s", err, data)
	}
}

func TestTuneErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(t.TempDir(), "short")
	if err := os.Mkdir(short, 0o700); err != nil {
		t.Fatal(err)
	}
	oneDay := burstTrace(t, short, 2)
	bad := writeFile(t, dir, "bad.csv", "arrival_s,duration_s,pipeline\n0,10,1\n5,ten,2\n")
	three := burstTrace(t, dir, 3)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{"--trace", three}, `required flag(s) "target-p95" not set`},
		{"malformed trace", []string{"--trace", bad, "--target-p95", "10s"}, bad + ": line 3: duration_s"},
		{"too short", []string{"--trace", oneDay, "--target-p95", "10s"}, "tune needs at least 2 days"},
		{"negative target", []string{"--trace", three, "--target-p95", "-1s"}, "--target-p95 must not be negative"},
		{"unmeetable", []string{"--trace", three, "--target-p95", "0s", "--boot-delay", "60s", "--max-instances", "1"}, "no policy tried keeps the p95 wait at or under 0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := tuneCLI(t, tc.args...)
			if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
				t.Fatalf("tune %q = %v, want an error containing %q\n%s", tc.args, res.err, tc.want, res.stdout)
			}
			if tc.name == "unmeetable" && !strings.Contains(res.stdout.String(), "the closest (p95") {
				t.Errorf("an unmeetable target does not print the closest policy:\n%s", res.stdout)
			}
		})
	}
}
