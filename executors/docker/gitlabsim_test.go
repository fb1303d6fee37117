package docker_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/common/trace"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// simRig is a rig whose runner is registered in a gitlabsim; jobs go through the real client and
// trace, and job containers use host networking to reach the simulator on loopback.
type simRig struct {
	*rig
	sim *gitlabsim.Server
	gl  *gitlab.Client
}

func newSimRig(t *testing.T) *simRig {
	t.Helper()
	testenv.RequireCommand(t, "git", "apt-get install git")
	rg := newRig(t)
	sim, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	_, token := sim.CreateRunner(gitlabsim.RunnerOptions{Description: "docker executor test"})
	rg.runner.Token, rg.runner.URL = token, sim.URL()
	rg.runner.Docker.NetworkMode = "host"
	gl, err := gitlab.NewClient(logging.Discard(), gitlab.ClientConfig{URL: sim.URL(),
		Info: gitlab.NewVersionInfo("docker", "sh", docker.Features())})
	if err != nil {
		t.Fatal(err)
	}
	return &simRig{rig: rg, sim: sim, gl: gl}
}

// runNext takes the next job from the simulator, runs it like the manager does and returns the
// simulator's view of the finished job. onStart, when set, gets the job's ID once it runs.
func (s *simRig) runNext(t *testing.T, onStart func(id int64)) gitlabsim.JobSnapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var j *job.Job
	for j == nil {
		res := s.gl.RequestJob(ctx, s.runner.Token, "s_test")
		if res.Err != nil {
			t.Fatalf("request job: %v", res.Err)
		}
		j = res.Job
		if j == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	tr := trace.New(s.gl, gitlab.JobCredentials{ID: j.ID, Token: j.Token}, trace.Options{
		MaskPhrases: j.Variables.MaskedValues(), TokenPrefixes: j.Features.TokenMaskPrefixes,
		UpdateInterval: 200 * time.Millisecond, ForceSendInterval: time.Second, Logger: logging.Discard(),
	})
	tr.Start()
	// As the manager does: the job's timeout, GitLab's graceful cancel and GitLab saying the job is gone.
	jobCtx, canceling, stop := executors.NewJobContext(ctx, time.Duration(j.TimeoutSeconds())*time.Second, tr.Canceling(), tr.Aborted())
	defer stop()
	if onStart != nil {
		onStart(j.ID)
	}
	err := docker.RunJob(jobCtx, s.cli, &executors.Build{Job: j, Runner: s.runner, Log: tr, Logger: logging.Discard(),
		Canceling: canceling, SystemID: "s_test"}, docker.Options{EngineName: "local"})
	state := gitlab.JobSuccess
	reason, code := job.Failure(err)
	if err != nil {
		state = gitlab.JobFailed
		tr.Errorf("ERROR: Job failed: %v", err)
	}
	if err := tr.Finish(ctx, state, j.ReasonFor(reason), code); err != nil && !errors.Is(err, trace.ErrAborted) {
		t.Fatalf("finish job %d: %v", j.ID, err)
	}
	snap, err := s.sim.WaitFinished(ctx, j.ID)
	if err != nil {
		t.Fatalf("job %d never finished: %v", j.ID, err)
	}
	return snap
}

func wantStatus(t *testing.T, snap gitlabsim.JobSnapshot, status, reason string, exit int) {
	t.Helper()
	if snap.Status != status || snap.FailureReason != reason || snap.ExitCode != exit {
		t.Fatalf("job %d: status %s reason %q exit %d; want %s %q %d; trace:\n%s",
			snap.ID, snap.Status, snap.FailureReason, snap.ExitCode, status, reason, exit, snap.Trace)
	}
}

func TestE2ECloneListAndMask(t *testing.T) {
	t.Parallel()
	s := newSimRig(t)
	repo, err := s.sim.CreateRepo("group/project", map[string]string{"README.md": "hello\n", "src/app.txt": "app\n"})
	if err != nil {
		t.Fatal(err)
	}
	s.runner.PreGetSourcesScript = "echo runner-pre-get-sources in $(pwd)"
	s.runner.PostGetSourcesScript = `echo "post-get-sources sees $(ls)"`
	id := s.sim.Enqueue(gitlabsim.JobSpec{Name: "list", Repo: repo.Name, Image: s.image, GitDepth: 1,
		Script:    []string{"ls -R .", "cat README.md", `echo "token=$API_SECRET"`, `echo "file says: $(cat "$SETTINGS")"`, "git_sha=$CI_COMMIT_SHA; echo sha=$git_sha"},
		Variables: []job.Variable{{Key: "API_SECRET", Value: "s3cr3tValue_123", Masked: true}, {Key: "SETTINGS", Value: "from-a-file", File: true}},
	})
	snap := s.runNext(t, nil)
	wantStatus(t, snap, gitlabsim.StatusSuccess, "", 0)
	out := string(snap.Trace)
	for _, want := range []string{"runner-pre-get-sources in /builds\n", "post-get-sources sees README.md\nsrc\n", "README.md", "app.txt", "hello\n", "token=[MASKED]", "file says: from-a-file", "sha=" + repo.SHA} {
		if !strings.Contains(out, want) {
			t.Errorf("job %d trace lacks %q:\n%s", id, want, out)
		}
	}
	if strings.Contains(out, "s3cr3tValue_123") {
		t.Errorf("masked value in trace:\n%s", out)
	}
}

func TestE2EScriptFailureAndAfterScript(t *testing.T) {
	t.Parallel()
	s := newSimRig(t)
	s.sim.Enqueue(gitlabsim.JobSpec{Name: "fail", Image: s.image, GitStrategy: "none",
		Script: []string{"exit 3"}, AfterScript: []string{`echo "after_script ran: $CI_JOB_STATUS"`}})
	snap := s.runNext(t, nil)
	wantStatus(t, snap, gitlabsim.StatusFailed, "script_failure", 3)
	if !strings.Contains(string(snap.Trace), "after_script ran: failed") {
		t.Fatalf("after_script output missing:\n%s", snap.Trace)
	}
}

func TestE2EGracefulCancel(t *testing.T) {
	t.Parallel()
	s := newSimRig(t)
	s.sim.Enqueue(gitlabsim.JobSpec{Name: "cancel", Image: s.image, GitStrategy: "none",
		Script: []string{"echo started", "sleep 60"}, AfterScript: []string{`echo "after_script ran: $CI_JOB_STATUS"`}})
	snap := s.runNext(t, func(id int64) {
		go func() {
			_, _ = s.sim.WaitJob(t.Context(), id, func(j gitlabsim.JobSnapshot) bool { return strings.Contains(string(j.Trace), "started\n") })
			_ = s.sim.Cancel(id)
		}()
	})
	if snap.Status != gitlabsim.StatusCanceled || !strings.Contains(string(snap.Trace), "after_script ran: canceled") {
		t.Fatalf("status %s; want canceled with after_script output:\n%s", snap.Status, snap.Trace)
	}
}

// Artifacts and cache through a two-stage pipeline, for a root script and for a non-root one, which must
// also be able to change the cloned files and the restored cache (with upstream's umask 0000 and with
// FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR's chown).
func TestE2EArtifactsAndCache(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		user    string
		noUmask bool
	}{{name: "root"}, {name: "non-root", user: "1000:1000"}, {name: "non-root without umask", user: "1000:1000", noUmask: true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSimRig(t)
			s.runner.Docker.User = tc.user
			if tc.noUmask {
				s.runner.FeatureFlags = map[string]bool{"FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR": true}
			}
			testArtifactsAndCache(t, s)
		})
	}
}

func testArtifactsAndCache(t *testing.T, s *simRig) {
	repo, err := s.sim.CreateRepo("group/app", map[string]string{"README.md": "x\n"})
	if err != nil {
		t.Fatal(err)
	}
	cache := []job.Cache{{Key: "deps-main", Paths: []string{"vendor/"}, Policy: job.CachePolicyPullPush, When: job.WhenOnSuccess}}
	if _, err := s.sim.CreatePipeline([]gitlabsim.JobSpec{
		{Name: "build", Stage: "build", Repo: repo.Name, Image: s.image, Cache: cache,
			Script: []string{
				"echo changed >> README.md",
				"mkdir -p out vendor",
				"head -c 200000 /dev/urandom > out/data.bin",
				"echo built-$RANDOM-$$ > vendor/dep.txt",
				`echo "built sum: $(sha256sum out/data.bin | cut -d' ' -f1)"`,
				`echo "cached: $(cat vendor/dep.txt)"`,
			},
			Artifacts: []job.Artifact{{Name: "bin", Paths: []string{"out/"}, When: job.WhenOnSuccess, ArtifactType: "archive", ArtifactFormat: "zip", ExpireIn: "1 day"}}},
		{Name: "test", Stage: "test", Repo: repo.Name, Image: s.image, Cache: cache, Dependencies: []string{"build"},
			Script: []string{
				`echo "got sum: $(sha256sum out/data.bin | cut -d' ' -f1)"`,
				`echo "restored: $(cat vendor/dep.txt)"`,
				"echo more >> vendor/dep.txt && echo more >> out/data.bin",
			}},
	}); err != nil {
		t.Fatal(err)
	}
	build := s.runNext(t, nil)
	wantStatus(t, build, gitlabsim.StatusSuccess, "", 0)
	test := s.runNext(t, nil)
	wantStatus(t, test, gitlabsim.StatusSuccess, "", 0)

	built := regexp.MustCompile(`built sum: ([0-9a-f]{64})`).FindStringSubmatch(string(build.Trace))
	got := regexp.MustCompile(`got sum: ([0-9a-f]{64})`).FindStringSubmatch(string(test.Trace))
	if built == nil || got == nil || built[1] != got[1] {
		t.Fatalf("artifact not byte-identical: built %v, got %v\nbuild:\n%s\ntest:\n%s", built, got, build.Trace, test.Trace)
	}
	cached := regexp.MustCompile(`cached: (built-\S+)`).FindStringSubmatch(string(build.Trace))
	if cached == nil || !strings.Contains(string(test.Trace), "restored: "+cached[1]) {
		t.Fatalf("cache not restored (saved %v):\n%s", cached, test.Trace)
	}
}

func TestE2EFailureReasons(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		spec   func(image string) gitlabsim.JobSpec
		reason string
		line   string
	}{
		// image_pull_failure is not in CE's enum, so it reaches GitLab as runner_system_failure.
		{name: "missing image", reason: "runner_system_failure", line: `failed to pull image "fleetrunner-test/missing:1"`,
			spec: func(string) gitlabsim.JobSpec {
				return gitlabsim.JobSpec{Name: "pull", Image: "fleetrunner-test/missing:1", GitStrategy: "none", Script: []string{"true"}}
			}},
		{name: "job timeout", reason: "job_execution_timeout", line: "job timeout",
			spec: func(image string) gitlabsim.JobSpec {
				return gitlabsim.JobSpec{Name: "slow", Image: image, GitStrategy: "none", Script: []string{"sleep 60"}, Timeout: 2 * time.Second}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSimRig(t)
			s.sim.Enqueue(tt.spec(s.image))
			snap := s.runNext(t, nil)
			wantStatus(t, snap, gitlabsim.StatusFailed, tt.reason, 0)
			if !strings.Contains(string(snap.Trace), tt.line) {
				t.Fatalf("trace lacks %q:\n%s", tt.line, snap.Trace)
			}
		})
	}
}
