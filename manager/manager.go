// Package manager is fleetrunner's run loop: it reads config.toml, keeps one worker per [[runners]]
// entry asking GitLab for jobs within the `concurrent`, `limit` and `request_concurrency` bounds, hands
// each job to the runner's executor provider with its trace, and handles graceful and forceful
// shutdown and configuration reloads (spec upstream-runner.md §1, §6; gitlab-api.md §1.7.5, §3.2, §4).
package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/history"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// DefaultReloadInterval is how often config.toml's modification time is checked (upstream's
// ReloadConfigInterval).
const DefaultReloadInterval = 3 * time.Second

// ErrForcedExit is returned by Run when a second forceful stop ended it without waiting for jobs.
var ErrForcedExit = errors.New("forced exit: running jobs were abandoned")

// Options configure a Manager.
type Options struct {
	// ConfigPath is the config.toml to run from and watch.
	ConfigPath string
	// Registry builds one executor provider per runner; it is kept when the runner's token rotates.
	Registry executors.Registry
	// SystemID identifies this runner manager host to GitLab.
	SystemID string
	// ReloadInterval is how often the config file's modification time is checked; 0 means 3 s.
	ReloadInterval time.Duration
	// OnConfig, when set, is called with every configuration the manager loads (at start and on each
	// reload), so the caller can re-apply process-wide settings such as the log level.
	OnConfig func(*config.Config)
	// Observer, when set, is told about runners, requests and jobs (metrics, debug endpoints).
	Observer Observer
}

// Manager runs the workers of all configured runners.
type Manager struct {
	log  logrus.FieldLogger
	opts Options

	slots *slots

	// stopPolling ends every worker's polling loop (graceful and forceful stop). Requests already
	// in flight go on, so that a job GitLab assigned meanwhile is run rather than lost.
	pollCtx     context.Context
	stopPolling context.CancelFunc
	// abortJobs cancels job requests in flight and the Run context of every job (forceful stop).
	abortCtx  context.Context
	abortJobs context.CancelFunc
	// finishCtx bounds the final trace uploads; cancelled when Run returns.
	finishCtx    context.Context
	cancelFinish context.CancelFunc

	// active counts worker loops, job requests and jobs. Every Add happens in an already counted
	// goroutine or under mu before stopping, so Wait after stopping is safe.
	active sync.WaitGroup

	reloadCh chan struct{}

	stopMu    sync.Mutex
	graceful  chan struct{}
	forceful  chan struct{}
	exit      chan struct{}
	forceSeen int

	mu       sync.Mutex
	cfg      *config.Config
	cfgMtime time.Time
	// changeSeen is the changed config file as the watcher last saw it, applied once it stays the same.
	changeSeen fileStamp
	stopping   bool
	// workers and providers are keyed by the current runner token; a token rotation re-keys them.
	workers   map[string]*worker
	providers map[string]*providerEntry
	// rotated maps every token this process replaced to the runner's current credentials, so that a
	// config.toml still carrying an old token (not saved yet, or written back by an editor) names the
	// same runner, not a removed one and a new one.
	rotated map[string]config.RunnerCredentials

	// saveMu serialises the read-modify-write cycles of config.toml after token rotations.
	saveMu sync.Mutex

	// history appends each job run to its runner's job history in the state directory.
	history *history.Writer

	// standby holds, per runner token, the manager that manages the runner's fleet instead of this one
	// (standby.go); standbyTimer asks again, at standbyAt.
	standby      map[string]*executors.StandbyError
	demoting     map[string]bool
	standbyTimer *time.Timer
	standbyAt    time.Time
}

// providerEntry is a runner's provider; it outlives reloads and is shut down when its runner
// left the configuration and its jobs ended, or when the manager stops.
type providerEntry struct {
	p        executors.Provider
	executor string
}

// New builds a manager. It reads nothing until Run.
func New(log logrus.FieldLogger, opts Options) *Manager {
	if opts.ReloadInterval <= 0 {
		opts.ReloadInterval = DefaultReloadInterval
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	m := &Manager{
		log:       log,
		opts:      opts,
		slots:     newSlots(0),
		reloadCh:  make(chan struct{}, 1),
		graceful:  make(chan struct{}),
		forceful:  make(chan struct{}),
		exit:      make(chan struct{}),
		workers:   map[string]*worker{},
		providers: map[string]*providerEntry{},
		rotated:   map[string]config.RunnerCredentials{},
		standby:   map[string]*executors.StandbyError{},
		demoting:  map[string]bool{},
		history:   history.NewWriter(history.MaxBytes),
	}
	base := context.Background()
	m.pollCtx, m.stopPolling = context.WithCancel(base)
	m.abortCtx, m.abortJobs = context.WithCancel(base)
	m.finishCtx, m.cancelFinish = context.WithCancel(base)
	return m
}

// StopGracefully stops asking GitLab for jobs, lets running jobs (and job requests in flight) finish
// without a time limit, then shuts the executor providers down within shutdown_timeout (SIGQUIT). No
// new job request starts once it returned. Calling it again, or after a forceful stop, does nothing.
func (m *Manager) StopGracefully() {
	m.stopAsking()
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	select {
	case <-m.graceful:
	default:
		close(m.graceful)
	}
}

// StopForcefully aborts job requests in flight and every running job, waits up to shutdown_timeout for
// the jobs, then gives the providers shutdown_timeout to shut down (SIGTERM, SIGINT). A second call
// makes Run return at once.
func (m *Manager) StopForcefully() {
	m.stopAsking()
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	m.forceSeen++
	switch m.forceSeen {
	case 1:
		close(m.forceful)
	case 2:
		close(m.exit)
	}
}

// stopAsking marks the manager as stopping (no reload applies) and ends every worker's polling. When it
// returns, no worker starts another job request.
func (m *Manager) stopAsking() {
	m.mu.Lock()
	m.stopping = true
	if m.standbyTimer != nil {
		m.standbyTimer.Stop()
	}
	workers := make([]*worker, 0, len(m.workers))
	for _, w := range m.workers {
		workers = append(workers, w)
	}
	m.mu.Unlock()
	m.stopPolling()
	for _, w := range workers {
		w.sync()
	}
}

// Reload re-reads config.toml (SIGHUP). It does not wait for the reload.
func (m *Manager) Reload() {
	select {
	case m.reloadCh <- struct{}{}:
	default:
	}
}

// Run loads the configuration, starts the workers and serves until a stop. Cancelling ctx is a
// forceful stop. It returns nil after a clean stop, an error when the configuration cannot be used at
// start, or when a forceful stop could not wait for every job.
func (m *Manager) Run(ctx context.Context) error {
	defer m.cancelFinish()
	defer m.history.Close()
	cfg, mtime, err := m.load()
	if err != nil {
		return err
	}
	if err := m.nothingToServe(cfg, "register one with `fleetrunner register`, or restore the file"); err != nil {
		return err
	}
	if err := m.apply(cfg, mtime, true); err != nil {
		m.shutdownProviders(time.Now().Add(cfg.GetShutdownTimeout()))
		return err
	}
	m.log.WithFields(logrus.Fields{"concurrent": cfg.Concurrent, "runners": len(cfg.Runners)}).Info("fleetrunner is running")
	m.opts.Observer.Serving(true)
	defer m.opts.Observer.Serving(false)

	ticker := time.NewTicker(m.opts.ReloadInterval)
	defer ticker.Stop()
	ctxDone := ctx.Done()
	for {
		select {
		case <-ctxDone:
			ctxDone = nil // one forceful stop; a second one would abandon the jobs
			m.log.Warn("stopping: the run context ended")
			m.StopForcefully()
		case <-m.reloadCh:
			m.reload(true)
		case <-ticker.C:
			m.reload(false)
		case <-m.graceful:
			return m.stopGraceful()
		case <-m.forceful:
			return m.stopForceful()
		}
	}
}

// load reads and validates config.toml and logs its warnings.
func (m *Manager) load() (*config.Config, time.Time, error) {
	path := m.opts.ConfigPath
	// The time is taken first: a change while loading is then picked up by the next check.
	st, statErr := os.Stat(path)
	cfg, warnings, err := config.Load(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	if statErr != nil {
		return nil, time.Time{}, fmt.Errorf("reading config file: %w", statErr)
	}
	for _, w := range warnings {
		m.log.WithField("key", w.Key).Warn(w.Message)
	}
	if m.opts.OnConfig != nil {
		m.opts.OnConfig(cfg)
	}
	return cfg, st.ModTime(), nil
}

// nothingToServe refuses a configuration without a runner this build can serve; remedy tells the
// operator what to do instead.
func (m *Manager) nothingToServe(cfg *config.Config, remedy string) error {
	if len(cfg.Runners) == 0 {
		return fmt.Errorf("config file %s defines no [[runners]] (is it empty or cut short?); %s", m.opts.ConfigPath, remedy)
	}
	for _, rc := range cfg.Runners {
		if rc.ExecutorSupported() {
			return nil
		}
	}
	return fmt.Errorf("config file %s has no [[runners]] entry this build can serve (executor docker or docker-autoscaler; the others are named in the warnings above); %s", m.opts.ConfigPath, remedy)
}

// reload applies a changed (or, when forced, any) config.toml; a broken file keeps the running one.
func (m *Manager) reload(force bool) {
	m.mu.Lock()
	last := m.cfgMtime
	m.mu.Unlock()
	st, err := os.Stat(m.opts.ConfigPath)
	if err != nil {
		if force {
			m.log.WithError(err).Error("cannot reload the configuration; keeping the running one")
		}
		return
	}
	if !force && st.ModTime().Equal(last) {
		return
	}
	if !force && !m.settled(st) {
		return
	}
	cfg, mtime, err := m.load()
	if err == nil {
		// A file truncated by an editor or a config-management tool must not delete the fleet.
		err = m.nothingToServe(cfg, "to really remove every runner, stop the service (fleetrunner stop) or unregister them (fleetrunner unregister --all-runners, then stop)")
	}
	if err != nil {
		m.log.WithError(err).Error("cannot reload the configuration; keeping the running one")
		// Do not retry the same broken file every few seconds.
		m.mu.Lock()
		m.cfgMtime = st.ModTime()
		m.mu.Unlock()
		return
	}
	if err := m.apply(cfg, mtime, false); err != nil {
		m.log.WithError(err).Error("configuration reloaded with errors; the runners named above are not served")
		return
	}
	m.log.Info("configuration reloaded")
}

// settled reports whether a changed config.toml looks the same (time and size) as at the previous check.
// An editor that truncates the file and then writes it must not be caught in between: an empty or
// half-written file can parse, and would stop every runner it lacks.
func (m *Manager) settled(st os.FileInfo) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := fileStamp{st.ModTime(), st.Size()}
	if m.changeSeen != seen {
		m.changeSeen = seen
		return false
	}
	return true
}

// fileStamp is what the config watcher compares between two checks.
type fileStamp struct {
	mtime time.Time
	size  int64
}

// apply makes the workers match cfg: new runners start, removed ones stop asking and drain, changed
// settings take effect at the next request. The returned error names runners that could not start;
// with atStart, no runner starts unless all of them can.
func (m *Manager) apply(cfg *config.Config, mtime time.Time, atStart bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg = cfg
	m.cfgMtime = mtime
	if m.stopping {
		return nil
	}
	m.slots.setSize(cfg.Concurrent)

	var errs []error
	var fresh []*worker
	runners, stale := m.served(cfg)
	m.adoptResetTokens(runners)
	seen := map[string]bool{}
	for _, rc := range runners {
		seen[rc.Token] = true
		if m.demoting[rc.Token] {
			continue
		}
		if w, ok := m.workers[rc.Token]; ok {
			w.update(cfg, rc)
			if stale[rc.Token] {
				w.markUnsaved()
			}
			continue
		}
		pe, err := m.providerFor(rc)
		var standby *executors.StandbyError
		if errors.As(err, &standby) {
			m.standbyLocked(rc, standby)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.activeLocked(rc, pe.p)
		w, err := newWorker(m, cfg, rc, pe.p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		w.unsaved = stale[rc.Token]
		fresh = append(fresh, w)
	}
	if atStart && len(errs) > 0 {
		return errors.Join(errs...)
	}
	m.observeConfig(cfg.Concurrent, runners)
	for _, w := range fresh {
		m.workers[w.cfg.Token] = w
		m.active.Add(1)
		go w.loop()
		w.track()
		go w.rotateLoop()
		// Tracked like a job, so that a stop waits for the report rather than cutting it short.
		w.track()
		go w.reportRecovered()
	}
	for token, w := range m.workers {
		if !seen[token] {
			delete(m.workers, token)
			w.retire()
			m.active.Add(1)
			go m.drainRemoved(token, w)
		}
	}
	return errors.Join(errs...)
}

// adoptResetTokens hands the worker and executor of a runner whose token was reset outside this
// process (fleetrunner reset-token, an edit) to the entry with the new token: same GitLab URL and
// runner ID. Without it the reload would see one runner removed and another added, and a second
// executor (for docker-autoscaler, a second fleet) would start beside the draining one. Called with mu
// held.
func (m *Manager) adoptResetTokens(runners []*config.RunnerConfig) {
	inConfig := map[string]bool{}
	for _, rc := range runners {
		inConfig[rc.Token] = true
	}
	for _, rc := range runners {
		if rc.ID == 0 {
			continue
		}
		if _, ok := m.workers[rc.Token]; ok {
			continue
		}
		for old, w := range m.workers {
			cur := w.settings()
			if inConfig[old] || cur.ID != rc.ID || strings.TrimRight(cur.URL, "/") != strings.TrimRight(rc.URL, "/") {
				continue
			}
			delete(m.workers, old)
			m.workers[rc.Token] = w
			if pe, ok := m.providers[old]; ok {
				delete(m.providers, old)
				m.providers[rc.Token] = pe
			}
			m.log.WithFields(logrus.Fields{"runner": ShortToken(rc.Token), "old_runner": ShortToken(old), "runner_name": rc.Name}).
				Info("runner token changed in config.toml; the runner and its executor go on with the new token")
			break
		}
	}
}

// served lists the entries of cfg the manager serves: supported executors, once per token (upstream-only
// executors and repeated tokens were reported as config warnings). An entry carrying a token this
// process rotated gets the current credentials; stale holds the tokens of such entries, whose worker
// is to save them again. Called with mu held.
func (m *Manager) served(cfg *config.Config) (out []*config.RunnerConfig, stale map[string]bool) {
	stale = map[string]bool{}
	seen := map[string]bool{}
	for _, rc := range cfg.Runners {
		if !rc.ExecutorSupported() {
			continue
		}
		if cur, ok := m.rotated[rc.Token]; ok {
			m.log.WithFields(logrus.Fields{"runner": ShortToken(cur.Token), "runner_name": rc.Name}).
				Warn("config.toml carries a runner token this manager already replaced; using the new one and writing it back")
			c := *rc
			c.Token, c.TokenObtainedAt, c.TokenExpiresAt = cur.Token, cur.TokenObtainedAt, cur.TokenExpiresAt
			rc = &c
			stale[rc.Token] = true
		}
		if seen[rc.Token] {
			continue
		}
		seen[rc.Token] = true
		out = append(out, rc)
	}
	return out, stale
}

// providerFor returns the runner's provider, creating it on first use. Called with mu held.
func (m *Manager) providerFor(rc *config.RunnerConfig) (*providerEntry, error) {
	if pe, ok := m.providers[rc.Token]; ok {
		if pe.executor != rc.Executor {
			m.log.WithField("runner", ShortToken(rc.Token)).Warnf("executor changed from %q to %q; restart fleetrunner to apply it", pe.executor, rc.Executor)
		}
		return pe, nil
	}
	p, err := m.opts.Registry.New(rc, executors.Deps{
		Logger:    m.log.WithFields(logrus.Fields{"runner": ShortToken(rc.Token), "executor": rc.Executor}),
		ConfigDir: filepath.Dir(m.opts.ConfigPath),
		SystemID:  m.opts.SystemID,
	})
	if err != nil {
		return nil, err
	}
	pe := &providerEntry{p: p, executor: rc.Executor}
	m.providers[rc.Token] = pe
	m.opts.Observer.ProviderStarted(m.runnerInfo(rc), p)
	return pe, nil
}

// drainRemoved waits for the jobs of a runner that left the configuration, then shuts its provider
// down unless the runner came back meanwhile.
func (m *Manager) drainRemoved(token string, w *worker) {
	defer m.active.Done()
	w.wait()
	m.mu.Lock()
	pe, ok := m.providers[token]
	if !ok || m.stopping {
		m.mu.Unlock()
		return
	}
	if _, back := m.workers[token]; back {
		m.mu.Unlock()
		return
	}
	delete(m.providers, token)
	timeout := m.cfg.GetShutdownTimeout()
	m.mu.Unlock()

	ctx, cancel := context.WithTimeout(m.finishCtx, timeout)
	defer cancel()
	if err := pe.p.Shutdown(ctx); err != nil {
		w.log.WithError(err).Error("shutting down the executor of a removed runner")
		return
	}
	w.log.Info("runner removed from the configuration; its executor is shut down")
	m.opts.Observer.ProviderStopped(w.runnerInfo(), pe.p)
}

// allDone is closed when every worker loop, request and job has ended.
func (m *Manager) allDone() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		m.active.Wait()
		close(done)
	}()
	return done
}

func (m *Manager) shutdownTimeout() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg.GetShutdownTimeout()
}

func (m *Manager) stopGraceful() error {
	m.log.Info("graceful stop: no new jobs are requested; waiting for running jobs to finish (send SIGTERM or SIGINT to abort them)")
	select {
	case <-m.allDone():
	case <-m.forceful:
		return m.stopForceful()
	}
	m.log.Info("all jobs finished; shutting the executors down")
	if !m.shutdownProviders(time.Now().Add(m.shutdownTimeout())) {
		return errors.New("graceful stop: executors did not shut down within shutdown_timeout")
	}
	return nil
}

func (m *Manager) stopForceful() error {
	timeout := m.shutdownTimeout()
	m.log.WithField("shutdown_timeout", timeout).Warn("forceful stop: aborting running jobs (send SIGQUIT instead to let jobs finish and executors shut down cleanly)")
	m.abortJobs()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-m.allDone():
	case <-t.C:
		m.cancelFinish()
		// The providers get their own shutdown_timeout (cut short by a second stop): with an expired
		// context they could not remove their instances.
		m.log.WithField("shutdown_timeout", timeout).Error("jobs did not end within shutdown_timeout; shutting the executors down anyway")
		m.shutdownProviders(time.Now().Add(timeout))
		return fmt.Errorf("forceful stop: jobs did not end within shutdown_timeout (%s)", timeout)
	case <-m.exit:
		m.cancelFinish()
		return ErrForcedExit
	}
	if !m.shutdownProviders(time.Now().Add(timeout)) {
		return errors.New("forceful stop: executors did not shut down within shutdown_timeout")
	}
	return nil
}

// shutdownProviders shuts every provider down in parallel by deadline (cut short by a second forceful
// stop) and reports whether all of them finished cleanly.
func (m *Manager) shutdownProviders(deadline time.Time) bool {
	m.mu.Lock()
	entries := make(map[string]*providerEntry, len(m.providers))
	for t, pe := range m.providers {
		entries[t] = pe
	}
	m.providers = map[string]*providerEntry{}
	m.mu.Unlock()

	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	go func() {
		select {
		case <-m.exit:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := true
	for token, pe := range entries {
		wg.Go(func() {
			if err := pe.p.Shutdown(ctx); err != nil {
				m.log.WithField("runner", ShortToken(token)).WithError(err).Error("executor shutdown failed")
				mu.Lock()
				ok = false
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ok
}

// ShortToken is what may be shown of a runner token, as upstream and GitLab's UI show it: the first 8
// characters after the token-kind prefix.
func ShortToken(token string) string { return config.ShortToken(token) }
