package manager

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// Observer is told what the manager does, for metrics and the debug endpoints (metrics
// implements it). Calls come from many goroutines and must return at once. Nothing secret is passed:
// runner tokens are shortened and job URLs carry no credentials.
type Observer interface {
	// Serving is called with true once the runners started, and with false when Run returns.
	Serving(bool)
	// Configured is called with every configuration applied: `concurrent` and the runners served.
	Configured(concurrent int, runners []RunnerInfo)
	// ProviderStarted is called once for every executor provider the manager built, and
	// ProviderStopped when a runner that left the configuration had its provider shut down.
	ProviderStarted(r RunnerInfo, p executors.Provider)
	ProviderStopped(r RunnerInfo, p executors.Provider)
	// RequestStarted and RequestEnded bracket one POST /jobs/request; status is the HTTP status of the
	// answer, or gitlab.StatusTransportError.
	RequestStarted(r RunnerInfo)
	RequestEnded(r RunnerInfo, status int)
	// APIResponse is every HTTP answer from GitLab for the runner (job requests, job updates, trace
	// patches, artifacts), with the endpoint named as upstream's metric labels it.
	APIResponse(r RunnerInfo, endpoint string, status int)
	// ProcessingFailure is a request round that did not ask GitLab because the executor could not
	// reserve capacity: FailureNoFreeExecutor or FailureOther.
	ProcessingFailure(r RunnerInfo, failureType string)
	// RunnerPaused is called when the manager pauses a runner's job requests after
	// unhealthy_requests_limit unhealthy answers in a row (and again after each failed probe), with the
	// time of its next probe; and with the zero time once it is healthy again or a reload ended the pause.
	RunnerPaused(r RunnerInfo, until time.Time)
	// RunnerLease is called for a runner whose fleet a lease gives to one manager of several (a
	// high-availability pair): on standby while another manager holds it, and once this one serves the
	// runner.
	RunnerLease(r RunnerInfo, l LeaseInfo)
	// JobStarted is called when GitLab handed out a job; the JobObserver follows that job.
	JobStarted(j JobInfo) JobObserver
}

// JobObserver follows one job.
type JobObserver interface {
	// Stage is called when the job's log opens a section (the build stage: get_sources, step_script…).
	Stage(name string)
	// Finished is called once, when the outcome is known and before it is reported to GitLab; reason
	// is empty for a successful job.
	Finished(reason job.FailureReason)
}

// Processing failure types, with upstream's names.
const (
	FailureNoFreeExecutor = "no_free_executor"
	FailureOther          = "other"
)

// LeaseInfo is who manages a runner's fleet under a lease: Holder (system ID, host, pid) since Since.
// Standby is true when the holder is another manager and this one waits to take the fleet over.
type LeaseInfo struct {
	Standby bool
	Holder  string
	Since   time.Time
}

// RunnerInfo names a [[runners]] entry without its token.
type RunnerInfo struct {
	// Runner is the short token (ShortToken).
	Runner   string
	Name     string
	SystemID string
	Limit    int
}

// JobInfo describes a job that started.
type JobInfo struct {
	Runner RunnerInfo
	ID     int64
	// Name and Project (its full path) are as GitLab sent them, for the status page; metrics must not
	// label by them.
	Name    string
	Project string
	// URL is the job's web page, without credentials.
	URL string
	// QueueDuration is how long the job waited in GitLab's queue (job_info.time_in_queue_seconds).
	QueueDuration time.Duration
	// QueuingExceeded: a [runners.monitoring] job_queuing_durations entry was in force when the job was
	// received, QueueDuration passed its threshold and the job matched its jobs_running_for_project.
	QueuingExceeded bool
}

func (m *Manager) runnerInfo(rc *config.RunnerConfig) RunnerInfo {
	return RunnerInfo{Runner: ShortToken(rc.Token), Name: rc.Name, SystemID: m.opts.SystemID, Limit: rc.Limit}
}

// jobURL is CI_JOB_URL, or the project URL derived from the clone URL (credentials stripped) plus
// /-/jobs/ID, as upstream builds it.
func jobURL(j *job.Job) string {
	if u := j.Variables.Get("CI_JOB_URL"); u != "" {
		return stripCredentials(u)
	}
	if j.GitInfo.RepoURL == "" {
		return ""
	}
	return strings.TrimSuffix(stripCredentials(j.GitInfo.RepoURL), ".git") + "/-/jobs/" + strconv.FormatInt(j.ID, 10)
}

func stripCredentials(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		// An unparsable URL might hide credentials anywhere; show nothing of it.
		return ""
	}
	u.User = nil
	return u.String()
}

// stageLog reports the sections an executor opens to the job's observer.
type stageLog struct {
	executors.JobLog
	obs JobObserver
}

func (l stageLog) SectionStart(name, header string) {
	l.obs.Stage(name)
	l.JobLog.SectionStart(name, header)
}

// nopObserver is the Observer of a manager built without one.
type nopObserver struct{}

func (nopObserver) Serving(bool)                                   {}
func (nopObserver) Configured(int, []RunnerInfo)                   {}
func (nopObserver) ProviderStarted(RunnerInfo, executors.Provider) {}
func (nopObserver) ProviderStopped(RunnerInfo, executors.Provider) {}
func (nopObserver) RequestStarted(RunnerInfo)                      {}
func (nopObserver) RequestEnded(RunnerInfo, int)                   {}
func (nopObserver) APIResponse(RunnerInfo, string, int)            {}
func (nopObserver) ProcessingFailure(RunnerInfo, string)           {}
func (nopObserver) RunnerPaused(RunnerInfo, time.Time)             {}
func (nopObserver) RunnerLease(RunnerInfo, LeaseInfo)              {}
func (nopObserver) JobStarted(JobInfo) JobObserver                 { return nopObserver{} }
func (nopObserver) Stage(string)                                   {}
func (nopObserver) Finished(job.FailureReason)                     {}

// observeConfig tells the observer about the runners served (see served).
func (m *Manager) observeConfig(concurrent int, served []*config.RunnerConfig) {
	var runners []RunnerInfo
	for _, rc := range served {
		runners = append(runners, m.runnerInfo(rc))
	}
	m.opts.Observer.Configured(concurrent, runners)
}

func (w *worker) runnerInfo() RunnerInfo {
	return w.m.runnerInfo(w.settings())
}
