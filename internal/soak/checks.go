package soak

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// systemFailureLine is how every runner_system_failure is told in the job log (manager and recovery).
const systemFailureLine = "Job failed (system failure)"

// States is what the taskscaler state files hold, and what is wrong with them.
type States struct {
	// Instances are the instances the files know; Jobs the jobs in flight, each with the time it was
	// recorded as started (zero for a job only on record as ended, its final state not yet sent).
	Instances map[string]bool
	Jobs      map[int64]time.Time
	Problems  []string
}

// StateFiles checks every taskscaler state file below the config directory: each must parse as the
// taskscaler reads it and be mode 0600, and there must be one per runner.
func (w *World) StateFiles() States {
	st := States{Instances: map[string]bool{}, Jobs: map[int64]time.Time{}}
	var paths []string
	root := filepath.Join(w.ConfigDir, ".taskscaler")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "state.json" {
			paths = append(paths, path)
		}
		return err
	})
	if err != nil {
		st.Problems = append(st.Problems, fmt.Sprintf("walk %s: %v", root, err))
		return st
	}
	if len(paths) != len(w.Tokens) {
		st.Problems = append(st.Problems, fmt.Sprintf("%d state files below %s, want one per runner (%d)", len(paths), root, len(w.Tokens)))
	}
	for _, path := range paths {
		rel, _ := filepath.Rel(w.ConfigDir, path)
		snap, err := state.NewFile(path).Load()
		if err != nil {
			st.Problems = append(st.Problems, fmt.Sprintf("%s: %v", rel, err))
			continue
		}
		if fi, err := os.Stat(path); err != nil {
			st.Problems = append(st.Problems, fmt.Sprintf("%s: %v", rel, err))
		} else if perm := fi.Mode().Perm(); perm != 0o600 {
			st.Problems = append(st.Problems, fmt.Sprintf("%s: mode %04o, want 0600", rel, perm))
		}
		for _, in := range snap.Instances {
			st.Instances[in.ID] = true
		}
		for _, j := range snap.Jobs {
			// The docker-autoscaler executor keeps a second record, marked ended, from the job's end
			// until GitLab has its final state.
			var blob struct {
				Ended bool `json:"ended"`
			}
			_ = json.Unmarshal(j.Data, &blob)
			if !blob.Ended {
				st.Jobs[j.JobID] = j.Since
			} else if _, ok := st.Jobs[j.JobID]; !ok {
				st.Jobs[j.JobID] = time.Time{}
			}
		}
	}
	return st
}

// Orphans are the instances the clouds (awssim's group, the local plugin's records) hold that no state
// file knows: a restarted manager could neither adopt nor remove them.
func (w *World) Orphans() []string {
	known := w.StateFiles().Instances
	var orphans []string
	for _, id := range w.CloudInstances() {
		if !known[id] {
			orphans = append(orphans, id)
		}
	}
	return orphans
}

// CloudInstances lists the instances both clouds hold, sorted.
func (w *World) CloudInstances() []string {
	var ids []string
	for _, in := range w.AWSInstances() {
		ids = append(ids, in.ID)
	}
	for _, in := range w.LocalInstances() {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	return ids
}

// Leftovers lists what the jobs of both runners left on the engine.
func (w *World) Leftovers() []string {
	var left []string
	for _, token := range w.Tokens {
		left = append(left, testrig.JobLeftovers(w.t, w.Docker, token)...)
	}
	return left
}

var (
	// jobInName finds the job in a container or volume name (fleetrunner-<runner>-job-<id>-…).
	jobInName = regexp.MustCompile(`-job-(\d+)-`)
	// connectedRE finds the instances a job's log says it ran on.
	connectedRE = regexp.MustCompile(`Instance (\S+) connected`)
)

// Explain adds to each leftover what became of its job and of the instances the job ran on, the
// evidence for telling a runner that did not clean up from an instance that vanished under its job.
// hit maps the instances faults were aimed at to the fault; inFlight the jobs in flight at a kill -9
// to its number.
func (w *World) Explain(left []string, hit map[string]string, inFlight map[int64]int) []string {
	cloud := w.CloudInstances()
	out := make([]string, 0, len(left))
	for _, l := range left {
		m := jobInName.FindStringSubmatch(l)
		if m == nil {
			out = append(out, l)
			continue
		}
		id, _ := strconv.ParseInt(m[1], 10, 64)
		j, _ := w.GitLab.Job(id)
		what := fmt.Sprintf("%s: job %d %s %s", l, id, j.Status, j.FailureReason)
		if n, ok := inFlight[id]; ok {
			what += fmt.Sprintf(", in flight at kill -9 %d", n)
		}
		for _, c := range connectedRE.FindAllSubmatch(j.Trace, -1) {
			in := string(c[1])
			fate := cmp.Or(hit[in], "removed by the runner")
			if slices.Contains(cloud, in) {
				fate = "still in the fleet"
			}
			what += fmt.Sprintf(", ran on %s (%s)", in, fate)
		}
		out = append(out, what)
	}
	return out
}

// JobFigures sums up every queued job as GitLab holds it.
type JobFigures struct {
	Queued, Succeeded, FailedScript, FailedSystem int
	// Lost are jobs not in a final state; WrongOutcome jobs whose end does not fit what they ran (a
	// failing script that succeeded, a job failed for another reason than its script or the system).
	Lost, WrongOutcome []string
	// TraceBytesLost sums, over the jobs, the difference between the stored log and the size the final
	// update reported; TraceProblems says which jobs and also lists checksum mismatches and system
	// failures whose log does not say so.
	TraceBytesLost int64
	TraceProblems  []string
}

// Jobs checks every queued job: its final state against its kind, and its stored log against the final
// update's bytesize and checksum.
func (w *World) Jobs(kinds map[int64]string) JobFigures {
	var f JobFigures
	for _, j := range w.GitLab.Jobs() {
		kind, ok := kinds[j.ID]
		if !ok {
			continue
		}
		f.Queued++
		name := fmt.Sprintf("job %d (%s)", j.ID, j.Name)
		if !j.Finished() {
			f.Lost = append(f.Lost, fmt.Sprintf("%s still %s", name, j.Status))
			continue
		}
		switch {
		case j.Status == gitlabsim.StatusSuccess && kind != kindFail:
			f.Succeeded++
		case j.Status == gitlabsim.StatusFailed && j.FailureReason == string(job.ScriptFailure) && kind == kindFail && j.ExitCode == 1:
			f.FailedScript++
		case j.Status == gitlabsim.StatusFailed && j.FailureReason == string(job.RunnerSystemFailure):
			f.FailedSystem++
			if !strings.Contains(string(j.Trace), systemFailureLine) {
				f.TraceProblems = append(f.TraceProblems, fmt.Sprintf("%s: runner_system_failure, but its log does not say %q", name, systemFailureLine))
			}
		default:
			f.WrongOutcome = append(f.WrongOutcome, fmt.Sprintf("%s: %s %s exit %d", name, j.Status, j.FailureReason, j.ExitCode))
		}
		if d := j.Bytesize - int64(len(j.Trace)); d != 0 {
			f.TraceBytesLost += max(d, -d)
			f.TraceProblems = append(f.TraceProblems, fmt.Sprintf("%s: GitLab stored %d bytes of log, the final update reported %d", name, len(j.Trace), j.Bytesize))
		}
		if sum := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(j.Trace)); j.Checksum != "" && j.Checksum != sum {
			f.TraceProblems = append(f.TraceProblems, fmt.Sprintf("%s: the final update's checksum is %s, the stored log's %s", name, j.Checksum, sum))
		}
	}
	return f
}
