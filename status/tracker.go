// Package status serves the read-only status page at / on listen_address: each runner with its health,
// the scaling policy in force, its instances, running jobs and last scale decisions. The page is
// rendered on the server from html/template, so it needs no front-end build nor JavaScript, and every
// value it shows is escaped. It learns what the manager does as a manager.Observer placed in front of
// the metrics observer, and asks the providers that scale a fleet (executors.FleetDescriber) for it.
package status

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// Tracker is a manager.Observer that remembers what the page shows and passes every call on to the
// next observer. It is safe for concurrent use.
type Tracker struct {
	next manager.Observer
	now  func() time.Time

	mu      sync.Mutex
	runners []manager.RunnerInfo
	// health is each runner's job request health, by short token.
	health map[string]health
	fleets map[executors.Provider]fleet
	jobs   map[*trackedJob]struct{}
}

// health is what the last job requests of a runner said: the manager counts 403 and transport errors
// as unhealthy answers and pauses a runner that gets too many in a row.
type health struct {
	failures   int
	lastStatus int
	lastAt     time.Time
	// pausedUntil is the manager's next probe while it pauses the runner's job requests; zero when not.
	pausedUntil time.Time
	// standby is the lease of a runner whose fleet another manager manages while this one waits.
	standby manager.LeaseInfo
}

type fleet struct {
	runner manager.RunnerInfo
	fd     executors.FleetDescriber
}

var _ manager.Observer = (*Tracker)(nil)

// NewTracker returns a Tracker that passes every call on to next.
func NewTracker(next manager.Observer) *Tracker {
	return &Tracker{
		next: next, now: time.Now,
		health: map[string]health{}, fleets: map[executors.Provider]fleet{}, jobs: map[*trackedJob]struct{}{},
	}
}

// Serving implements manager.Observer.
func (t *Tracker) Serving(on bool) { t.next.Serving(on) }

// Configured implements manager.Observer: the page lists the runners of the last configuration.
func (t *Tracker) Configured(concurrent int, runners []manager.RunnerInfo) {
	t.mu.Lock()
	t.runners = slices.Clone(runners)
	t.mu.Unlock()
	t.next.Configured(concurrent, runners)
}

// ProviderStarted implements manager.Observer: a provider that scales a fleet is asked for it on every
// page view.
func (t *Tracker) ProviderStarted(r manager.RunnerInfo, p executors.Provider) {
	if fd, ok := p.(executors.FleetDescriber); ok {
		t.mu.Lock()
		t.fleets[p] = fleet{runner: r, fd: fd}
		t.mu.Unlock()
	}
	t.next.ProviderStarted(r, p)
}

// ProviderStopped implements manager.Observer.
func (t *Tracker) ProviderStopped(r manager.RunnerInfo, p executors.Provider) {
	t.mu.Lock()
	delete(t.fleets, p)
	t.mu.Unlock()
	t.next.ProviderStopped(r, p)
}

// RequestStarted implements manager.Observer.
func (t *Tracker) RequestStarted(r manager.RunnerInfo) { t.next.RequestStarted(r) }

// RequestEnded implements manager.Observer: a 403 or a transport error is an unhealthy answer, any
// other answer ends the streak, as the manager counts them. Whether the runner is unhealthy is the
// manager's call (RunnerPaused): it allows unhealthy_requests_limit of them first.
func (t *Tracker) RequestEnded(r manager.RunnerInfo, status int) {
	t.mu.Lock()
	h := t.health[r.Runner]
	if status == http.StatusForbidden || status == gitlab.StatusTransportError {
		h.failures++
	} else {
		h.failures = 0
	}
	h.lastStatus, h.lastAt = status, t.now()
	t.health[r.Runner] = h
	t.mu.Unlock()
	t.next.RequestEnded(r, status)
}

// RunnerPaused implements manager.Observer: the runner is unhealthy while the manager pauses it.
func (t *Tracker) RunnerPaused(r manager.RunnerInfo, until time.Time) {
	t.mu.Lock()
	h := t.health[r.Runner]
	h.pausedUntil = until
	t.health[r.Runner] = h
	t.mu.Unlock()
	t.next.RunnerPaused(r, until)
}

// RunnerLease implements manager.Observer: a runner on standby is shown with the manager it waits for;
// the one serving shows its own lease with its fleet.
func (t *Tracker) RunnerLease(r manager.RunnerInfo, l manager.LeaseInfo) {
	t.mu.Lock()
	h := t.health[r.Runner]
	h.standby = manager.LeaseInfo{}
	if l.Standby {
		h.standby = l
	}
	t.health[r.Runner] = h
	t.mu.Unlock()
	t.next.RunnerLease(r, l)
}

// APIResponse implements manager.Observer.
func (t *Tracker) APIResponse(r manager.RunnerInfo, endpoint string, status int) {
	t.next.APIResponse(r, endpoint, status)
}

// ProcessingFailure implements manager.Observer.
func (t *Tracker) ProcessingFailure(r manager.RunnerInfo, failureType string) {
	t.next.ProcessingFailure(r, failureType)
}

// JobStarted implements manager.Observer: the job is shown until it finished.
func (t *Tracker) JobStarted(j manager.JobInfo) manager.JobObserver {
	tj := &trackedJob{t: t, next: t.next.JobStarted(j), info: j, started: t.now()}
	t.mu.Lock()
	t.jobs[tj] = struct{}{}
	t.mu.Unlock()
	return tj
}

// trackedJob follows one running job; its stage is guarded by Tracker.mu.
type trackedJob struct {
	t       *Tracker
	next    manager.JobObserver
	info    manager.JobInfo
	started time.Time
	stage   string
}

// Stage implements manager.JobObserver.
func (j *trackedJob) Stage(name string) {
	j.t.mu.Lock()
	j.stage = name
	j.t.mu.Unlock()
	j.next.Stage(name)
}

// Finished implements manager.JobObserver.
func (j *trackedJob) Finished(reason job.FailureReason) {
	j.t.mu.Lock()
	delete(j.t.jobs, j)
	j.t.mu.Unlock()
	j.next.Finished(reason)
}

// Page collects what the page shows now. The providers are asked outside the lock: they answer at
// once, but must not hold up the manager's calls.
func (t *Tracker) Page() Page {
	now := t.now()
	t.mu.Lock()
	runners := slices.Clone(t.runners)
	healths := make(map[string]health, len(t.health))
	for k, v := range t.health {
		healths[k] = v
	}
	fleets := make([]fleet, 0, len(t.fleets))
	for _, f := range t.fleets {
		fleets = append(fleets, f)
	}
	jobs := make([]Job, 0, len(t.jobs))
	jobRunner := make([]string, 0, len(t.jobs))
	for j := range t.jobs {
		jobs = append(jobs, Job{ID: j.info.ID, Name: j.info.Name, Project: j.info.Project, URL: j.info.URL, Stage: j.stage, Started: j.started})
		jobRunner = append(jobRunner, j.info.Runner.Runner)
	}
	t.mu.Unlock()

	page := Page{Generated: now}
	for _, r := range runners {
		h := healths[r.Runner]
		rv := Runner{
			Name: r.Name, Short: r.Runner, SystemID: r.SystemID, Limit: r.Limit,
			Healthy: h.pausedUntil.IsZero(), PausedUntil: h.pausedUntil,
			FailedRequests: h.failures, LastStatus: h.lastStatus, LastRequest: h.lastAt, StandbyFor: h.standby.Holder, StandbySince: h.standby.Since,
		}
		for _, f := range fleets {
			if f.runner.Runner == r.Runner && f.runner.Name == r.Name {
				fs := f.fd.FleetStatus()
				// An operator reads the newest decision first.
				slices.Reverse(fs.Decisions)
				rv.Fleet = &fs
			}
		}
		onInstance := map[int64]string{}
		if rv.Fleet != nil {
			for _, in := range rv.Fleet.Instances {
				for _, id := range in.Jobs {
					onInstance[id] = in.ID
				}
			}
		}
		for i, j := range jobs {
			if jobRunner[i] == r.Runner {
				j.Instance = onInstance[j.ID]
				rv.Jobs = append(rv.Jobs, j)
			}
		}
		slices.SortFunc(rv.Jobs, func(a, b Job) int { return a.Started.Compare(b.Started) })
		page.Runners = append(page.Runners, rv)
	}
	return page
}
