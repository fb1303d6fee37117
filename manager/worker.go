package manager

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// worker asks GitLab for jobs for one [[runners]] entry and runs them.
type worker struct {
	m        *Manager
	provider executors.Provider
	log      logrus.FieldLogger

	// pollCtx ends the worker's polling: the runner left the configuration or the manager stops.
	pollCtx     context.Context
	stopPolling context.CancelFunc
	// active counts this worker's loop, requests and jobs, for draining a removed runner.
	active sync.WaitGroup
	// kick wakes the loop: a request or job ended, a job arrived, the settings changed.
	kick chan struct{}
	// rotKick wakes the token rotation loop: the settings changed or the new token must be saved.
	rotKick chan struct{}

	mu     sync.Mutex
	global *config.Config
	// cfg carries the runner token: the key of this worker in the manager's maps, which a token
	// rotation changes (with cfg) under the manager's lock.
	cfg         *config.RunnerConfig
	client      *gitlab.Client
	clientKey   clientKey
	inflight    int // job requests in flight
	running     int // jobs running
	nextPoll    time.Time
	unhealthy   int // consecutive unhealthy request results
	pausedUntil time.Time
	// lastFailure is when the last counted unhealthy answer came: the requests already in flight then
	// went through the same outage, and their failures are not counted again.
	lastFailure time.Time
	// pauses is how many unhealthy pauses came in a row; while it is above zero the runner sends one
	// probe request at a time, and each failed probe doubles the next pause.
	pauses int
	// unsaved: config.toml does not carry the current token yet (see saveCredentials).
	unsaved bool
}

// clientKey are the settings a GitLab client is built from; a change needs a new client.
type clientKey struct {
	url, ca, cert, key, executor, shell string
	maxAge                              time.Duration
}

func keyOf(global *config.Config, rc *config.RunnerConfig) clientKey {
	return clientKey{rc.URL, rc.TLSCAFile, rc.TLSCertFile, rc.TLSKeyFile, rc.Executor, rc.Shell, global.GetConnectionMaxAge()}
}

func newWorker(m *Manager, global *config.Config, rc *config.RunnerConfig, p executors.Provider) (*worker, error) {
	w := &worker{
		m:        m,
		provider: p,
		log:      m.log.WithFields(logrus.Fields{"runner": ShortToken(rc.Token), "runner_name": rc.Name}),
		kick:     make(chan struct{}, 1),
		rotKick:  make(chan struct{}, 1),
		global:   global,
		cfg:      rc,
	}
	client, err := w.newClient(rc)
	if err != nil {
		return nil, err
	}
	w.client, w.clientKey = client, keyOf(global, rc)
	w.pollCtx, w.stopPolling = context.WithCancel(m.pollCtx)
	w.active.Add(1)
	return w, nil
}

func (w *worker) newClient(rc *config.RunnerConfig) (*gitlab.Client, error) {
	c, err := gitlab.NewClient(w.log, gitlab.ClientConfig{
		URL:         rc.URL,
		TLSCAFile:   rc.TLSCAFile,
		TLSCertFile: rc.TLSCertFile,
		TLSKeyFile:  rc.TLSKeyFile,
		Info:        gitlab.NewVersionInfo(rc.Executor, rc.Shell, w.provider.Features()),
		// Reading w.global is safe here: newWorker and update set it before building a client.
		ConnectionMaxAge: w.global.GetConnectionMaxAge(),
		OnResponse: func(endpoint string, status int) {
			w.m.opts.Observer.APIResponse(w.runnerInfo(), endpoint, status)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("runner %q: %w", rc.Name, err)
	}
	return c, nil
}

// update applies a reloaded entry; the next request uses it.
func (w *worker) update(global *config.Config, rc *config.RunnerConfig) {
	w.mu.Lock()
	if autoscalerChanged(w.cfg.Autoscaler, rc.Autoscaler) {
		w.log.Warn("[runners.autoscaler] settings other than the policy changed; restart fleetrunner to apply them")
	}
	wasPaused := w.pauses > 0
	if w.unhealthy > 0 || wasPaused {
		// An operator who reloads after fixing GitLab, the network or the token (reset outside this
		// process) expects jobs now, not after the pause.
		w.clearUnhealthyLocked()
		reason := "configuration reloaded"
		if rc.Token != w.cfg.Token {
			reason = "runner token changed"
		}
		w.log.Infof("%s: the unhealthy pause ends and the runner asks GitLab for jobs again", reason)
	}
	w.global, w.cfg = global, rc
	if pu, ok := w.provider.(executors.PolicyUpdater); ok {
		if err := pu.UpdatePolicies(rc); err != nil {
			w.log.WithError(err).Error("cannot apply the reloaded [[runners.autoscaler.policy]] list; keeping the old one")
		}
	}
	if k := keyOf(global, rc); k != w.clientKey {
		if c, err := w.newClient(rc); err != nil {
			w.log.WithError(err).Error("cannot apply the new GitLab connection settings; keeping the old ones")
		} else {
			w.client, w.clientKey = c, k
		}
	}
	w.mu.Unlock()
	if wasPaused {
		w.m.opts.Observer.RunnerPaused(w.runnerInfo(), time.Time{})
	}
	w.wake()
	w.wakeRotation()
}

// autoscalerChanged reports a change of autoscaler settings the running provider keeps until a
// restart; the policy list is left out, as the provider may apply it on its own.
func autoscalerChanged(old, cur *config.AutoscalerConfig) bool {
	if old == nil || cur == nil {
		return (old == nil) != (cur == nil)
	}
	a, b := *old, *cur
	a.Policy, b.Policy = nil, nil
	return !reflect.DeepEqual(a, b)
}

// retire stops asking for jobs; requests in flight and running jobs go on.
func (w *worker) retire() {
	w.log.Info("runner left the configuration: no new jobs are requested for it; running jobs continue")
	w.stopPolling()
	w.sync()
}

// sync waits for a fill in progress, so that after polling was stopped no request starts.
func (w *worker) sync() {
	w.mu.Lock()
	defer w.mu.Unlock()
}

// wait returns when the worker's loop, requests and jobs have ended.
func (w *worker) wait() { w.active.Wait() }

func (w *worker) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// track counts a goroutine of this worker in both wait groups; done undoes it.
func (w *worker) track() {
	w.m.active.Add(1)
	w.active.Add(1)
}

func (w *worker) done() {
	w.active.Done()
	w.m.active.Done()
}

// loop starts job requests whenever the runner is due and has room, until the worker ends.
func (w *worker) loop() {
	defer w.done()
	for {
		changed := w.m.slots.changed()
		wait := w.fill()
		var timer *time.Timer
		var fire <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-w.pollCtx.Done():
		case <-w.kick:
		case <-changed:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if w.pollCtx.Err() != nil {
			return
		}
	}
}

// fill starts as many job requests as request_concurrency, limit and the global concurrent slots allow
// when the runner is due. It returns how long to sleep before the next poll, or 0 to wait for an event
// (a free slot, a finished request or job).
func (w *worker) fill() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pollCtx.Err() != nil {
		return 0
	}
	now := time.Now()
	if now.Before(w.pausedUntil) {
		return w.pausedUntil.Sub(now)
	}
	if now.Before(w.nextPoll) {
		return w.nextPoll.Sub(now)
	}
	reqs := w.cfg.GetRequestConcurrency()
	if w.pauses > 0 {
		reqs = 1 // a probe: is GitLab back?
	}
	limit := w.cfg.Limit
	launched := false
	for w.inflight < reqs && (limit <= 0 || w.inflight+w.running < limit) {
		if !w.m.slots.tryAcquire() {
			break
		}
		w.inflight++
		launched = true
		w.track()
		go w.request(w.client, w.cfg.Token, now)
	}
	if !launched {
		return 0
	}
	w.nextPoll = now.Add(w.interval())
	return w.nextPoll.Sub(now)
}

// interval is check_interval with ±10% jitter, so that many runners do not poll in lockstep.
func (w *worker) interval() time.Duration {
	d := w.global.GetCheckInterval()
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// request reserves executor capacity, asks GitLab for one job with the runner token and runs it. It
// holds one global slot. Only a forceful stop cancels it: a job GitLab assigns must reach a runner.
func (w *worker) request(client *gitlab.Client, token string, started time.Time) {
	defer w.done()
	ctx := w.m.abortCtx
	obs, info := w.m.opts.Observer, w.runnerInfo()
	res, err := w.reserve(ctx)
	if err != nil {
		var standby *executors.StandbyError
		switch {
		case errors.As(err, &standby):
			w.m.demote(w, standby)
		case errors.Is(err, executors.ErrNoCapacity):
			obs.ProcessingFailure(info, FailureNoFreeExecutor)
			w.log.Debug("no free executor capacity; not asking GitLab for a job this round")
		case ctx.Err() == nil:
			obs.ProcessingFailure(info, FailureOther)
			w.log.WithError(err).Warn("executor could not reserve capacity; not asking GitLab for a job this round")
		}
		w.requestEnded(false)
		return
	}
	obs.RequestStarted(info)
	r := client.RequestJob(ctx, token, w.m.opts.SystemID)
	obs.RequestEnded(info, r.Status)
	// A request sent with the token a rotation just replaced is refused; that says nothing about the
	// runner's health.
	replaced := r.Status == http.StatusForbidden && w.token() != token
	switch {
	case r.Job != nil:
	case replaced:
		res.Unreserve()
		w.log.Debug("a job request sent with the replaced runner token was refused")
	default:
		res.Unreserve()
		w.logRequestFailure(r)
	}
	if !replaced {
		if until, changed := w.countHealth(r, started); changed {
			obs.RunnerPaused(info, until)
		}
	}
	if r.Job == nil {
		w.requestEnded(false)
		return
	}
	w.requestEnded(true)
	defer w.jobEnded()
	w.runJob(client, res, r.Job, r.Err)
}

// reserve asks the provider for capacity; a panicking executor fails this round, not the process.
func (w *worker) reserve(ctx context.Context) (res executors.Reservation, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("executor crashed while reserving capacity: %v", p)
		}
	}()
	return w.provider.Reserve(ctx)
}

func (w *worker) logRequestFailure(r gitlab.RequestJobResult) {
	switch {
	case r.Err == nil:
		w.log.Debug("no job")
	case w.m.abortCtx.Err() != nil:
	case r.Status == http.StatusForbidden:
		w.log.WithError(r.Err).Error("GitLab refused the runner token; check that the runner still exists (fleetrunner verify)")
	default:
		w.log.WithError(r.Err).Warn("job request failed; asking again later")
	}
}

// Pausing an unhealthy runner: the first pause is short, each further one (after a failed probe) twice
// as long, up to unhealthy_interval.
const firstUnhealthyPause = 5 * time.Second

// countHealth pauses the runner after unhealthy_requests_limit unhealthy answers in a row (403,
// transport errors). Unlike upstream, which waits out unhealthy_interval (1 h by default) at once, the
// pause starts at a few seconds and doubles with each failed probe up to unhealthy_interval, and the
// failures of requests that were in flight together count once: a one-second outage that fails three
// parallel requests is one failure, not a reason to stop taking jobs for an hour. A healthy answer or a
// reload ends the pause. It returns the end of the pause and whether the runner was paused (again) or
// became healthy, for the observer.
func (w *worker) countHealth(r gitlab.RequestJobResult, started time.Time) (pausedUntil time.Time, changed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.Healthy {
		changed = w.pauses > 0
		if changed {
			w.log.Info("GitLab answers the runner again; it is healthy and asks for jobs as usual")
		}
		w.clearUnhealthyLocked()
		return time.Time{}, changed
	}
	if !started.After(w.lastFailure) {
		return time.Time{}, false // in flight during the failure already counted
	}
	w.lastFailure = time.Now()
	w.unhealthy++
	limit := w.cfg.GetUnhealthyRequestsLimit()
	if w.pauses == 0 && w.unhealthy < limit {
		return time.Time{}, false
	}
	w.unhealthy = 0
	w.pauses++
	pause := min(firstUnhealthyPause<<min(w.pauses-1, 20), w.cfg.GetUnhealthyInterval())
	w.pausedUntil = time.Now().Add(pause)
	log := w.log.WithFields(logrus.Fields{"pause": pause, "unhealthy_interval": w.cfg.GetUnhealthyInterval()})
	if w.pauses == 1 {
		log.Errorf("runner is unhealthy (%d failed job requests in a row); it sends one probe request after the pause, which doubles with each failed probe up to unhealthy_interval (reload to end it)", limit)
	} else {
		log.Warn("runner is still unhealthy (the probe request failed); pausing again")
	}
	return w.pausedUntil, true
}

// clearUnhealthyLocked ends an unhealthy pause; called with w.mu held.
func (w *worker) clearUnhealthyLocked() {
	w.unhealthy, w.pauses, w.pausedUntil = 0, 0, time.Time{}
}

// requestEnded gives the request's slot back, or hands it to the job that came. After a job the runner
// asks again at once unless strict_check_interval is set.
func (w *worker) requestEnded(gotJob bool) {
	w.mu.Lock()
	w.inflight--
	if gotJob {
		w.running++
		if !w.cfg.StrictCheckInterval {
			w.nextPoll = time.Time{}
		}
	}
	w.mu.Unlock()
	if !gotJob {
		w.m.slots.release()
	}
	w.wake()
}

func (w *worker) jobEnded() {
	w.mu.Lock()
	w.running--
	w.mu.Unlock()
	w.m.slots.release()
	w.wake()
}

// settings returns the current entry, for a job about to start.
func (w *worker) settings() *config.RunnerConfig {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg
}

// token is the runner token in use.
func (w *worker) token() string {
	return w.settings().Token
}
