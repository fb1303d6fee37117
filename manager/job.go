package manager

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/history"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/trace"
	"gitlab.com/fleetrunner/fleetrunner/common/version"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// runJob runs one job GitLab handed out and reports its final state. decodeErr is set when the payload
// was malformed: the job is then failed with runner_system_failure without reaching the executor.
func (w *worker) runJob(client *gitlab.Client, res executors.Reservation, j *job.Job, decodeErr error) {
	rc := w.settings()
	log := w.log.WithFields(logrus.Fields{"job": j.ID, "project": j.JobInfo.ProjectID})
	log.WithField("job_name", j.JobInfo.Name).Info("job received")

	tr := trace.New(client, gitlab.JobCredentials{ID: j.ID, Token: j.Token}, trace.Options{
		MaskPhrases:   j.Variables.MaskedValues(),
		TokenPrefixes: j.Features.TokenMaskPrefixes,
		OutputLimit:   int(rc.GetOutputLimit()),
		DebugTrace:    j.Variables.Bool("CI_DEBUG_TRACE") && !rc.DebugTraceDisabled,
		// 0 (unset) keeps retrying the final update until the runner stops.
		FinalUpdateRetryLimit: rc.JobStatusFinalUpdateRetryLimit,
		Logger:                log,
	})
	tr.Start()
	tr.Infof("Running with fleetrunner %s (%s)", version.Version, version.Rev())
	tr.Infof("  on %s %s, system ID: %s", rc.Name, ShortToken(rc.Token), w.m.opts.SystemID)
	received := time.Now()
	queued := time.Duration(j.JobInfo.TimeInQueueSecs * float64(time.Second))
	obs := &stageClock{JobObserver: w.m.opts.Observer.JobStarted(JobInfo{
		Runner: w.m.runnerInfo(rc), ID: j.ID, Name: j.JobInfo.Name, Project: j.JobInfo.ProjectFullPath, URL: jobURL(j),
		QueueDuration: queued, QueuingExceeded: queuingExceeded(rc, j, queued, received),
	})}
	defer w.recordHistory(log, rc, j, received.Add(-queued), obs)

	if decodeErr != nil {
		res.Unreserve()
		log.WithError(decodeErr).Error("GitLab sent a job payload that cannot be read; failing the job")
		tr.Errorf("Job failed (system failure): the job payload from GitLab could not be read: %v", decodeErr)
		w.finish(log, tr, obs, gitlab.JobFailed, job.RunnerSystemFailure, 0)
		return
	}

	// The manager alone decides when a job ends: the payload's timeout, GitLab's graceful cancel and
	// GitLab dropping the job. The executor only obeys these contexts.
	ctx, canceling, stop := executors.NewJobContext(w.m.abortCtx, time.Duration(j.TimeoutSeconds())*time.Second, tr.Canceling(), tr.Aborted())
	defer stop()

	started := time.Now()
	b := &executors.Build{
		Job:       j,
		Runner:    rc,
		Log:       stageLog{JobLog: tr, obs: obs},
		Logger:    log,
		Canceling: canceling,
		SystemID:  w.m.opts.SystemID,
	}
	err := w.execute(ctx, res, b)
	log = log.WithField("duration_s", time.Since(started).Seconds())

	if err == nil {
		log.Info("job succeeded")
		tr.Infof("Job succeeded")
		w.reported(b, w.finish(log, tr, obs, gitlab.JobSuccess, "", 0))
		return
	}
	reason, exitCode := job.Failure(err)
	var timedOut *executors.TimeoutError
	switch {
	case isClosed(tr.Aborted()):
		reason = job.JobCanceled
		log.Warn("job aborted: GitLab no longer runs it (canceled or failed on the server)")
	case w.m.abortCtx.Err() != nil:
		reason = job.RunnerSystemFailure
		tr.Errorf("Job failed (system failure): aborted: the runner is shutting down")
		log.Warn("job aborted: the runner is shutting down")
	case errors.As(context.Cause(ctx), &timedOut):
		reason = job.JobExecutionTimeout
		tr.Errorf("Job failed: %v", timedOut)
		log.Warn("job timed out")
	case reason == job.RunnerSystemFailure:
		tr.Errorf("Job failed (system failure): %v", err)
		log.WithError(err).Error("job failed (system failure)")
	default:
		tr.Errorf("Job failed: %v", err)
		log.WithError(err).WithField("exit_code", exitCode).Info("job failed")
	}
	w.reported(b, w.finish(log, tr, obs, gitlab.JobFailed, j.ReasonFor(reason), exitCode))
}

// stageClock notes when the executor opened the job's first stage: the job held its slot from then on,
// so the job history's duration leaves out the wait for an instance.
type stageClock struct {
	JobObserver
	first atomic.Int64 // Unix nanoseconds, 0 before the first stage
}

func (s *stageClock) Stage(name string) {
	s.first.CompareAndSwap(0, time.Now().UnixNano())
	s.JobObserver.Stage(name)
}

// recordHistory appends the job to the runner's job history (common/history). A job that never
// reached a stage is kept with duration 0: it still arrived. The history is a convenience: a failure
// to write it is a warning, never the job's failure.
func (w *worker) recordHistory(log logrus.FieldLogger, rc *config.RunnerConfig, j *job.Job, created time.Time, sc *stageClock) {
	var ran time.Duration
	if first := sc.first.Load(); first != 0 {
		ran = time.Since(time.Unix(0, first))
	}
	path := filepath.Join(rc.StateDir(filepath.Dir(w.m.opts.ConfigPath)), history.FileName(rc.ID, ShortToken(rc.Token)))
	rec := history.Record{Created: created, Duration: ran, Pipeline: j.Variables.Get("CI_PIPELINE_ID"), Runner: rc.Name, JobID: j.ID}
	if err := w.m.history.Append(path, rec); err != nil {
		log.WithError(err).Warn("could not add the job to the job history; simulate and tune will miss it")
	}
}

// reported tells a provider that keeps each job on record until GitLab has its final state (so that a
// crash in between still gets the job reported after a restart) that it may drop the record.
func (w *worker) reported(b *executors.Build, done bool) {
	if fo, ok := w.provider.(executors.FinalStateObserver); ok && done {
		fo.FinalStateSent(b)
	}
}

// execute runs the job on the provider; a panicking executor fails its job, not the process.
func (w *worker) execute(ctx context.Context, res executors.Reservation, b *executors.Build) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("executor crashed: %v", p)
		}
	}()
	return w.provider.Run(ctx, res, b)
}

// finish tells the observer the outcome, then sends the rest of the log and the final state. It returns
// false when GitLab may still think the job runs (the final update did not get through before the
// runner had to stop).
func (w *worker) finish(log logrus.FieldLogger, tr *trace.Trace, obs JobObserver, state gitlab.JobState, reason job.FailureReason, exitCode int) bool {
	obs.Finished(reason)
	err := tr.Finish(w.m.finishCtx, state, reason, exitCode)
	switch {
	case errors.Is(err, trace.ErrAborted):
		log.WithError(err).Info("GitLab no longer runs the job; final state not needed")
		return true
	case err != nil:
		log.WithError(err).Warn("could not report the job's final state to GitLab")
		return false
	}
	log.WithFields(logrus.Fields{"state": state, "failure_reason": reason, "exit_code": exitCode}).Debug("job reported")
	return true
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// queuingExceeded decides, as upstream does when a job is received, whether the job waited in GitLab's
// queue longer than the runner's job_queuing_durations entry in force at now allows. Without an entry
// in force nothing is exceeded.
func queuingExceeded(rc *config.RunnerConfig, j *job.Job, queued time.Duration, now time.Time) bool {
	th, ok := rc.ActiveJobQueuingThreshold(now)
	if !ok || queued <= th.Threshold {
		return false
	}
	return th.JobsRunningForProject == nil || th.JobsRunningForProject.MatchString(j.JobInfo.ProjectJobsRunningOnInstanceRunners)
}
