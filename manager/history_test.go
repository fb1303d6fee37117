package manager_test

import (
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/history"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// TestJobHistory: every job the manager ran is in the runner's job history, which the simulator reads
// as a trace, with its arrival at its creation in GitLab (received minus its time in GitLab's queue).
func TestJobHistory(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	r.writeConfig(runnerSettings{concurrent: 2, requestConcurrency: 2})
	before := time.Now()
	queued := []time.Duration{0, time.Hour, 3 * time.Hour}
	var ids []int64
	for _, q := range queued {
		ids = append(ids, r.sim.Enqueue(gitlabsim.JobSpec{Name: "job", Script: []string{"section step_script", "sleep 200ms"}, QueuedFor: q}))
	}
	noStage := r.sim.Enqueue(gitlabsim.JobSpec{Name: "fails early", Script: []string{"crash"}})
	r.start(0)
	for _, id := range append(ids, noStage) {
		r.finished(id)
	}
	path := filepath.Join(filepath.Dir(r.cfgPath), ".taskscaler", history.FileName(0, manager.ShortToken(r.token)))
	// The simulator reads this file as a trace (taskscaler/sim's TestReadTraceHistory); here its
	// columns are read as they are written.
	var jobs []historyJob
	deadline := time.Now().Add(testTimeout)
	for {
		jobs = readHistory(t, path)
		if len(jobs) == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := time.Now()
	if len(jobs) != 4 {
		t.Fatalf("history has %d jobs, want 4", len(jobs))
	}
	slices.SortFunc(jobs, func(a, b historyJob) int { return a.created.Compare(b.created) })
	// Ordered by arrival: the job queued 3 h first, then the one queued 1 h.
	for i, q := range []time.Duration{3 * time.Hour, time.Hour} {
		// The file keeps milliseconds.
		created := jobs[i].created
		if created.Before(before.Add(-q-time.Millisecond)) || created.After(after.Add(-q)) {
			t.Errorf("job %d arrived at %s, want within [%s, %s] (queued %s)", i, created, before.Add(-q), after.Add(-q), q)
		}
		if jobs[i].duration < 200*time.Millisecond || jobs[i].duration > 10*time.Second {
			t.Errorf("job %d ran %s, want the 200 ms it slept from its first stage", i, jobs[i].duration)
		}
	}
	var zero int
	for _, j := range jobs {
		if j.duration == 0 {
			zero++
		}
	}
	if zero != 1 {
		t.Errorf("%d jobs with duration 0, want 1 (the one that failed before any stage)", zero)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), history.Header+"\n") || !strings.Contains(string(data), ",test-runner,") {
		t.Errorf("history file lacks the header or the runner name:\n%s", data)
	}
}

type historyJob struct {
	created  time.Time
	duration time.Duration
}

// readHistory reads arrival_s and duration_s of a job history file; a file not written yet is empty.
func readHistory(t *testing.T, path string) []historyJob {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []historyJob
	for _, rec := range recs[1:] {
		arrival, err1 := strconv.ParseFloat(rec[0], 64)
		dur, err2 := strconv.ParseFloat(rec[1], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: line %q", path, rec)
		}
		out = append(out, historyJob{created: time.UnixMilli(int64(math.Round(arrival * 1000))), duration: time.Duration(dur * float64(time.Second))})
	}
	return out
}

// TestJobHistoryUnwritable: a state directory that cannot be written is a warning; the job succeeds.
func TestJobHistoryUnwritable(t *testing.T) {
	r := newRig(t, gitlabsim.Options{})
	blocker := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r.writeConfig(runnerSettings{concurrent: 1, requestConcurrency: 1,
		extra: "  [runners.autoscaler]\n    plugin = \"aws\"\n    [runners.autoscaler.state_storage]\n      dir = " + strconv.Quote(filepath.Join(blocker, "state")) + "\n"})
	id := r.sim.Enqueue(gitlabsim.JobSpec{Name: "job", Script: []string{"section step_script", "echo hi"}})
	r.start(0)
	if snap := r.finished(id); snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job status %s, want success despite the unwritable history", snap.Status)
	}
	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(r.logs.String(), "could not add the job to the job history") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about the job history in the log:\n%s", r.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
