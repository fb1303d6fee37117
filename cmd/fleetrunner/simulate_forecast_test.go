package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestSimulateForecast: --forecast runs the taskscaler's online forecast. Six jobs come together at
// 09:00 on three days; with the forecast the second and third days find instances ready, so the median
// job does not wait, where without it every job waits for a boot.
func TestSimulateForecast(t *testing.T) {
	var b strings.Builder
	b.WriteString("arrival_s,duration_s,pipeline\n")
	for day := range 3 {
		for range 6 {
			fmt.Fprintf(&b, "%d,120,%d\n", day*86400+9*3600, day)
		}
	}
	trace := writeFile(t, t.TempDir(), "rush.csv", b.String())
	p50 := func(args ...string) string {
		t.Helper()
		res := simulateCLI(t, append([]string{"--trace", trace, "--boot-delay", "60s", "--idle-time", "20m"}, args...)...)
		if res.err != nil {
			t.Fatalf("simulate %q: %v\nstderr: %s", args, res.err, res.stderr)
		}
		for _, line := range strings.Split(res.stdout.String(), "\n") {
			if f := strings.Fields(line); len(f) > 7 && f[0] == "flags" {
				return f[7]
			}
		}
		t.Fatalf("no row in\n%s", res.stdout)
		return ""
	}
	if got := p50(); got == "0s" {
		t.Errorf("without --forecast p50 wait = %s, want a boot", got)
	}
	if got := p50("--forecast"); got != "0s" {
		t.Errorf("with --forecast p50 wait = %s, want 0s", got)
	}
}
