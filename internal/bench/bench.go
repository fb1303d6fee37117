// Package bench is the table `make bench` prints: each row a figure, the physical limit measured in the
// same run and their ratio, with the goal beside it. Every group of rows is a Bench that
// registers itself in init(); TestBenchTable runs them all in name order, prints the table and, when
// FLEETRUNNER_BENCH_OUT names a file, writes it there as Markdown with the machine it ran on
// (docs/benchmarks.md). The short profile, which `go test ./...` runs, takes a few seconds a row on the
// same code path so the table cannot rot; the figures are never asserted as timings.
package bench

import (
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// ProfileEnv selects the full profile when set to "full"; anything else is the short one.
const ProfileEnv = "FLEETRUNNER_BENCH"

// OutEnv names the Markdown file the table is written to.
const OutEnv = "FLEETRUNNER_BENCH_OUT"

// Row is one line of the table: a figure, the physical limit measured in the same run, and their ratio.
type Row struct {
	Name      string  // e.g. "warm job start, p50"
	Value     float64 // the figure, in Unit
	Unit      string  // "s", "ms", "MB/s", "cores", "MiB", "calls", "req/s"…
	Limit     float64 // the physical limit measured in the same run, in Unit; 0 when the row has only a goal
	LimitName string  // what the limit is, e.g. "bare container start through the same SSH connection"
	Goal      string  // the goal, e.g. "≤ 1.3×", "≤ B + 3 s", "< 1 core"
	Note      string  // optional
}

// Ratio is Value/Limit (0 when Limit is 0).
func (r Row) Ratio() float64 {
	if r.Limit == 0 {
		return 0
	}
	return r.Value / r.Limit
}

// Profile says how long a Bench may take: Short is CI's profile (a few seconds a row, the same code
// path); otherwise it is the full run of `make bench`.
type Profile struct{ Short bool }

// CurrentProfile reads ProfileEnv.
func CurrentProfile() Profile {
	return Profile{Short: os.Getenv(ProfileEnv) != "full"}
}

// Bench is one group of rows. Run gets a testing.T so that the rigs (internal/testrig, gitlabsim, the
// local plugin, awssim) can be used, and skips through internal/testenv when a tool is missing.
type Bench struct {
	Name string
	Run  func(t *testing.T, p Profile) []Row
}

var (
	mu      sync.Mutex
	benches []Bench
)

// Register adds a Bench; each row file registers its own in init(). A second Bench of the same name panics.
func Register(b Bench) {
	mu.Lock()
	defer mu.Unlock()
	if b.Name == "" || b.Run == nil {
		panic("bench: Register needs a name and a Run")
	}
	if slices.ContainsFunc(benches, func(o Bench) bool { return o.Name == b.Name }) {
		panic("bench: " + b.Name + " registered twice")
	}
	benches = append(benches, b)
}

// Registered returns the registered Benches in name order.
func Registered() []Bench {
	mu.Lock()
	defer mu.Unlock()
	out := slices.Clone(benches)
	slices.SortFunc(out, func(a, b Bench) int { return strings.Compare(a.Name, b.Name) })
	return out
}
