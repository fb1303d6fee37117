package manager

import (
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/trace"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// reportRecovered fails, at once, the jobs a previous manager process was running when it stopped, so
// they don't sit in GitLab until its timeout. Their instances were already dealt with by the provider.
func (w *worker) reportRecovered() {
	defer w.done()
	w.mu.Lock()
	client := w.client
	w.mu.Unlock()
	rec, ok := w.provider.(executors.Recoverer)
	if !ok {
		return
	}
	outputLimit := int(w.settings().GetOutputLimit())
	for _, rj := range rec.RecoveredJobs() {
		log := w.log.WithFields(logrus.Fields{"job": rj.ID, "instance": rj.Instance})
		tr := trace.New(client, gitlab.JobCredentials{ID: rj.ID, Token: rj.Token}, trace.Options{
			MaskPhrases: []string{rj.Token},
			OutputLimit: outputLimit,
			Logger:      log,
			// The job may have written output before the crash: the message goes after it.
			Continue: true,
		})
		tr.Start()
		// The interrupted output may end mid-line.
		_, _ = tr.Write([]byte("\n"))
		switch {
		case rj.Instance != "":
			tr.Errorf("Job failed (system failure): the runner manager stopped while this job was running on instance %s; the job cannot be resumed, retry it", rj.Instance)
		case rj.Ended:
			tr.Errorf("Job failed (system failure): the runner manager stopped after this job ended but before its final state reached GitLab; its outcome is unknown, retry it")
		default:
			tr.Errorf("Job failed (system failure): the runner manager stopped before this job got an instance; it did not run, retry it")
		}
		if err := tr.Finish(w.m.finishCtx, gitlab.JobFailed, job.RunnerSystemFailure, 0); err != nil {
			// GitLab may already have dropped the job; it is still forgotten so it is not reported forever.
			log.WithError(err).Warn("could not report a job interrupted by the previous manager process")
		} else {
			log.Warn("reported a job interrupted by the previous manager process as failed")
		}
		if rj.Done != nil {
			rj.Done()
		}
	}
}
