package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/executors"
)

const simConfig = `concurrent = 100
[[runners]]
  name = "fleet"
  url = "https://gitlab.example.com"
  token = "glrt-simulatesimulatesim"
  executor = "docker-autoscaler"
  [runners.docker]
    image = "busybox"
  [runners.autoscaler]
    plugin = "aws"
    capacity_per_instance = 2
    max_instances = 40
    [runners.autoscaler.plugin_config]
      name = "asg"
    [[runners.autoscaler.policy]]
      idle_count = 0
      idle_time = "10m"
    [[runners.autoscaler.policy]]
      periods = ["* 8-17 * * mon-fri"]
      timezone = "Europe/Berlin"
      idle_count = IDLE
      idle_time = "30m"
`

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// traceFile is a trace kept in testdata/traces at the repository root (see its SOURCES.md).
func traceFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "..", "testdata", "traces", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("trace %s: %v", name, err)
	}
	return p
}

func simulateCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	t.Setenv("CONFIG_FILE", "")
	return cli(t.Context(), executors.Registry{}, nil, append([]string{"simulate"}, args...)...)
}

func TestSimulateTraceCompare(t *testing.T) {
	trace := traceFile(t, "nightly-batch.csv")
	dir := t.TempDir()
	base := writeFile(t, dir, "base.toml", strings.Replace(simConfig, "IDLE", "0", 1))
	candidate := writeFile(t, dir, "candidate.toml", strings.Replace(simConfig, "IDLE", "8", 1))
	svg := filepath.Join(dir, "fleet.svg")

	res := simulateCLI(t, "--trace", trace, "-c", base, "--compare", candidate, "--svg", svg)
	if res.err != nil {
		t.Fatalf("simulate: %v\nstderr: %s", res.err, res.stderr)
	}
	out := res.stdout.String()
	t.Log(out)
	for _, want := range []string{"1543 jobs", "INSTANCE-MIN", "P95 WAIT", "WAIT/COST", "base.toml/fleet", "candidate.toml/fleet", "picture: " + svg} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if rows := strings.Count(out, ".toml/fleet"); rows != 2 {
		t.Errorf("%d result rows, want 2", rows)
	}
	data, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "<svg") || !strings.Contains(string(data), "jobs waiting") {
		t.Errorf("%s is not the picture (%d bytes)", svg, len(data))
	}
}

// TestSimulateFlags: four jobs far apart on fresh instances with a 10 s boot wait 10.1 s each (a 100 ms
// gather, then five 2 s polls of the booting group) and cost 4 × 132 s.
func TestSimulateFlags(t *testing.T) {
	trace := writeFile(t, t.TempDir(), "four.csv", "arrival_s,duration_s,pipeline\n0,100,1\n1000,100,2\n2000,100,3\n3000,100,4\n")
	res := simulateCLI(t, "--trace", trace, "--boot-delay", "10s", "--capacity-per-instance", "1", "--idle-count", "0")
	if res.err != nil {
		t.Fatalf("simulate: %v\nstderr: %s", res.err, res.stderr)
	}
	var row []string
	for _, line := range strings.Split(res.stdout.String(), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "flags" {
			row = f
		}
	}
	want := []string{"flags", "4", "0", "8.8", "1", "4", "1.0", "10.1s", "10.1s", "10.1s", "10.1s"}
	if len(row) < len(want) || strings.Join(row[:len(want)], " ") != strings.Join(want, " ") {
		t.Fatalf("row = %q, want it to start with %q\n%s", row, want, res.stdout)
	}
}

func TestSimulateErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.csv", "arrival_s,duration_s,pipeline\n0,10,1\n")
	bad := writeFile(t, dir, "bad.csv", "arrival_s,duration_s,pipeline\n0,10,1\n5,ten,2\n")
	cfg := writeFile(t, dir, "config.toml", strings.Replace(simConfig, "IDLE", "1", 1))
	noScaler := writeFile(t, dir, "docker.toml", "concurrent = 1\n[[runners]]\n  name = \"plain\"\n  url = \"https://gitlab.example.com\"\n  token = \"glrt-plainplainplainplain\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"busybox\"\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no trace", nil, `required flag(s) "trace" not set`},
		{"missing trace", []string{"--trace", filepath.Join(dir, "nope.csv")}, "opening trace"},
		{"malformed trace", []string{"--trace", bad}, `line 3: duration_s: "ten" is not a number of seconds`},
		{"bad start", []string{"--trace", good, "--start", "monday"}, `--start "monday"`},
		{"unknown runner", []string{"--trace", good, "-c", cfg, "--runner", "other"}, `no [[runners]] entry named "other"`},
		{"no autoscaler", []string{"--trace", good, "-c", noScaler}, "no [[runners]] entry with [runners.autoscaler]"},
		{"runner without config", []string{"--trace", good, "--runner", "fleet"}, "pass -c/--config too"},
		{"negative", []string{"--trace", good, "--max-instances", "-1"}, "--max-instances must not be negative"},
		{"bad format", []string{"--trace", good, "--format", "xml"}, `--format "xml"`},
		{"sweep of no flag", []string{"--trace", good, "--sweep", "colour=red"}, `"colour" is not a policy or fleet flag`},
		{"sweep without values", []string{"--trace", good, "--sweep", "idle-count"}, "want KEY=V1,V2"},
		{"sweep bad value", []string{"--trace", good, "--sweep", "idle-count=1,many"}, "--sweep idle-count=many"},
		{"negative price", []string{"--trace", good, "--price-per-hour", "-1"}, "--price-per-hour and --warm-price-per-hour must not be negative"},
		{"negative warm price", []string{"--trace", good, "--warm-price-per-hour", "-0.01"}, "--price-per-hour and --warm-price-per-hour must not be negative"},
		{"negative warm pool", []string{"--trace", good, "--warm-pool", "-2"}, "--warm-pool must not be negative"},
		{"no warm start", []string{"--trace", good, "--warm-pool", "2", "--warm-start-delay", "0s"}, "--warm-start-delay must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := simulateCLI(t, tc.args...)
			if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
				t.Fatalf("simulate %q = %v, want an error containing %q", tc.args, res.err, tc.want)
			}
		})
	}
}

// TestSimulateJSONSweep: --sweep runs once per value, --format json prints one object per run with the
// documented keys, and --price-per-hour prices the instance-minutes.
func TestSimulateJSONSweep(t *testing.T) {
	trace := writeFile(t, t.TempDir(), "four.csv", "arrival_s,duration_s,pipeline\n0,100,1\n1000,100,2\n2000,100,3\n3000,100,4\n")
	res := simulateCLI(t, "--trace", trace, "--boot-delay", "10s", "--idle-time", "1m", "--sweep", "idle-count=0,2", "--price-per-hour", "0.6", "--format", "json")
	if res.err != nil {
		t.Fatalf("simulate: %v\nstderr: %s", res.err, res.stderr)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(res.stdout.String()), &rows); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, res.stdout)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want one per swept value\n%s", len(rows), res.stdout)
	}
	for _, k := range []string{"run", "jobs", "failed", "instance_minutes", "lower_bound_minutes", "p50_wait_s", "p95_wait_s", "p99_wait_s", "max_wait_s", "peak_instances", "launches", "cost"} {
		if _, ok := rows[0][k]; !ok {
			t.Errorf("row lacks %q: %v", k, rows[0])
		}
	}
	// idle-count 0: each job waits for its own instance (10.1 s) and four instances cost 8.8 minutes.
	first := rows[0]
	if first["run"] != "flags idle-count=0" || first["p95_wait_s"].(float64) < 10 || first["launches"].(float64) != 4 {
		t.Errorf("idle-count=0 row = %v", first)
	}
	if lb := first["lower_bound_minutes"].(float64); lb < 6.66 || lb > 6.67 {
		t.Errorf("lower bound %v minutes, want 400 s", lb)
	}
	if cost, im := first["cost"].(float64), first["instance_minutes"].(float64); cost < im/60*0.6-1e-9 || cost > im/60*0.6+1e-9 {
		t.Errorf("cost %v for %v instance-minutes at 0.6/h", cost, im)
	}
	// idle-count 2 keeps slots warm: only the first job waits (for the first boot), at a higher cost.
	second := rows[1]
	if second["run"] != "flags idle-count=2" || second["p50_wait_s"].(float64) != 0 || second["instance_minutes"].(float64) <= first["instance_minutes"].(float64) {
		t.Errorf("idle-count=2 row = %v, want no wait for most jobs at a higher cost than %v", second, first)
	}
}

// TestSimulateWarmPool: --warm-pool prints each run without and with the pool. Four jobs far apart,
// after the pool's first boots: each waits for a fresh boot without the pool and for a warm start with
// it; the pool's stopped time is priced at --warm-price-per-hour.
func TestSimulateWarmPool(t *testing.T) {
	trace := writeFile(t, t.TempDir(), "four.csv", "arrival_s,duration_s,pipeline\n1000,100,1\n2000,100,2\n3000,100,3\n4000,100,4\n")
	args := []string{"--trace", trace, "--boot-delay", "60s", "--idle-count", "0", "--warm-pool", "2", "--warm-start-delay", "10s",
		"--price-per-hour", "0.6", "--warm-price-per-hour", "0.01"}
	res := simulateCLI(t, append(args, "--format", "json")...)
	if res.err != nil {
		t.Fatalf("simulate: %v\nstderr: %s", res.err, res.stderr)
	}
	var rows []simRow
	if err := json.Unmarshal([]byte(res.stdout.String()), &rows); err != nil {
		t.Fatalf("not a JSON array of rows: %v\n%s", err, res.stdout)
	}
	if len(rows) != 2 || rows[0].Run != "flags" || rows[1].Run != "flags warm-pool=2" {
		t.Fatalf("rows %+v, want flags and flags warm-pool=2", rows)
	}
	cold, warm := rows[0], rows[1]
	t.Logf("without a pool: %+v", cold)
	t.Logf("with a pool of 2: %+v", warm)
	if cold.WarmPool != 0 || cold.WarmStarts != 0 || cold.WarmInstanceMinutes != 0 {
		t.Errorf("row without a pool has warm figures: %+v", cold)
	}
	if warm.WarmPool != 2 || warm.WarmStarts != 4 || warm.WarmInstanceMinutes <= 0 {
		t.Errorf("pooled row: warm_pool %d, warm_starts %d, warm_instance_minutes %g; want 2, 4 (one per job), some", warm.WarmPool, warm.WarmStarts, warm.WarmInstanceMinutes)
	}
	if warm.P95WaitS >= cold.P95WaitS {
		t.Errorf("p95 wait with the pool %gs, want below %gs without", warm.P95WaitS, cold.P95WaitS)
	}
	if want := warm.InstanceMinutes/60*0.6 + warm.WarmInstanceMinutes/60*0.01; warm.Cost < want-1e-9 || warm.Cost > want+1e-9 {
		t.Errorf("pooled cost %g, want %g (running at 0.6/h, stopped at 0.01/h)", warm.Cost, want)
	}

	table := simulateCLI(t, args...)
	if table.err != nil {
		t.Fatalf("simulate: %v\nstderr: %s", table.err, table.stderr)
	}
	for _, want := range []string{"warm pool 2 stopped instances, warm start 10s", "WARM-MIN", "WARM-STARTS", "flags warm-pool=2"} {
		if !strings.Contains(table.stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.stdout)
		}
	}
}
