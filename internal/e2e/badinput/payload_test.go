package badinput_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// TestBadPayload: job payloads GitLab (here gitlabsim behind a proxy that spoils them) might hand out,
// run through the real manager. The executor is a stub that refuses every job: a payload the manager
// cannot read must never reach it.
func TestBadPayload(t *testing.T) {
	runRows(t, []row{
		{
			name: "payload cut short", input: "the 201 answer ends halfway through the JSON",
			seen: spoiled(func(b []byte) []byte { return b[:len(b)/2] }, "job request failed"),
			want: []string{`level=warning msg="job request failed; asking again later" error="requesting a job: GitLab handed out a job whose payload names no job id, ` +
				`so it can be neither run nor failed from here and stays running in GitLab until it times out: cancel it in GitLab (its log is empty): ` +
				`malformed job payload (job 0): unexpected end of JSON input"`, "status: running"},
		},
		{
			name: "payload not JSON", input: "an HTML page as the 201 body",
			seen: spoiled(func([]byte) []byte { return []byte("<html><body>502 Bad Gateway</body></html>") }, "job request failed"),
			want: []string{"GitLab handed out a job whose payload names no job id", "invalid character '<' looking for beginning of value", "status: running"},
		},
		{
			name: "steps not a list", input: `"steps": "echo hi"`,
			seen: spoiled(field("steps", "echo hi"), ""),
			want: []string{`level=error msg="GitLab sent a job payload that cannot be read; failing the job" error="malformed job payload (job $JOB):`,
				"Job.steps", "Job failed (system failure): the job payload from GitLab could not be read", "status: failed (runner_system_failure)"},
		},
		{
			name: "variables as an object", input: `"variables": {"A": "b"}`,
			seen: spoiled(field("variables", map[string]string{"A": "b"}), ""),
			want: []string{`error="malformed job payload (job $JOB): json: cannot unmarshal object into Go struct field Job.variables`,
				"status: failed (runner_system_failure)"},
		},
		{
			name: "variable value a number", input: `a variable whose value is 5`,
			seen: spoiled(field("variables", []map[string]any{{"key": "RETRIES", "value": 5, "public": true}}), ""),
			want: []string{`error="malformed job payload (job $JOB): json: cannot unmarshal number into Go struct field Variable.variables.value of type string"`,
				"status: failed (runner_system_failure)"},
		},
		{
			name: "docker user an object", input: `image.executor_opts.docker.user = {"uid": 1000}`,
			seen: spoiled(field("image", map[string]any{"name": "busybox", "executor_opts": map[string]any{"docker": map[string]any{"user": map[string]int{"uid": 1000}}}}), ""),
			want: []string{"malformed job payload (job $JOB):", "user must be a string or a number", "status: failed (runner_system_failure)"},
		},
		{
			name: "no job token", input: `the "token" key left out`,
			seen: spoiled(field("token", nil), "job request failed"),
			want: []string{"GitLab handed out job $JOB without its job token, so it can be neither run nor failed from here " +
				"and stays running in GitLab until it times out: cancel job $JOB in GitLab: the payload has no token", "status: running"},
		},
		{
			name: "no job id", input: `the "id" key left out`,
			seen: spoiled(field("id", nil), "job request failed"),
			want: []string{"GitLab handed out a job whose payload names no job id", "cancel it in GitLab (its log is empty): the payload has no id", "status: running"},
		},
	})
}

// field returns a spoiler that sets key of the payload to v, or removes it when v is nil.
func field(key string, v any) func([]byte) []byte {
	return func(b []byte) []byte {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return b
		}
		if v == nil {
			delete(m, key)
		} else {
			m[key] = v
		}
		out, err := json.Marshal(m)
		if err != nil {
			return b
		}
		return out
	}
}

// payloadWithin bounds a row: the manager asks for jobs every second.
const payloadWithin = 20 * time.Second

// spoiled returns a row's seen: a manager (check_interval 1 s) asks gitlabsim for its one job through a
// proxy that passes every job payload through spoil. It waits for the job to finish in GitLab or, when
// line is not empty, for the manager to log line, and returns the manager's log followed by the job's
// trace and state as GitLab stores them. The job's id reads $JOB.
func spoiled(spoil func([]byte) []byte, line string) func(t *testing.T) string {
	return func(t *testing.T) string {
		gl, token := newGitLab(t)
		proxy := spoilingProxy(t, gl.URL(), spoil)
		id := gl.Enqueue(gitlabsim.JobSpec{Name: "spoiled", Script: []string{"echo never runs"}})

		var logs testrig.SyncBuffer
		log := logrus.New()
		log.SetOutput(&logs)
		log.SetFormatter(&logrus.TextFormatter{DisableColors: true, DisableTimestamp: true})
		log.SetLevel(logrus.DebugLevel)
		path := configFile(t, fmt.Sprintf("concurrent = 1\ncheck_interval = 1\nshutdown_timeout = 5\n\n[[runners]]\n  name = \"payload\"\n"+
			"  url = %q\n  token = %q\n  executor = \"docker\"\n  [runners.docker]\n    image = \"busybox:latest\"\n", proxy, token))
		var stub refusingProvider
		_, stop := testrig.StartManager(t, log, path, "s_badinput", config.ExecutorDocker,
			func(*config.RunnerConfig, executors.Deps) (executors.Provider, error) { return &stub, nil })

		var snap gitlabsim.JobSnapshot
		if line != "" {
			testrig.WaitFor(t, payloadWithin, "the manager to log "+strconv.Quote(line), func() bool { return strings.Contains(logs.String(), line) })
			snap, _ = gl.Job(id)
		} else {
			snap = testrig.Finished(t, gl, id, payloadWithin)
		}
		stop()
		if stub.ran.Load() {
			t.Errorf("the executor was handed a job whose payload the manager cannot use")
		}
		seen := fmt.Sprintf("%s--- job trace in GitLab:\n%s\n--- status: %s (%s)", logs.String(), snap.Trace, snap.Status, snap.FailureReason)
		return strings.ReplaceAll(seen, "job "+strconv.FormatInt(id, 10), "job $JOB")
	}
}

// spoilingProxy forwards to GitLab and passes the body of every 201 answer to POST /jobs/request
// (a job payload) through spoil.
func spoilingProxy(t *testing.T, target string, spoil func([]byte) []byte) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/api/v4/jobs/request" || resp.StatusCode != http.StatusCreated {
			return nil
		}
		payload, err := io.ReadAll(resp.Body)
		if cerr := resp.Body.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		spoilt := spoil(payload)
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(spoilt)), int64(len(spoilt))
		// The server writes the spoilt length itself.
		resp.Header.Del("Content-Length")
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

// refusingProvider is an executor that fails every job it is handed, and says it was.
type refusingProvider struct{ ran atomic.Bool }

var errStub = errors.New("the badinput stub executor runs no job")

func (*refusingProvider) Reserve(context.Context) (executors.Reservation, error) {
	return executors.NoReservation{}, nil
}

func (p *refusingProvider) Run(context.Context, executors.Reservation, *executors.Build) error {
	p.ran.Store(true)
	return &job.BuildError{Reason: job.ScriptFailure, Err: errStub}
}

func (*refusingProvider) Features() map[string]bool      { return nil }
func (*refusingProvider) Shutdown(context.Context) error { return nil }
