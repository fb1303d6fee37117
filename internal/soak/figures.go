package soak

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Figures are what a soak run measured. The lists name the offending jobs, instances, files or
// resources, so that a failed goal comes with its evidence.
type Figures struct {
	Profile string
	Seed    uint64
	// Took is the whole run, set-up included.
	Took time.Duration
	// Crashes counts kill -9 and restart cycles done.
	Crashes int
	// Faults counts the injected faults by kind.
	Faults map[string]int
	Jobs   JobFigures
	// StateProblems are state files found broken after a kill -9 (or at the end).
	StateProblems []string
	// Unrecorded are jobs in flight at a kill -9 that no state file knew, so no later process can
	// report them; Unreported are jobs on record that the next process did not report as
	// runner_system_failure.
	Unrecorded, Unreported []string
	// HandoutLost are jobs GitLab handed out less than handoutWindow before a kill -9 that no state file
	// knew: the process died between GitLab's answer and its own record of the job (writing it takes
	// an fsync). No runner can close that window without GitLab's two-phase job commit; GitLab ends
	// such a job at its timeout. They are printed, not held against the goal of no lost job.
	HandoutLost []string
	// inFlight maps each job in flight at a kill -9 to that kill's number; unrecorded holds those of
	// them in no state file.
	inFlight   map[int64]int
	unrecorded map[int64]bool
	// handout holds the jobs of HandoutLost.
	handout map[int64]bool
	// RecordSeconds are, for each job in flight at a kill -9 that a state file knew, the seconds from
	// GitLab handing it out to the manager recording it: the window in which a kill loses a job.
	RecordSeconds []float64
	// ReportSeconds are, for each job in flight at a kill -9, the seconds from the restart to its final
	// state in GitLab.
	ReportSeconds []float64
	// Orphaned are cloud instances unknown to the state files before the shutdown; LeftAfterShutdown
	// the instances still there after it.
	Orphaned, LeftAfterShutdown []string
	// Leftovers are job containers, volumes and networks on the engine once every job was final, before
	// the shutdown; LeftoversAfterShutdown after it.
	Leftovers, LeftoversAfterShutdown []string
	// Shutdown is what went wrong with the SIGQUIT stop, empty for a clean exit.
	Shutdown string
	// FirstStart, FirstEnd, LastStart and LastEnd are the manager's usage at the start and end of the
	// first and of the last process.
	FirstStart, FirstEnd, LastStart, LastEnd Usage
}

// handoutWindow bounds how long before a kill -9 GitLab may have handed out a job that the killed
// process had not recorded yet (the longest seen under a load of 6 on 2 cores was a few hundred ms).
const handoutWindow = 2 * time.Second

// percentile is the p-th percentile (0-100) of xs by the nearest-rank method; 0 for none.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Table is the figures as the run's report: one row per figure with its goal where it has one.
func (f Figures) Table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(name string, value any, goal string) { _, _ = fmt.Fprintf(tw, "%s\t%v\t%s\n", name, value, goal) }
	row("figure", "value", "goal")
	row("profile, seed", fmt.Sprintf("%s, %d", f.Profile, f.Seed), "")
	row("run time", f.Took.Round(time.Second), "")
	row("crash cycles survived (kill -9, restart)", f.Crashes, "")
	for _, k := range slices.Sorted(maps.Keys(f.Faults)) {
		row("  fault: "+k, f.Faults[k], "")
	}
	j := f.Jobs
	row("jobs queued", j.Queued, "")
	row("jobs succeeded", j.Succeeded, "")
	row("jobs failed (script, exit 1)", j.FailedScript, "")
	row("jobs failed (runner_system_failure)", j.FailedSystem, "")
	row("jobs with a wrong outcome", len(j.WrongOutcome), "0")
	row("jobs lost (not final at the end)", len(j.Lost), "0")
	row("trace bytes lost", j.TraceBytesLost, "0")
	row("trace problems (size, checksum, message)", len(j.TraceProblems), "0")
	row("jobs in flight at a kill -9", len(f.inFlight), "")
	row("  in no state file (lost)", len(f.Unrecorded), "0")
	row(fmt.Sprintf("  handed out < %s before the kill, not yet recorded", handoutWindow), len(f.HandoutLost), "")
	row("  handed out to recorded, max / p50 (ms)", fmt.Sprintf("%.0f / %.0f", 1000*percentile(f.RecordSeconds, 100), 1000*percentile(f.RecordSeconds, 50)), "")
	row("  on record, not reported as runner_system_failure", len(f.Unreported), "0")
	row("  restart to reported, max / p50 (s)", fmt.Sprintf("%.1f / %.1f", percentile(f.ReportSeconds, 100), percentile(f.ReportSeconds, 50)), "")
	row("state file problems", len(f.StateProblems), "0")
	row("instances orphaned (before shutdown)", len(f.Orphaned), "0")
	row("shutdown (SIGQUIT) problem", cmp.Or(f.Shutdown, "none"), "none")
	row("instances left after shutdown", len(f.LeftAfterShutdown), "0")
	row("job leftovers on the engine (before shutdown)", len(f.Leftovers), "0")
	row("job leftovers on the engine (after shutdown)", len(f.LeftoversAfterShutdown), "0")
	usage := func(name string, u Usage) {
		row(name, fmt.Sprintf("%d goroutines, RSS %.1f MiB, heap in use %.1f MiB", u.Goroutines, u.RSS/(1<<20), u.HeapInuse/(1<<20)), "")
	}
	usage("manager, first process start", f.FirstStart)
	usage("manager, first process end", f.FirstEnd)
	usage("manager, last process start", f.LastStart)
	usage("manager, last process end", f.LastEnd)
	_ = tw.Flush()
	return b.String()
}
