package gitlabsim

import (
	"net/http"
	"testing"
)

func TestInspectAPI(t *testing.T) {
	s := newSim(t, Options{})
	r := do(t, s, "POST", "/sim/runners", map[string]any{"description": "cli"})
	var runner struct {
		ID    int64  `json:"id"`
		Token string `json:"token"`
	}
	r.decode(t, &runner)
	if r.code != http.StatusCreated || runner.Token == "" {
		t.Fatalf("create runner = %d %+v", r.code, runner)
	}
	if r := do(t, s, "POST", "/sim/jobs", map[string]any{"name": "no script"}); r.code != http.StatusBadRequest {
		t.Fatalf("job without script = %d, want 400", r.code)
	}
	r = do(t, s, "POST", "/sim/jobs", map[string]any{"name": "hello", "script": []string{"echo hi"}, "before_script": []string{"true"}, "timeout": 60})
	var created jobView
	r.decode(t, &created)
	if r.code != http.StatusCreated || created.Status != StatusPending {
		t.Fatalf("enqueue = %d %+v", r.code, created)
	}
	j := takeJob(t, s, runner.Token, allFeatures)
	if j.RunnerInfo.Timeout != 60 || len(j.StepByName("script").Script) != 2 {
		t.Fatalf("enqueued over /sim/: timeout %d script %v", j.RunnerInfo.Timeout, j.StepByName("script").Script)
	}
	patchTrace(t, s, j.ID, j.Token, "0-2", "hi\n")

	var list []jobView
	do(t, s, "GET", "/sim/jobs", nil).decode(t, &list)
	if len(list) != 1 || list[0].Trace != nil || list[0].TraceSize != 3 || list[0].Status != StatusRunning {
		t.Fatalf("list %+v", list)
	}
	var one jobView
	do(t, s, "GET", "/sim/jobs/"+itoa(j.ID), nil).decode(t, &one)
	if one.Trace == nil || *one.Trace != "hi\n" {
		t.Fatalf("one %+v", one)
	}
	if r := do(t, s, "GET", "/sim/jobs/"+itoa(j.ID)+"/trace", nil); string(r.body) != "hi\n" {
		t.Fatalf("raw trace %q", r.body)
	}
	for _, tt := range []struct {
		path string
		want int
	}{
		{"/sim/jobs/" + itoa(j.ID) + "/cancel", http.StatusOK}, // running -> canceling
		{"/sim/jobs/" + itoa(j.ID) + "/cancel", http.StatusOK}, // canceling -> canceled (force)
		{"/sim/jobs/" + itoa(j.ID) + "/cancel", http.StatusConflict},
		{"/sim/jobs/424242/cancel", http.StatusNotFound},
	} {
		if r := do(t, s, "POST", tt.path, nil); r.code != tt.want {
			t.Fatalf("POST %s = %d, want %d", tt.path, r.code, tt.want)
		}
	}
	r = do(t, s, "POST", "/sim/pipelines", map[string]any{"jobs": []map[string]any{
		{"name": "a", "stage": "one", "script": []string{"x"}}, {"name": "b", "stage": "two", "script": []string{"x"}}}})
	var p struct {
		ID     int64   `json:"id"`
		JobIDs []int64 `json:"job_ids"`
	}
	r.decode(t, &p)
	if r.code != http.StatusCreated || len(p.JobIDs) != 2 {
		t.Fatalf("pipeline = %d %+v", r.code, p)
	}
	var runners []runnerView
	do(t, s, "GET", "/sim/runners", nil).decode(t, &runners)
	if len(runners) != 1 || runners[0].Description != "cli" || len(runners[0].Managers) != 1 {
		t.Fatalf("runners %+v", runners)
	}
}
