package scaling_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/internal/bench/scaling"
)

// TestScalingTable prints the table of `make bench-scaling` (FLEETRUNNER_BENCH=full: every trace of
// testdata/traces, whole). Without it, a short profile (one trace cut to two days, a short search)
// checks the table's shape; it never judges the figures.
func TestScalingTable(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "testdata", "traces", "*.csv"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no traces in testdata/traces at the repository root: %v", err)
	}
	setup := scaling.DefaultSetup()
	full := os.Getenv("FLEETRUNNER_BENCH") == "full"
	if !full {
		files = []string{filepath.Join("..", "..", "..", "testdata", "traces", "nightly-batch.csv")}
		setup.Short, setup.Budget = true, 5*time.Second
	}
	log := logrus.New()
	log.Out = testWriter{t}
	setup.Log = log
	began := time.Now()
	traces, err := scaling.Run(t.Context(), files, setup)
	if err != nil {
		t.Fatal(err)
	}
	text := scaling.Text(traces, setup)
	t.Logf("took %s\n%s", time.Since(began).Round(time.Second), text)
	if full {
		// make bench-scaling prints this part of the log again at the end.
		os.Stdout.WriteString(text)
	}

	if len(traces) != len(files) {
		t.Fatalf("%d traces in the table, want %d", len(traces), len(files))
	}
	for _, tr := range traces {
		kinds := map[scaling.Kind]int{}
		for _, r := range tr.Rows {
			kinds[r.Kind]++
			if r.Trace != tr.Name || r.Policy == "" || r.Jobs == 0 {
				t.Errorf("%s: row without a trace, policy or jobs: %+v", tr.Name, r)
			}
			if !(r.InstanceHours > 0) || !(r.LowerBoundHours > 0) || r.P95 < 0 || r.P99 < r.P95 {
				t.Errorf("%s: row %q has figures out of shape: %+v", tr.Name, r.Policy, r)
			}
		}
		if kinds[scaling.Upstream] != 4 || kinds[scaling.Tuned] != 1 || kinds[scaling.Forecast] != 1 {
			t.Errorf("%s: rows by kind %v, want 4 upstream-style, 1 tuned, 1 forecast", tr.Name, kinds)
		}
		if !strings.HasPrefix(tr.Verdict, "MET") && !strings.HasPrefix(tr.Verdict, "NOT MET") && !strings.HasPrefix(tr.Verdict, "no upstream") {
			t.Errorf("%s: verdict %q says neither met nor not met", tr.Name, tr.Verdict)
		}
		if !strings.Contains(text, tr.Name+" (") {
			t.Errorf("the text lacks the verdict line of %s", tr.Name)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
