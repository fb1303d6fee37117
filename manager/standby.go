package manager

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// Bounds of the wait between two attempts of a standby: never busy-looping on a claim that already
// ran out (clock skew), and never sleeping through a whole lease should the holder's claim be far off.
const (
	standbyMinWait = 200 * time.Millisecond
	standbyMaxWait = time.Minute
)

// standbyLocked notes that another manager manages rc's fleet (a high-availability pair) and asks the
// executor again when that manager's claim runs out: the runner is not served until then. Called with
// mu held.
func (m *Manager) standbyLocked(rc *config.RunnerConfig, se *executors.StandbyError) {
	prev, waiting := m.standby[rc.Token]
	m.standby[rc.Token] = se
	log := m.log.WithFields(logrus.Fields{"runner": ShortToken(rc.Token), "runner_name": rc.Name, "holder": se.Holder})
	if !waiting || prev.Holder != se.Holder {
		log.Info("standby: another manager manages this runner's fleet; this one takes it over when that manager's lease runs out")
	} else {
		log.Debug("still standby")
	}
	m.opts.Observer.RunnerLease(m.runnerInfo(rc), LeaseInfo{Standby: true, Holder: se.Holder, Since: se.HolderSince})
	at := time.Now().Add(min(max(time.Until(se.RetryAt), standbyMinWait), standbyMaxWait))
	if m.standbyTimer != nil && !m.standbyAt.IsZero() && m.standbyAt.Before(at) {
		return
	}
	m.standbyAt = at
	if m.standbyTimer == nil {
		m.standbyTimer = time.AfterFunc(time.Until(at), m.retryStandby)
		return
	}
	m.standbyTimer.Reset(time.Until(at))
}

// activeLocked notes that this manager serves rc with provider p: a standby that took the fleet over
// says so. Called with mu held.
func (m *Manager) activeLocked(rc *config.RunnerConfig, p executors.Provider) {
	if se, ok := m.standby[rc.Token]; ok {
		delete(m.standby, rc.Token)
		m.log.WithFields(logrus.Fields{"runner": ShortToken(rc.Token), "runner_name": rc.Name, "previous_holder": se.Holder}).
			Warn("took the runner's fleet over from the manager that held it: its instances are adopted and the jobs it was running are reported as failed")
	}
	if fd, ok := p.(executors.FleetDescriber); ok {
		if l := fd.FleetStatus().Lease; l != nil {
			m.opts.Observer.RunnerLease(m.runnerInfo(rc), LeaseInfo{Holder: l.Holder, Since: l.Since})
		}
	}
}

// retryStandby applies the running configuration again, which builds the providers of the runners on
// standby: each one either takes its fleet over or waits on.
func (m *Manager) retryStandby() {
	m.mu.Lock()
	cfg, mtime, stopping := m.cfg, m.cfgMtime, m.stopping
	m.standbyAt = time.Time{}
	m.mu.Unlock()
	if stopping || cfg == nil {
		return
	}
	if err := m.apply(cfg, mtime, false); err != nil {
		m.log.WithError(err).Error("taking a runner over from standby failed; the runners named above are not served")
	}
}

// demote takes a runner whose provider gave its fleet up (another manager holds its lease now) back to
// standby: no new job is requested for it, its provider is shut down once its running jobs ended (so
// that no second provider of this process adopts the instances they run on), and the runner's provider
// is then built again, which waits on standby or takes the fleet back.
func (m *Manager) demote(w *worker, se *executors.StandbyError) {
	token := w.token()
	m.mu.Lock()
	if m.stopping || m.workers[token] != w {
		m.mu.Unlock()
		return
	}
	delete(m.workers, token)
	m.demoting[token] = true
	m.standby[token] = se
	pe := m.providers[token]
	delete(m.providers, token)
	m.active.Add(1)
	m.mu.Unlock()
	w.log.WithError(se).Warn("the executor gave the runner's fleet up: no new jobs are requested for it; running jobs go on, then this manager waits on standby")
	w.stopPolling()
	go func() {
		defer m.active.Done()
		w.wait()
		m.mu.Lock()
		timeout := m.cfg.GetShutdownTimeout()
		m.mu.Unlock()
		ctx, cancel := context.WithTimeout(m.finishCtx, timeout)
		if err := pe.p.Shutdown(ctx); err != nil {
			w.log.WithError(err).Error("shutting down the executor that gave its fleet up")
		}
		cancel()
		m.opts.Observer.ProviderStopped(w.runnerInfo(), pe.p)
		m.mu.Lock()
		delete(m.demoting, token)
		m.mu.Unlock()
		m.retryStandby()
	}()
}
