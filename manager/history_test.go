package manager_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/history"
	"gitlab.com/fleetrunner/fleetrunner/manager"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/sim"
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
	var jobs []sim.Job
	deadline := time.Now().Add(testTimeout)
	for {
		var err error
		jobs, err = sim.LoadTrace(path)
		if err == nil && len(jobs) == 4 || time.Now().After(deadline) {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := time.Now()
	if len(jobs) != 4 {
		t.Fatalf("history has %d jobs, want 4", len(jobs))
	}
	// Ordered by arrival: the job queued 3 h first, the one not queued (or failing early) last.
	for i, q := range []time.Duration{3 * time.Hour, time.Hour} {
		// The file keeps milliseconds.
		created := time.Unix(0, int64(jobs[i].Arrival))
		if created.Before(before.Add(-q-time.Millisecond)) || created.After(after.Add(-q)) {
			t.Errorf("job %d arrived at %s, want within [%s, %s] (queued %s)", i, created, before.Add(-q), after.Add(-q), q)
		}
		if jobs[i].Duration < 200*time.Millisecond || jobs[i].Duration > 10*time.Second {
			t.Errorf("job %d ran %s, want the 200 ms it slept from its first stage", i, jobs[i].Duration)
		}
	}
	var zero int
	for _, j := range jobs {
		if j.Duration == 0 {
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
