// Package trace is a job's log on its way to GitLab: it masks secrets (token prefixes and masked
// variable values, across write boundaries), repairs invalid UTF-8, enforces output_limit, writes
// section markers, keeps the CRC-32 of what it stored, streams the log incrementally with PATCH
// /jobs/:id/trace, keeps the job alive with PUTs while idle, reports GitLab's cancel and abort requests,
// and runs the final update sequence (spec gitlab-api.md §4, §5).
package trace

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"regexp"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
)

// Defaults (spec §4.2, §5.3).
const (
	DefaultUpdateInterval    = 3 * time.Second
	DefaultForceSendInterval = 30 * time.Second
	// maxPatchSize is upstream's DefaultTracePatchLimit.
	maxPatchSize      = 1 << 20
	maxUpdateInterval = 15 * time.Minute
	// maxPatchesPerTick bounds one tick's catch-up so that keep-alives and stop requests are not starved.
	maxPatchesPerTick = 64
)

// Errors of Finish.
var (
	// ErrAborted: GitLab said the job is gone (canceled, failed, 403); the final state was not accepted.
	ErrAborted = errors.New("job was aborted by GitLab")
	// ErrClosed is returned by writes after Finish.
	ErrClosed = errors.New("job log is closed")
)

// Network is the part of the GitLab client the trace uses.
type Network interface {
	UpdateJob(ctx context.Context, jc gitlab.JobCredentials, u gitlab.UpdateJobInfo) gitlab.UpdateJobResult
	PatchTrace(ctx context.Context, jc gitlab.JobCredentials, content []byte, startOffset int, debugTrace bool) gitlab.PatchTraceResult
}

// Options configure a Trace.
type Options struct {
	// MaskPhrases are the masked variable values (job.Variables.MaskedValues()).
	MaskPhrases []string
	// TokenPrefixes come from features.token_mask_prefixes; glpat-, glrt- and glcbt- are always masked.
	TokenPrefixes []string
	// OutputLimit in bytes: the runner's output_limit as config resolves it
	// (config.RunnerConfig.GetOutputLimit); 0 = no limit.
	OutputLimit int
	// UpdateInterval is the PATCH cadence; 0 = 3 s. GitLab's X-GitLab-Trace-Update-Interval replaces it.
	UpdateInterval time.Duration
	// ForceSendInterval: a keep-alive PUT is sent when nothing was sent for this long; 0 = 30 s.
	ForceSendInterval time.Duration
	DebugTrace        bool
	// FinalUpdateRetryLimit bounds the retries after failed requests of Finish (runner setting
	// job_status_final_update_retry_limit); 0 retries until Finish's context ends. GitLab's 202
	// ("still processing the log") is not a failure.
	FinalUpdateRetryLimit int
	Logger                logrus.FieldLogger
	// Sleep waits between final-update attempts; nil = a real, context-aware sleep.
	Sleep func(ctx context.Context, d time.Duration) error
	// Continue appends to a log an earlier process wrote (a job recovered after a crash): this log's
	// bytes follow whatever GitLab holds, learned from its first 416 answer. The earlier bytes' CRC is
	// unknown, so the final update then carries the total size but no checksum.
	Continue bool
}

// Trace is one job's log. Its writing methods are safe for concurrent use.
type Trace struct {
	net  Network
	jc   gitlab.JobCredentials
	opts Options
	log  logrus.FieldLogger

	mu        sync.Mutex
	sanitizer *tokenSanitizer
	masker    *phraseMasker
	fixer     utf8Fixer
	s1, s2    []byte
	s3        []byte
	buf       []byte
	crc       hash.Hash32
	limitHit  bool
	closed    bool

	// Sender state: owned by the PATCH loop while it runs, then by Finish. stopLoop and loopDone are
	// set under mu by Start.
	sent int
	// base is how many bytes GitLab held before this log's first byte (Options.Continue).
	base     int
	interval time.Duration
	lastSend time.Time

	canceling, aborted    chan struct{}
	cancelOnce, abortOnce sync.Once
	stopLoop              context.CancelFunc
	loopDone              chan struct{}
	finishMu              sync.Mutex
	finished              bool
}

// New makes the log of job jc. Call Start to stream it and Finish to end it.
func New(net Network, jc gitlab.JobCredentials, o Options) *Trace {
	if o.UpdateInterval <= 0 {
		o.UpdateInterval = DefaultUpdateInterval
	}
	if o.ForceSendInterval <= 0 {
		o.ForceSendInterval = DefaultForceSendInterval
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	log := logging.Or(o.Logger)
	return &Trace{
		net:       net,
		jc:        jc,
		opts:      o,
		log:       log.WithField("job", jc.ID),
		sanitizer: newTokenSanitizer(o.TokenPrefixes),
		masker:    newPhraseMasker(o.MaskPhrases),
		crc:       crc32.NewIEEE(),
		interval:  o.UpdateInterval,
		canceling: make(chan struct{}),
		aborted:   make(chan struct{}),
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Write masks p and appends it to the log. It never fails before Finish, also not past the output limit
// (the job keeps running; its output is dropped).
func (t *Trace) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, ErrClosed
	}
	t.process(p, false)
	return len(p), nil
}

// process runs the pipeline: token prefixes, masked phrases, UTF-8 repair, output limit, buffer + CRC.
func (t *Trace) process(p []byte, final bool) {
	if t.limitHit {
		return
	}
	t.s1 = t.sanitizer.process(t.s1[:0], p, final)
	t.s2 = t.masker.process(t.s2[:0], t.s1, final)
	t.s3 = t.fixer.process(t.s3[:0], t.s2, final)
	t.store(t.s3)
	// A huge single write must not pin its scratch buffers for the rest of the job.
	if cap(t.s1) > maxPatchSize {
		t.s1, t.s2, t.s3 = nil, nil, nil
	}
}

func (t *Trace) store(b []byte) {
	if len(b) == 0 {
		return
	}
	if remaining := t.opts.OutputLimit - len(t.buf); t.opts.OutputLimit > 0 && len(b) > remaining {
		cut := max(remaining, 0)
		for cut > 0 && !utf8.RuneStart(b[cut]) {
			cut--
		}
		b = append(b[:cut:cut], fmt.Sprintf("\n\x1b[33;1mJob's log exceeded limit of %d bytes.\x1b[0;m\n"+
			"\x1b[33;1mJob execution will continue but no more output will be collected.\x1b[0;m\n", t.opts.OutputLimit)...)
		t.limitHit = true
	}
	t.buf = append(t.buf, b...)
	_, _ = t.crc.Write(b)
}

// sectionName keeps GitLab's allowed characters ([a-zA-Z0-9_.-]) and an optional [key=value,...] suffix.
var sectionOptions = regexp.MustCompile(`\[[a-zA-Z0-9_]+=[a-zA-Z0-9_]+(,[a-zA-Z0-9_]+=[a-zA-Z0-9_]+)*\]$`)

func sectionName(name string) (base, opts string) {
	if loc := sectionOptions.FindStringIndex(name); loc != nil {
		name, opts = name[:loc[0]], name[loc[0]:]
	}
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		b = []byte("section")
	}
	return string(b), opts
}

// SectionStart opens a collapsible section; name may end in options such as [collapsed=true].
func (t *Trace) SectionStart(name, header string) {
	base, opts := sectionName(name)
	_, _ = fmt.Fprintf(t, "\x1b[0Ksection_start:%d:%s%s\r\x1b[0K%s\n", time.Now().Unix(), base, opts, header)
}

// SectionEnd closes a section opened by SectionStart.
func (t *Trace) SectionEnd(name string) {
	base, _ := sectionName(name)
	_, _ = fmt.Fprintf(t, "\x1b[0Ksection_end:%d:%s\r\x1b[0K", time.Now().Unix(), base)
}

// ANSI colours of runner messages, as upstream prints them.
const (
	ansiBoldGreen = "\x1b[32;1m"
	ansiYellow    = "\x1b[0;33m"
	ansiBoldRed   = "\x1b[31;1m"
	ansiReset     = "\x1b[0;m"
)

// Infof writes a green runner line.
func (t *Trace) Infof(format string, args ...any) {
	_, _ = fmt.Fprintf(t, ansiBoldGreen+format+ansiReset+"\n", args...)
}

// Warnf writes a yellow WARNING line.
func (t *Trace) Warnf(format string, args ...any) {
	_, _ = fmt.Fprintf(t, ansiYellow+"WARNING: "+format+ansiReset+"\n", args...)
}

// Errorf writes a red ERROR line.
func (t *Trace) Errorf(format string, args ...any) {
	_, _ = fmt.Fprintf(t, ansiBoldRed+"ERROR: "+format+ansiReset+"\n", args...)
}

// Checksum is `crc32:%08x` of the stored log.
func (t *Trace) Checksum() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("crc32:%08x", t.crc.Sum32())
}

// Size is the stored log's length in bytes.
func (t *Trace) Size() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(len(t.buf))
}

// Bytes returns a copy of the stored log (what GitLab receives).
func (t *Trace) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}

// Canceling is closed when GitLab asks for a graceful cancel (Job-Status: canceling).
func (t *Trace) Canceling() <-chan struct{} { return t.canceling }

// Aborted is closed when GitLab says the job is gone: Job-Status canceled/failed, a 403, or a 404 on PUT.
func (t *Trace) Aborted() <-chan struct{} { return t.aborted }

func (t *Trace) markCanceling() {
	t.cancelOnce.Do(func() {
		t.log.Info("GitLab asked to cancel the job gracefully")
		close(t.canceling)
	})
}

func (t *Trace) markAborted() {
	t.abortOnce.Do(func() {
		t.log.Warn("GitLab says the job is no longer running; aborting it")
		close(t.aborted)
	})
}

func (t *Trace) isAborted() bool {
	select {
	case <-t.aborted:
		return true
	default:
		return false
	}
}

// pending returns a copy of the next unsent chunk (at most 1 MiB) and the stored size.
func (t *Trace) pending() ([]byte, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sent >= len(t.buf) {
		return nil, len(t.buf)
	}
	end := min(len(t.buf), t.sent+maxPatchSize)
	return append([]byte(nil), t.buf[t.sent:end]...), len(t.buf)
}

func (t *Trace) setInterval(d time.Duration) {
	if d > 0 {
		t.interval = min(d, maxUpdateInterval)
	}
}

// patchOnce sends the next chunk. It reports whether another chunk should follow right away.
func (t *Trace) patchOnce(ctx context.Context) (more bool, res gitlab.PatchTraceResult) {
	chunk, _ := t.pending()
	if len(chunk) == 0 {
		return false, gitlab.PatchTraceResult{State: gitlab.PatchSucceeded, SentOffset: t.sent}
	}
	res = t.net.PatchTrace(ctx, t.jc, chunk, t.base+t.sent, t.opts.DebugTrace)
	t.setInterval(res.NewUpdateInterval)
	if res.CancelRequested {
		t.markCanceling()
	}
	switch res.State {
	case gitlab.PatchSucceeded:
		t.sent = res.SentOffset - t.base
		t.lastSend = time.Now()
		return true, res
	case gitlab.PatchRangeMismatch:
		if t.opts.Continue && t.base == 0 && t.sent == 0 && res.SentOffset > 0 {
			// The earlier process's bytes: this log goes after them.
			t.base = res.SentOffset
			t.log.WithField("gitlab_size", res.SentOffset).Debug("continuing the log an earlier process wrote")
			return true, res
		}
		// GitLab holds res.SentOffset bytes: continue from there, backwards too, so no gap is left.
		t.log.WithFields(logrus.Fields{"sent": t.base + t.sent, "gitlab_size": res.SentOffset}).Warn("trace range mismatch, resending from GitLab's size")
		prev := t.sent
		t.sent = max(res.SentOffset-t.base, 0)
		return t.sent != prev, res
	case gitlab.PatchAbort:
		t.markAborted()
	}
	return false, res
}

// Start begins streaming the log every update interval, with keep-alive PUTs while idle. It does
// nothing after Finish or when already started.
func (t *Trace) Start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.stopLoop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.stopLoop = cancel
	t.loopDone = make(chan struct{})
	t.lastSend = time.Now()
	go t.loop(ctx)
}

func (t *Trace) loop(ctx context.Context) {
	defer close(t.loopDone)
	timer := time.NewTimer(t.interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		for range maxPatchesPerTick {
			more, _ := t.patchOnce(ctx)
			if !more || ctx.Err() != nil {
				break
			}
		}
		if t.isAborted() {
			return
		}
		if time.Since(t.lastSend) >= t.opts.ForceSendInterval && ctx.Err() == nil {
			t.keepAlive(ctx)
			if t.isAborted() {
				return
			}
		}
		timer.Reset(t.interval)
	}
}

func (t *Trace) output() gitlab.JobOutput {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.base > 0 {
		return gitlab.JobOutput{Bytesize: int64(t.base + len(t.buf))}
	}
	return gitlab.JobOutput{Checksum: fmt.Sprintf("crc32:%08x", t.crc.Sum32()), Bytesize: int64(len(t.buf))}
}

// keepAlive sends PUT state=running so GitLab does not drop a quiet job as stuck.
func (t *Trace) keepAlive(ctx context.Context) {
	res := t.net.UpdateJob(ctx, t.jc, gitlab.UpdateJobInfo{State: gitlab.JobRunning, Output: t.output()})
	t.setInterval(res.NewUpdateInterval)
	if res.CancelRequested {
		t.markCanceling()
	}
	switch res.State {
	case gitlab.UpdateSucceeded:
		t.lastSend = time.Now()
	case gitlab.UpdateAbort, gitlab.UpdateNotFound:
		t.markAborted()
	}
}

// Finish ends the log and reports the job's final state (spec §4.4): it sends all remaining output
// until GitLab acknowledged it, then PUTs the state with the log's checksum and size; 202 repeats after
// GitLab's interval, 412 resends the whole log, other failures retry until ctx ends (or
// FinalUpdateRetryLimit is spent). It returns ErrAborted when GitLab said the job is gone, and ctx's
// error when it ran out of time.
func (t *Trace) Finish(ctx context.Context, state gitlab.JobState, reason job.FailureReason, exitCode int) error {
	t.finishMu.Lock()
	defer t.finishMu.Unlock()
	if t.finished {
		return errors.New("trace: Finish called twice")
	}
	t.finished = true

	t.mu.Lock()
	t.process(nil, true)
	t.closed = true
	stop, done := t.stopLoop, t.loopDone
	t.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	if t.isAborted() {
		return ErrAborted
	}
	u := gitlab.UpdateJobInfo{State: state, ExitCode: exitCode}
	if state == gitlab.JobFailed {
		u.FailureReason = reason
	}
	log := t.log.WithField("state", state)
	retries := &retryBudget{limit: t.opts.FinalUpdateRetryLimit}
	for {
		if err := t.flush(ctx, retries); err != nil {
			return err
		}
		u.Output = t.output()
		res := t.net.UpdateJob(ctx, t.jc, u)
		if res.CancelRequested {
			t.markCanceling()
		}
		wait := t.opts.UpdateInterval
		switch res.State {
		case gitlab.UpdateSucceeded:
			return nil
		case gitlab.UpdateAcceptedButNotCompleted:
			if res.NewUpdateInterval > 0 {
				wait = min(res.NewUpdateInterval, maxUpdateInterval)
			}
			log.WithField("wait", wait).Debug("GitLab is still processing the log, repeating the final update")
		case gitlab.UpdateTraceValidationFailed:
			log.Warn("GitLab could not validate the log, sending all of it again")
			t.sent = 0
			continue
		case gitlab.UpdateNotFound:
			t.markAborted()
			return fmt.Errorf("final update of job %d: %w", t.jc.ID, gitlab.ErrNotFound)
		case gitlab.UpdateAbort:
			t.markAborted()
			return ErrAborted
		default:
			if err := retries.spend(); err != nil {
				return fmt.Errorf("final update of job %d: %w", t.jc.ID, err)
			}
			log.WithField("wait", wait).Warn("final update failed, retrying")
		}
		if err := t.opts.Sleep(ctx, wait); err != nil {
			return fmt.Errorf("final update of job %d did not complete: %w", t.jc.ID, err)
		}
	}
}

// retryBudget counts the failed requests of Finish against FinalUpdateRetryLimit.
type retryBudget struct {
	limit, used int
}

func (b *retryBudget) spend() error {
	b.used++
	if b.limit > 0 && b.used > b.limit {
		return fmt.Errorf("giving up after %d retries (job_status_final_update_retry_limit)", b.limit)
	}
	return nil
}

// flush sends everything not yet acknowledged. A 404 gives up on the log (the PUT follows anyway).
func (t *Trace) flush(ctx context.Context, retries *retryBudget) error {
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("sending the log of job %d: %w", t.jc.ID, err)
		}
		more, res := t.patchOnce(ctx)
		if more {
			continue
		}
		switch res.State {
		case gitlab.PatchSucceeded, gitlab.PatchNotFound:
			return nil
		case gitlab.PatchAbort:
			return ErrAborted
		}
		if err := retries.spend(); err != nil {
			return fmt.Errorf("sending the log of job %d: %w", t.jc.ID, err)
		}
		if err := t.opts.Sleep(ctx, t.opts.UpdateInterval); err != nil {
			return fmt.Errorf("sending the log of job %d: %w", t.jc.ID, err)
		}
	}
}
