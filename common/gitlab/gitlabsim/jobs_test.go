package gitlabsim

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

func TestRequestQueueValue(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	_, paused := s.CreateRunner(RunnerOptions{Paused: true})

	if r := do(t, s, "POST", "/api/v4/jobs/request", jobRequest("glrt-unknown", "", nil)); r.code != http.StatusForbidden {
		t.Fatalf("unknown token = %d, want 403", r.code)
	}
	r := do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, "", nil))
	v1 := r.header.Get("X-GitLab-Last-Update")
	if r.code != http.StatusNoContent || v1 == "" {
		t.Fatalf("empty queue = %d with X-GitLab-Last-Update %q, want 204 and a value", r.code, v1)
	}
	r = do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, v1, nil))
	if r.code != http.StatusNoContent || r.header.Get("X-GitLab-Last-Update") != v1 {
		t.Fatalf("unchanged queue = %d %q, want 204 echoing %q", r.code, r.header.Get("X-GitLab-Last-Update"), v1)
	}

	id := s.Enqueue(JobSpec{Name: "a", Script: []string{"true"}})
	r = do(t, s, "POST", "/api/v4/jobs/request", jobRequest(paused, "", nil))
	if r.code != http.StatusNoContent || r.header.Get("X-GitLab-Last-Update") == "" {
		t.Fatalf("paused runner = %d, want 204 with X-GitLab-Last-Update", r.code)
	}
	// The enqueue changed the queue value, so the stale last_update gets the job.
	r = do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, v1, nil))
	if r.code != http.StatusCreated {
		t.Fatalf("after enqueue = %d, want 201", r.code)
	}
	if snap, _ := s.Job(id); snap.Status != StatusRunning || snap.RunnerID == 0 || snap.SystemID != "s_0123456789ab" {
		t.Fatalf("assigned job = %+v", snap)
	}
	r = do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, v1, nil))
	v2 := r.header.Get("X-GitLab-Last-Update")
	if r.code != http.StatusNoContent || v2 == v1 {
		t.Fatalf("after assignment = %d %q, want 204 with a new value", r.code, v2)
	}
	pending := s.Enqueue(JobSpec{Name: "b", Script: []string{"true"}})
	r = do(t, s, "POST", "/api/v4/jobs/request", jobRequest(paused, "", nil))
	v3 := r.header.Get("X-GitLab-Last-Update")
	if err := s.Cancel(pending); err != nil {
		t.Fatal(err)
	}
	r = do(t, s, "POST", "/api/v4/jobs/request", jobRequest(paused, "", nil))
	if r.header.Get("X-GitLab-Last-Update") == v3 {
		t.Fatal("Cancel did not change the queue value")
	}
}

func TestPayload(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{Description: "payload"})
	id := s.Enqueue(JobSpec{
		Name: "unit tests", Stage: "test", Image: "busybox:local",
		BeforeScript: []string{"echo before"}, Script: []string{"echo one", "echo two"}, AfterScript: []string{"echo after"},
		Variables: []job.Variable{
			{Key: "API_SECRET", Value: "s3cr3t", Masked: true},
			{Key: "REF", Value: "job $CI_JOB_ID in ${CI_PROJECT_NAME} $UNDEFINED"},
			{Key: "LITERAL", Value: "keep $CI_JOB_ID", Raw: true},
		},
		Artifacts:   []job.Artifact{{Paths: []string{"out/"}}},
		Cache:       []job.Cache{{Paths: []string{".cache/"}}},
		Timeout:     90 * time.Second,
		GitStrategy: "fetch", GitDepth: 5,
	})
	j := takeJob(t, s, token, allFeatures)
	snap, _ := s.Job(id)
	vars := j.Variables
	checks := []struct {
		name string
		ok   bool
	}{
		{"id", j.ID == id && j.JobInfo.ID == id},
		{"job token glcbt-", strings.HasPrefix(j.Token, "glcbt-") && j.Token == snap.Token},
		{"CI_JOB_TOKEN masked", slices.ContainsFunc(vars, func(v job.Variable) bool {
			return v.Key == "CI_JOB_TOKEN" && v.Value == j.Token && v.Masked && !v.Public
		})},
		{"CI_JOB_ID", vars.Get("CI_JOB_ID") == itoa(id)},
		{"CI_SERVER_URL", vars.Get("CI_SERVER_URL") == s.URL()},
		{"CI_SERVER_HOST", vars.Get("CI_SERVER_HOST") == "127.0.0.1"},
		{"CI_PROJECT_ID", vars.Get("CI_PROJECT_ID") == itoa(j.JobInfo.ProjectID)},
		{"CI_PROJECT_PATH", vars.Get("CI_PROJECT_PATH") == "root/sim" && vars.Get("CI_PROJECT_NAME") == "sim"},
		{"CI_REPOSITORY_URL", vars.Get("CI_REPOSITORY_URL") == j.GitInfo.RepoURL},
		{"CI_COMMIT_SHA", vars.Get("CI_COMMIT_SHA") == j.GitInfo.Sha && len(j.GitInfo.Sha) == 40},
		{"CI_COMMIT_REF_NAME/BRANCH", vars.Get("CI_COMMIT_REF_NAME") == "main" && vars.Get("CI_COMMIT_BRANCH") == "main"},
		{"CI_PIPELINE_ID", vars.Get("CI_PIPELINE_ID") == itoa(snap.PipelineID)},
		{"CI_JOB_NAME/STAGE", vars.Get("CI_JOB_NAME") == "unit tests" && vars.Get("CI_JOB_STAGE") == "test"},
		{"GIT_STRATEGY/DEPTH", vars.Get("GIT_STRATEGY") == "fetch" && vars.Get("GIT_DEPTH") == "5"},
		{"user variable expanded", vars.Get("REF") == "job "+itoa(id)+" in sim $UNDEFINED"},
		{"raw variable kept", vars.Get("LITERAL") == "keep $CI_JOB_ID"},
		{"masked user variable", slices.ContainsFunc(vars, func(v job.Variable) bool { return v.Key == "API_SECRET" && v.Masked })},
		{"repo_url credentials", strings.Contains(j.GitInfo.RepoURL, "gitlab-ci-token:"+j.Token+"@127.0.0.1")},
		{"refspecs shallow", slices.Equal(j.GitInfo.Refspecs, []string{
			"+refs/pipelines/" + itoa(snap.PipelineID) + ":refs/pipelines/" + itoa(snap.PipelineID),
			"+refs/heads/main:refs/remotes/origin/main"}) && j.GitInfo.Depth == 5},
		{"git ref", j.GitInfo.Ref == "main" && j.GitInfo.RefType == "branch" && j.GitInfo.BeforeSha == zeroSHA},
		{"timeout", j.RunnerInfo.Timeout == 90},
		{"script step", j.StepByName("script") != nil && slices.Equal([]string(j.StepByName("script").Script),
			[]string{"echo before", "echo one", "echo two"}) && j.StepByName("script").When == "on_success"},
		{"after_script step", j.StepByName("after_script") != nil && j.StepByName("after_script").When == "always"},
		{"failure reasons", slices.Equal(j.Features.FailureReasons, serverFailureReasons) &&
			slices.Contains(j.Features.FailureReasons, "runner_configuration_error")},
		{"trace sections", j.Features.TraceSections},
		{"image", j.Image.Name == "busybox:local"},
		{"artifact defaults", len(j.Artifacts) == 1 && j.Artifacts[0].ArtifactType == "archive" &&
			j.Artifacts[0].ArtifactFormat == "zip" && j.Artifacts[0].When == "on_success"},
		{"cache defaults", len(j.Cache) == 1 && j.Cache[0].Key == "default" && j.Cache[0].Policy == "pull-push"},
		{"job info", j.JobInfo.Name == "unit tests" && j.JobInfo.Stage == "test" && j.JobInfo.ProjectName == "sim"},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("payload check %q failed", c.name)
		}
	}

	// Without a repository and without GIT_STRATEGY the job skips git; full clones get wildcard refspecs.
	s.Enqueue(JobSpec{Name: "plain", Script: []string{"true"}})
	j2 := takeJob(t, s, token, allFeatures)
	if j2.Variables.Get("GIT_STRATEGY") != "none" || j2.RunnerInfo.Timeout != 3600 || len(j2.GitInfo.Refspecs) != 3 ||
		j2.StepByName("after_script") != nil {
		t.Fatalf("plain job: GIT_STRATEGY %q, timeout %d, refspecs %v", j2.Variables.Get("GIT_STRATEGY"), j2.RunnerInfo.Timeout, j2.GitInfo.Refspecs)
	}
}

func TestMaximumTimeoutCapsJobTimeout(t *testing.T) {
	s := newSim(t, Options{})
	r := do(t, s, "POST", "/api/v4/runners", map[string]any{"token": s.RegistrationToken(), "maximum_timeout": 600})
	var a struct{ Token string }
	r.decode(t, &a)
	s.Enqueue(JobSpec{Name: "long", Script: []string{"true"}, Timeout: 2 * time.Hour})
	if j := takeJob(t, s, a.Token, nil); j.RunnerInfo.Timeout != 600 {
		t.Fatalf("timeout = %d, want the runner's maximum 600", j.RunnerInfo.Timeout)
	}
}

func TestRunnerUnsupportedDropsJob(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	reports := s.Enqueue(JobSpec{Name: "reports", Script: []string{"true"},
		Artifacts: []job.Artifact{{Name: "junit.xml", Paths: []string{"r.xml"}, ArtifactType: "junit", ArtifactFormat: "gzip"}}})
	plain := s.Enqueue(JobSpec{Name: "plain", Script: []string{"true"}})
	j := takeJob(t, s, token, map[string]bool{"variables": true})
	if j.ID != plain {
		t.Fatalf("got job %d, want %d (the one the runner supports)", j.ID, plain)
	}
	if snap, _ := s.Job(reports); snap.Status != StatusFailed || snap.FailureReason != "runner_unsupported" {
		t.Fatalf("unsupported job = %s/%s, want failed/runner_unsupported", snap.Status, snap.FailureReason)
	}
}

func TestUpdateJob(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	id := s.Enqueue(JobSpec{Name: "a", Script: []string{"false"}})
	j := takeJob(t, s, token, allFeatures)
	out := map[string]any{"checksum": "crc32:00000000", "bytesize": 0}
	tests := []struct {
		name       string
		body       map[string]any
		hdr        []string
		want       int
		wantStatus string // Job-Status; "" = absent
	}{
		{"no token", map[string]any{"state": "running"}, nil, 403, ""},
		{"wrong token", map[string]any{"token": "glcbt-nope", "state": "running"}, nil, 403, ""},
		{"keep-alive", map[string]any{"token": j.Token, "state": "running", "output": out}, nil, 200, "running"},
		{"token in JOB-TOKEN header", map[string]any{"state": "running"}, []string{"JOB-TOKEN", j.Token}, 200, "running"},
		{"unknown state", map[string]any{"token": j.Token, "state": "canceled"}, nil, 400, "running"},
		{"pending without two-phase", map[string]any{"token": j.Token, "state": "pending"}, nil, 400, "running"},
		{"runner-internal reason", map[string]any{"token": j.Token, "state": "failed", "failure_reason": "image_pull_failure"}, nil, 400, ""},
		{"failed", map[string]any{"token": j.Token, "state": "failed", "failure_reason": "script_failure", "exit_code": 2,
			"output": map[string]any{"checksum": "crc32:0badc0de", "bytesize": 7}}, nil, 200, "failed"},
		{"after the end", map[string]any{"token": j.Token, "state": "running"}, nil, 403, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := putJob(t, s, id, tt.body, tt.hdr...)
			if r.code != tt.want || r.header.Get("Job-Status") != tt.wantStatus {
				t.Fatalf("PUT = %d Job-Status %q (%s), want %d %q", r.code, r.header.Get("Job-Status"), r.body, tt.want, tt.wantStatus)
			}
			if tt.want == 200 && string(r.body) != "200" {
				t.Fatalf("body %q, want 200", r.body)
			}
		})
	}
	snap, _ := s.Job(id)
	if snap.Status != StatusFailed || snap.FailureReason != "script_failure" || snap.ExitCode != 2 ||
		snap.Checksum != "crc32:0badc0de" || snap.Bytesize != 7 || snap.Updates != 5 {
		t.Fatalf("snapshot %+v", snap)
	}

	// An empty reason on failed becomes unknown_failure; success keeps no reason.
	for _, tt := range []struct{ state, reason string }{{"failed", "unknown_failure"}, {"success", ""}} {
		id := s.Enqueue(JobSpec{Name: tt.state, Script: []string{"true"}})
		j := takeJob(t, s, token, allFeatures)
		if r := putJob(t, s, id, map[string]any{"token": j.Token, "state": tt.state}); r.code != 200 || r.header.Get("Job-Status") != tt.state {
			t.Fatalf("%s: PUT = %d %q", tt.state, r.code, r.header.Get("Job-Status"))
		}
		if snap, _ := s.Job(id); snap.FailureReason != tt.reason {
			t.Fatalf("%s: reason %q, want %q", tt.state, snap.FailureReason, tt.reason)
		}
	}
}

func TestCancel(t *testing.T) {
	tests := []struct {
		name     string
		graceful bool
	}{{"graceful", true}, {"abort", false}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, Options{})
			_, token := s.CreateRunner(RunnerOptions{})
			id := s.Enqueue(JobSpec{Name: "a", Script: []string{"sleep 100"}})
			j := takeJob(t, s, token, map[string]bool{"cancel_gracefully": tt.graceful})
			if err := s.Cancel(id); err != nil {
				t.Fatal(err)
			}
			r := patchTrace(t, s, id, j.Token, "0-4", "hello")
			if tt.graceful {
				if r.code != http.StatusAccepted || r.header.Get("Job-Status") != StatusCanceling {
					t.Fatalf("PATCH while canceling = %d %q", r.code, r.header.Get("Job-Status"))
				}
				if r := putJob(t, s, id, map[string]any{"token": j.Token, "state": "running"}); r.header.Get("Job-Status") != StatusCanceling {
					t.Fatalf("keep-alive Job-Status = %q, want canceling", r.header.Get("Job-Status"))
				}
				r = putJob(t, s, id, map[string]any{"token": j.Token, "state": "failed", "failure_reason": "script_failure"})
				if r.code != 200 || r.header.Get("Job-Status") != StatusCanceled {
					t.Fatalf("final PUT = %d %q, want 200 canceled", r.code, r.header.Get("Job-Status"))
				}
			} else if r.code != http.StatusForbidden || r.header.Get("Job-Status") != StatusCanceled {
				t.Fatalf("PATCH after abort = %d %q, want 403 canceled", r.code, r.header.Get("Job-Status"))
			}
			snap, err := s.WaitFinished(t.Context(), id)
			if err != nil || snap.Status != StatusCanceled {
				t.Fatalf("WaitFinished = %v %s", err, snap.Status)
			}
			if err := s.Cancel(id); err == nil {
				t.Fatal("Cancel of a finished job succeeded")
			}
		})
	}
	s := newSim(t, Options{})
	id := s.Enqueue(JobSpec{Name: "p", Script: []string{"true"}})
	if err := s.Cancel(id); err != nil {
		t.Fatal(err)
	}
	if snap, _ := s.Job(id); snap.Status != StatusCanceled {
		t.Fatalf("pending job after Cancel = %s", snap.Status)
	}
}

func TestLongPoll(t *testing.T) {
	s := newSim(t, Options{LongPoll: 20 * time.Second})
	_, token := s.CreateRunner(RunnerOptions{})
	r := do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, "", nil))
	v := r.header.Get("X-GitLab-Last-Update")

	// A change while the request is held ends it with Workhorse's bare 204.
	done := make(chan result, 1)
	go func() { done <- do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, v, nil)) }()
	waitHeldPolls(t, s, 1)
	if _, err := s.WaitJob(t.Context(), s.Enqueue(JobSpec{Name: "x", Script: []string{"true"}}), func(JobSnapshot) bool { return true }); err != nil {
		t.Fatal(err)
	}
	r = <-done
	if r.code != http.StatusNoContent || r.header.Get("X-GitLab-Last-Update") != "" || r.header.Get("Gitlab-Ci-Builds-Polling") != "yes" {
		t.Fatalf("held request = %d last-update %q polling %q", r.code, r.header.Get("X-GitLab-Last-Update"), r.header.Get("Gitlab-Ci-Builds-Polling"))
	}
	if r := do(t, s, "POST", "/api/v4/jobs/request", jobRequest(token, v, nil)); r.code != http.StatusCreated {
		t.Fatalf("request after the change = %d, want 201", r.code)
	}

	short := newSim(t, Options{LongPoll: 50 * time.Millisecond})
	_, tok2 := short.CreateRunner(RunnerOptions{})
	v2 := do(t, short, "POST", "/api/v4/jobs/request", jobRequest(tok2, "", nil)).header.Get("X-GitLab-Last-Update")
	if r := do(t, short, "POST", "/api/v4/jobs/request", jobRequest(tok2, v2, nil)); r.code != http.StatusNoContent || r.header.Get("X-GitLab-Last-Update") != "" {
		t.Fatalf("timed-out poll = %d %q, want 204 without X-GitLab-Last-Update", r.code, r.header.Get("X-GitLab-Last-Update"))
	}
}

// waitHeldPolls waits until n job requests are held by the long poll.
func waitHeldPolls(t *testing.T, s *Server, n int) {
	t.Helper()
	for {
		s.mu.Lock()
		held, ch := s.heldPolls, s.changed
		s.mu.Unlock()
		if held >= n {
			return
		}
		select {
		case <-ch:
		case <-t.Context().Done():
			t.Fatal("no request was held")
		}
	}
}
