package status_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/manager"
	"gitlab.com/fleetrunner/fleetrunner/status"
)

// plainProvider is a provider that scales no fleet.
type plainProvider struct{}

func (plainProvider) Reserve(context.Context) (executors.Reservation, error) {
	return executors.NoReservation{}, nil
}
func (plainProvider) Run(context.Context, executors.Reservation, *executors.Build) error { return nil }
func (plainProvider) Features() map[string]bool                                          { return nil }
func (plainProvider) Shutdown(context.Context) error                                     { return nil }

// fakeFleet is a provider that scales a fleet and reports a fixed one.
type fakeFleet struct {
	plainProvider
	fleet executors.FleetStatus
}

func (f *fakeFleet) FleetStatus() executors.FleetStatus { return f.fleet }

// recorder is the next observer; it counts the calls passed on to it.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) { r.mu.Lock(); r.calls = append(r.calls, s); r.mu.Unlock() }

func (r *recorder) Serving(bool)                                           { r.add("Serving") }
func (r *recorder) Configured(int, []manager.RunnerInfo)                   { r.add("Configured") }
func (r *recorder) ProviderStarted(manager.RunnerInfo, executors.Provider) { r.add("ProviderStarted") }
func (r *recorder) ProviderStopped(manager.RunnerInfo, executors.Provider) { r.add("ProviderStopped") }
func (r *recorder) RequestStarted(manager.RunnerInfo)                      { r.add("RequestStarted") }
func (r *recorder) RequestEnded(manager.RunnerInfo, int)                   { r.add("RequestEnded") }
func (r *recorder) APIResponse(manager.RunnerInfo, string, int)            { r.add("APIResponse") }
func (r *recorder) ProcessingFailure(manager.RunnerInfo, string)           { r.add("ProcessingFailure") }
func (r *recorder) RunnerPaused(manager.RunnerInfo, time.Time)             { r.add("RunnerPaused") }
func (r *recorder) RunnerLease(manager.RunnerInfo, manager.LeaseInfo)      { r.add("RunnerLease") }
func (r *recorder) JobStarted(manager.JobInfo) manager.JobObserver         { r.add("JobStarted"); return r }
func (r *recorder) Stage(string)                                           { r.add("Stage") }
func (r *recorder) Finished(job.FailureReason)                             { r.add("Finished") }

var (
	autoscaled = manager.RunnerInfo{Runner: "t1_abcdef01", Name: "fleet-a", SystemID: "s_0123456789ab", Limit: 4}
	hostile    = manager.RunnerInfo{Runner: "t1_bad00000", Name: `<script>alert("runner")</script>`, SystemID: "s_0123456789ab"}
)

func someFleet() *fakeFleet {
	idle := time.Now().Add(-90 * time.Second)
	created := time.Now().Add(-10 * time.Minute)
	return &fakeFleet{fleet: executors.FleetStatus{
		PolicyIndex: 1,
		Policy: executors.FleetPolicy{
			Periods: []string{"* 8-18 * * mon-fri"}, IdleCount: 3, IdleTime: 20 * time.Minute,
			ScaleFactor: 0.5, ScaleFactorLimit: 7, Preemptive: true,
		},
		SlotsPerInstance: 2, MaxInstances: 9,
		Instances: []executors.AutoscaledInstance{
			{ID: "inst-busy-1", State: "ready", UseCount: 5, Acquired: 2, CreatedAt: created, Jobs: []int64{4242, 4243}},
			{ID: "inst-idle-2", State: "ready", UseCount: 1, IdleSince: &idle, CreatedAt: created},
		},
		Decisions: []executors.ScaleDecision{
			{At: time.Now().Add(-time.Minute), Action: "increase", Count: 2, Desired: 2, Actual: 0, Reason: "2 instances wanted for the jobs and the idle target"},
			{At: time.Now(), Action: "decrease", Count: 1, Desired: 1, Actual: 2, Reason: `idle past idle_time <img src=x onerror=alert(1)>`},
		},
	}}
}

// get serves GET path from the tracker's handler and returns status, content type and body.
func get(t *testing.T, tr *status.Tracker, path string) (int, string, string) {
	t.Helper()
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "next handler") })
	rec := httptest.NewRecorder()
	status.Handler(logging.Discard(), tr.Page, next).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Header().Get("Content-Type"), rec.Body.String()
}

func TestPage(t *testing.T) {
	cases := []struct {
		name string
		// feed drives the tracker as the manager would.
		feed     func(tr *status.Tracker)
		want     []string
		wantNot  []string
		wantCode int
	}{
		{
			name:     "no runner configured",
			feed:     func(*status.Tracker) {},
			want:     []string{`<meta http-equiv="refresh" content="5">`, "No runner is configured."},
			wantCode: http.StatusOK,
		},
		{
			name: "a healthy autoscaled runner with its policy, instances, decisions and a running job",
			feed: func(tr *status.Tracker) {
				tr.Configured(4, []manager.RunnerInfo{autoscaled})
				tr.ProviderStarted(autoscaled, someFleet())
				tr.RequestEnded(autoscaled, http.StatusCreated)
				tr.JobStarted(manager.JobInfo{Runner: autoscaled, ID: 4242, Name: "unit", Project: "g/p", URL: "https://gitlab.example/g/p/-/jobs/4242"}).Stage("step_script")
			},
			want: []string{
				"Runner fleet-a", "(t1_abcdef01)", `<span class="healthy">healthy</span>`, "limit 4",
				"<td>#1</td>", "<code>* 8-18 * * mon-fri</code>", "<td>3</td><td>20m0s</td><td>0.5</td>", "<td>7</td>", "<td>yes</td>",
				"<td>2</td><td>9</td>",
				`<tr class="instance"><td>inst-busy-1</td><td>ready</td><td>10m0s</td><td>5</td><td>2/2</td><td>busy</td></tr>`,
				`<td>inst-idle-2</td><td>ready</td><td>10m0s</td><td>1</td><td>0/2</td><td>1m30s</td>`,
				"<td>decrease</td><td>1</td><td>1</td><td>2</td><td>idle past idle_time &lt;img src=x onerror=alert(1)&gt;</td></tr>\n" +
					"<tr><td>1m0s ago</td><td>increase</td><td>2</td><td>2</td><td>0</td><td>2 instances wanted for the jobs and the idle target</td>",
				`<a href="https://gitlab.example/g/p/-/jobs/4242">#4242</a></td><td>unit</td><td>g/p</td><td>step_script</td><td>inst-busy-1</td>`,
			},
			wantNot:  []string{"No job is running.", `class="unhealthy"`},
			wantCode: http.StatusOK,
		},
		{
			name: "an unhealthy runner without a fleet",
			feed: func(tr *status.Tracker) {
				tr.Configured(1, []manager.RunnerInfo{autoscaled})
				tr.ProviderStarted(autoscaled, &plainProvider{})
				tr.RequestEnded(autoscaled, http.StatusForbidden)
				tr.RequestEnded(autoscaled, gitlab.StatusTransportError)
				tr.RunnerPaused(autoscaled, time.Now().Add(time.Minute+500*time.Millisecond))
			},
			want: []string{
				`<span class="unhealthy">unhealthy</span>: job requests paused, the next probe in 1m0s; unhealthy answers to job requests in a row: 2, the last transport error`,
				"No job is running.",
			},
			wantNot:  []string{"Policy in force", "Instances"},
			wantCode: http.StatusOK,
		},
		{
			name: "unhealthy answers below the manager's limit leave the runner healthy",
			feed: func(tr *status.Tracker) {
				tr.Configured(1, []manager.RunnerInfo{autoscaled})
				tr.RequestEnded(autoscaled, http.StatusForbidden)
			},
			want:     []string{`<span class="healthy">healthy</span>; unhealthy answers to job requests in a row: 1, the last 403 Forbidden`},
			wantNot:  []string{`class="unhealthy"`},
			wantCode: http.StatusOK,
		},
		{
			name: "the end of the manager's pause makes the runner healthy again",
			feed: func(tr *status.Tracker) {
				tr.Configured(1, []manager.RunnerInfo{autoscaled})
				tr.RequestEnded(autoscaled, http.StatusForbidden)
				tr.RunnerPaused(autoscaled, time.Now().Add(time.Minute))
				tr.RequestEnded(autoscaled, http.StatusNoContent)
				tr.RunnerPaused(autoscaled, time.Time{})
			},
			want:     []string{`<span class="healthy">healthy</span>`},
			wantNot:  []string{`class="unhealthy"`},
			wantCode: http.StatusOK,
		},
		{
			name: "a finished job and a stopped provider leave the page",
			feed: func(tr *status.Tracker) {
				tr.Configured(1, []manager.RunnerInfo{autoscaled})
				p := someFleet()
				tr.ProviderStarted(autoscaled, p)
				tr.JobStarted(manager.JobInfo{Runner: autoscaled, ID: 7}).Finished("")
				tr.ProviderStopped(autoscaled, p)
			},
			want:     []string{"No job is running."},
			wantNot:  []string{">#7<", "inst-busy-1"},
			wantCode: http.StatusOK,
		},
		{
			name: "a runner on standby names the manager that holds its lease, and for how long",
			feed: func(tr *status.Tracker) {
				tr.Configured(1, []manager.RunnerInfo{autoscaled})
				tr.RunnerLease(autoscaled, manager.LeaseInfo{Standby: true, Holder: "s_0123456789ab on <b>host-1</b> (pid 7)", Since: time.Now().Add(-90 * time.Second)})
			},
			want:     []string{`<span class="standby">Standby</span>: manager s_0123456789ab on &lt;b&gt;host-1&lt;/b&gt; (pid 7) manages this runner's fleet, for 1m30s;`},
			wantNot:  []string{"<b>host-1", "Active:"},
			wantCode: http.StatusOK,
		},
		{
			name: "the manager serving a runner under a lease shows it with the fleet; taking over ends the standby",
			feed: func(tr *status.Tracker) {
				tr.Configured(1, []manager.RunnerInfo{autoscaled})
				tr.RunnerLease(autoscaled, manager.LeaseInfo{Standby: true, Holder: "s_other on host-2 (pid 1)"})
				p := someFleet()
				p.fleet.Lease = &executors.FleetLease{Holder: "s_0123456789ab on host-1 (pid 7)", Since: time.Now().Add(-2 * time.Minute), Token: 3}
				tr.ProviderStarted(autoscaled, p)
				tr.RunnerLease(autoscaled, manager.LeaseInfo{Holder: "s_0123456789ab on host-1 (pid 7)"})
			},
			want:     []string{`Active: this manager (s_0123456789ab on host-1 (pid 7)) holds the runner's lease, for 2m0s (fencing token 3)`},
			wantNot:  []string{"Standby"},
			wantCode: http.StatusOK,
		},
		{
			name: "hostile names, stages, URLs and reasons are escaped",
			feed: func(tr *status.Tracker) {
				tr.Configured(1, []manager.RunnerInfo{hostile})
				tr.ProviderStarted(hostile, someFleet())
				tr.JobStarted(manager.JobInfo{
					Runner: hostile, ID: 9, Name: `<script>alert("job")</script>`, Project: `g/<b>p</b>`, URL: `javascript:alert("job")`,
				}).Stage(`<script>alert("stage")</script>`)
			},
			want: []string{
				"Runner &lt;script&gt;alert(&#34;runner&#34;)&lt;/script&gt;",
				"&lt;script&gt;alert(&#34;stage&#34;)&lt;/script&gt;",
				"<td>&lt;script&gt;alert(&#34;job&#34;)&lt;/script&gt;</td><td>g/&lt;b&gt;p&lt;/b&gt;</td>",
				"idle past idle_time &lt;img src=x onerror=alert(1)&gt;",
				// html/template refuses a javascript: URL in an href.
				`href="#ZgotmplZ"`,
			},
			wantNot:  []string{"<script>", "<img", "<b>", `href="javascript:`},
			wantCode: http.StatusOK,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next := &recorder{}
			tr := status.NewTracker(next)
			tc.feed(tr)
			code, ctype, body := get(t, tr, "/")
			if code != tc.wantCode || ctype != "text/html; charset=utf-8" {
				t.Fatalf("GET / = %d %q, want %d text/html; charset=utf-8\n%s", code, ctype, tc.wantCode, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %q:\n%s", w, body)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(body, w) {
					t.Errorf("the page shows %q:\n%s", w, body)
				}
			}
		})
	}
}

// The page never shows a runner's token: the manager hands the tracker the short token only, and the
// tracker keeps nothing else.
func TestPageShowsNoToken(t *testing.T) {
	const token = "glrt-secret0123456789abcdef"
	tr := status.NewTracker(&recorder{})
	r := manager.RunnerInfo{Runner: manager.ShortToken(token), Name: "r"}
	tr.Configured(1, []manager.RunnerInfo{r})
	_, _, body := get(t, tr, "/")
	if strings.Contains(body, token) || !strings.Contains(body, r.Runner) {
		t.Errorf("want the short token %q and not the token on the page:\n%s", r.Runner, body)
	}
}

// Every call reaches the next observer (the metrics), in order, and only / is the page's.
func TestTrackerPassesOn(t *testing.T) {
	next := &recorder{}
	tr := status.NewTracker(next)
	p := someFleet()
	tr.Serving(true)
	tr.Configured(1, []manager.RunnerInfo{autoscaled})
	tr.ProviderStarted(autoscaled, p)
	tr.RequestStarted(autoscaled)
	tr.RequestEnded(autoscaled, http.StatusCreated)
	tr.APIResponse(autoscaled, "request_job", http.StatusCreated)
	tr.ProcessingFailure(autoscaled, manager.FailureOther)
	tr.RunnerPaused(autoscaled, time.Time{})
	jo := tr.JobStarted(manager.JobInfo{Runner: autoscaled, ID: 1})
	jo.Stage("step_script")
	jo.Finished(job.ScriptFailure)
	tr.ProviderStopped(autoscaled, p)
	want := "Serving Configured ProviderStarted RequestStarted RequestEnded APIResponse ProcessingFailure RunnerPaused JobStarted Stage Finished ProviderStopped"
	if got := strings.Join(next.calls, " "); got != want {
		t.Errorf("next observer got %s\nwant %s", got, want)
	}
	for path, want := range map[string]string{"/metrics": "next handler", "/nothing": "next handler"} {
		if code, _, body := get(t, tr, path); code != http.StatusOK || body != want {
			t.Errorf("GET %s = %d %q, want the next handler's answer", path, code, body)
		}
	}
}
