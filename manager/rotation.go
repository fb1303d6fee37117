package manager

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
)

// Runner token rotation (gitlab-api.md §0 "Token kinds", §1.6). A token with an expiry is reset at
// token_obtained_at + 3/4 of its lifetime, as upstream does, unless FF_DISABLE_AUTOMATIC_TOKEN_ROTATION
// is on. The runner keeps its worker and its executor provider: the manager's maps are re-keyed to the
// new token and config.toml gets the new credentials, so the reload that follows sees the same runner
// rather than a removed one and a new one (upstream built a second taskscaler there and pruned
// instances that still ran jobs, issue 39380).

// tokenResetFactor is upstream's TokenResetIntervalFactor.
const tokenResetFactor = 0.75

// Retry back-off for a failed reset or save, and the bound of one reset request. Variables so that
// tests can shorten them.
var (
	rotationRetryMin = 10 * time.Second
	rotationRetryMax = 10 * time.Minute
	resetTimeout     = 2 * time.Minute
)

// rotationDue is when the token of c is to be reset, and false when it never expires. A token without
// token_obtained_at counts from firstSeen, when this process first saw it: the earliest time it is
// known to have existed.
func rotationDue(c config.RunnerCredentials, firstSeen time.Time) (time.Time, bool) {
	if c.TokenExpiresAt.IsZero() {
		return time.Time{}, false
	}
	obtained := c.TokenObtainedAt
	if obtained.IsZero() {
		obtained = firstSeen
	}
	life := c.TokenExpiresAt.Sub(obtained)
	return obtained.Add(time.Duration(tokenResetFactor * float64(life))), true
}

// retryDelay doubles from rotationRetryMin to rotationRetryMax with each failure, but leaves room for a
// few more tries before expires; it is jittered to [d/2, d].
func retryDelay(failures int, expires, now time.Time) time.Duration {
	d := rotationRetryMax
	if failures < 20 {
		d = min(rotationRetryMin<<max(failures-1, 0), rotationRetryMax)
	}
	if !expires.IsZero() {
		if left := expires.Sub(now) / 4; left < d {
			d = max(left, rotationRetryMin)
		}
	}
	half := d / 2
	return half + rand.N(half+1)
}

// rotation is the rotation loop's memory between wake-ups.
type rotation struct {
	firstSeen time.Time
	// failures counts failed resets of the current token; the next try is at retryAt.
	failures int
	retryAt  time.Time
	// refused is a token GitLab refused to reset (403); it is not tried again.
	refused string
	// saveFailures counts failed saves of config.toml; the next try is at saveAt.
	saveFailures int
	saveAt       time.Time
	// note is what was last logged about the schedule, so it is logged once per change.
	note string
}

// rotateLoop resets the runner token when it is due and saves the result, until the worker ends.
func (w *worker) rotateLoop() {
	defer w.done()
	r := &rotation{firstSeen: time.Now()}
	for {
		var timer *time.Timer
		var fire <-chan time.Time
		if next, ok := w.nextRotationStep(r); ok {
			timer = time.NewTimer(time.Until(next))
			fire = timer.C
		}
		select {
		case <-w.pollCtx.Done():
		case <-w.rotKick:
		case <-fire:
			w.rotationStep(r)
		}
		if timer != nil {
			timer.Stop()
		}
		if w.pollCtx.Err() != nil {
			// A rotated token that is not saved yet would be lost with the process: one last try.
			if w.isUnsaved() {
				w.save(r)
			}
			return
		}
	}
}

// nextRotationStep is when there is something to do, and false when nothing is scheduled: save the
// token, or reset it.
func (w *worker) nextRotationStep(r *rotation) (time.Time, bool) {
	rc := w.settings()
	note, due, ok := w.rotationSchedule(r, rc)
	if note != r.note {
		r.note = note
		w.logSchedule(note, rc, due)
	}
	if w.isUnsaved() && (!ok || r.saveAt.Before(due)) {
		return r.saveAt, true
	}
	return due, ok
}

// rotationSchedule says when the current token is to be reset (ok false: never) and names the
// schedule, for logging changes.
func (w *worker) rotationSchedule(r *rotation, rc *config.RunnerConfig) (note string, due time.Time, ok bool) {
	switch {
	case rc.TokenExpiresAt.IsZero():
		return "never expires", time.Time{}, false
	case rc.Token == r.refused:
		return "refused", time.Time{}, false
	case rc.FeatureFlag(config.FFDisableAutomaticTokenRotation):
		return "disabled " + rc.TokenExpiresAt.String(), time.Time{}, false
	}
	due, _ = rotationDue(rc.RunnerCredentials, r.firstSeen)
	if r.failures > 0 && r.retryAt.After(due) {
		return "retry", r.retryAt, true
	}
	return "due " + due.String(), due, true
}

// logSchedule logs a new schedule; a refusal and retries were logged where they happened.
func (w *worker) logSchedule(note string, rc *config.RunnerConfig, due time.Time) {
	switch {
	case note == "never expires":
		w.log.Debug("the runner token never expires; it is not rotated")
	case strings.HasPrefix(note, "disabled"):
		w.log.WithField("token_expires_at", rc.TokenExpiresAt).Warnf("automatic token rotation is off (%s): reset the runner token in GitLab and put the new one in config.toml before it expires", config.FFDisableAutomaticTokenRotation)
	case strings.HasPrefix(note, "due"):
		w.log.WithFields(logrus.Fields{"token_expires_at": rc.TokenExpiresAt, "rotate_at": due}).Info("the runner token is rotated automatically before it expires")
	}
}

// rotationStep does what is due: save a token not saved yet, reset a token.
func (w *worker) rotationStep(r *rotation) {
	now := time.Now()
	if w.isUnsaved() && !now.Before(r.saveAt) {
		w.save(r)
	}
	rc := w.settings()
	if _, due, ok := w.rotationSchedule(r, rc); ok && !now.Before(due) {
		w.rotate(r, rc)
	}
}

// rotate resets the token of rc. On success the runner uses the new token at once and config.toml is
// saved; a failure is retried with back-off, except a refusal, which needs the operator.
func (w *worker) rotate(r *rotation, rc *config.RunnerConfig) {
	w.mu.Lock()
	client := w.client
	w.mu.Unlock()
	// Only a forceful stop cuts a reset short: once GitLab answered, the old token is dead and the
	// answer is the only copy of the new one.
	ctx, cancel := context.WithTimeout(w.m.abortCtx, resetTimeout)
	defer cancel()
	resp, err := client.ResetToken(ctx, rc.Token)
	if err == nil && resp.Token == "" {
		err = errors.New("GitLab answered without a new token")
	}
	now := time.Now()
	if err != nil {
		if errors.Is(err, gitlab.ErrForbidden) {
			r.refused = rc.Token
			w.log.WithError(err).Error("GitLab refused to rotate the runner token: it was revoked or has expired. Register the runner again (fleetrunner register) and replace this entry's token in config.toml")
			return
		}
		r.failures++
		r.retryAt = now.Add(retryDelay(r.failures, rc.TokenExpiresAt, now))
		w.log.WithError(err).WithFields(logrus.Fields{"attempt": r.failures, "retry_at": r.retryAt, "token_expires_at": rc.TokenExpiresAt}).
			Warn("rotating the runner token failed; trying again")
		return
	}
	r.failures, r.retryAt = 0, time.Time{}
	creds := config.RunnerCredentials{Token: resp.Token, TokenObtainedAt: now.UTC().Truncate(time.Second), TokenExpiresAt: resp.TokenExpiresAt}
	w.m.tokenRotated(w, rc.Token, creds)
	w.log.WithFields(logrus.Fields{"new_token": ShortToken(resp.Token), "token_expires_at": resp.TokenExpiresAt}).Info("runner token rotated; the runner and its executor go on unchanged")
	w.save(r)
}

// tokenRotated makes the new token current: the worker and provider are re-keyed and the worker's
// settings carry the new credentials, all under mu so that a reload sees either the old or the new
// state. The worker then has credentials to save.
func (m *Manager) tokenRotated(w *worker, old string, creds config.RunnerCredentials) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.workers[old] == w {
		delete(m.workers, old)
		m.workers[creds.Token] = w
		if pe, ok := m.providers[old]; ok {
			delete(m.providers, old)
			m.providers[creds.Token] = pe
		}
	}
	for t, c := range m.rotated {
		if c.Token == old {
			m.rotated[t] = creds
		}
	}
	m.rotated[old] = creds

	w.mu.Lock()
	c := *w.cfg
	c.Token, c.TokenObtainedAt, c.TokenExpiresAt = creds.Token, creds.TokenObtainedAt, creds.TokenExpiresAt
	w.cfg = &c
	w.unsaved = true
	w.mu.Unlock()
}

// save writes the current credentials into config.toml; a failure is retried with back-off.
func (w *worker) save(r *rotation) {
	rc := w.settings()
	found, err := w.m.saveCredentials(rc.RunnerCredentials)
	now := time.Now()
	if err != nil {
		r.saveFailures++
		r.saveAt = now.Add(retryDelay(r.saveFailures, time.Time{}, now))
		w.log.WithError(err).WithField("retry_at", r.saveAt).Error("the rotated runner token is in use but not saved: a restart now would use the replaced token, which GitLab refuses; fix config.toml so that it loads")
		return
	}
	r.saveFailures, r.saveAt = 0, time.Time{}
	w.mu.Lock()
	if w.cfg.Token == rc.Token {
		w.unsaved = false
	}
	w.mu.Unlock()
	if !found {
		w.log.Warn("the runner left config.toml while its token was rotated; the new token is not saved")
		return
	}
	w.log.WithField("config", w.m.opts.ConfigPath).Info("rotated runner token saved")
}

// saveCredentials writes cur into config.toml: the file is read again and only the token,
// token_obtained_at and token_expires_at of entries carrying one of the runner's replaced tokens
// change, so edits made meanwhile survive. found is false when no entry carries the runner's old or
// current token.
func (m *Manager) saveCredentials(cur config.RunnerCredentials) (found bool, err error) {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	m.mu.Lock()
	replaced := map[string]bool{}
	for t, c := range m.rotated {
		if c.Token == cur.Token {
			replaced[t] = true
		}
	}
	m.mu.Unlock()

	path := m.opts.ConfigPath
	cfg, _, err := config.Load(path)
	if err != nil {
		return false, fmt.Errorf("reading config.toml again to save the rotated token: %w", err)
	}
	changed := false
	for _, rc := range cfg.Runners {
		switch {
		case replaced[rc.Token]:
			rc.Token, rc.TokenObtainedAt, rc.TokenExpiresAt = cur.Token, cur.TokenObtainedAt, cur.TokenExpiresAt
			changed, found = true, true
		case rc.Token == cur.Token:
			found = true
		}
	}
	if !changed {
		return found, nil
	}
	if err := config.Save(path, cfg); err != nil {
		return true, err
	}
	return true, nil
}

func (w *worker) isUnsaved() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unsaved
}

// markUnsaved asks the rotation loop to write the current token into config.toml again.
func (w *worker) markUnsaved() {
	w.mu.Lock()
	w.unsaved = true
	w.mu.Unlock()
	w.wakeRotation()
}

func (w *worker) wakeRotation() {
	select {
	case w.rotKick <- struct{}{}:
	default:
	}
}
