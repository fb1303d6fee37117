package dockerautoscaler

import (
	"encoding/json"
	"fmt"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/executors"
)

var (
	_ executors.Recoverer          = (*Provider)(nil)
	_ executors.FinalStateObserver = (*Provider)(nil)
)

// A job is on record in the taskscaler's state file from before it acquires a slot until GitLab has
// its final state, so that a crash at any point gets it reported failed after a restart instead of
// left to GitLab's timeout: first under its slot's key, then, once the slot is released, as ended
// under reportKey until FinalStateSent.

// recordRunning puts the job on record before it runs.
func (p *Provider) recordRunning(key string, b *executors.Build, log logrus.FieldLogger) {
	blob, _ := json.Marshal(recoveredBlob{JobID: b.Job.ID, Token: b.Job.Token, URL: p.runner.URL})
	if err := p.ts.RecordJob(key, b.Job.ID, blob); err != nil {
		log.WithError(err).Warn("could not record the job in the state file; if fleetrunner crashes now, GitLab's timeout ends the job")
	}
}

// recordEnded keeps the job on record, marked ended, until FinalStateSent; Run calls it before the
// running record goes, so that the state file never lacks the job.
func (p *Provider) recordEnded(b *executors.Build, log logrus.FieldLogger) {
	ended, _ := json.Marshal(recoveredBlob{JobID: b.Job.ID, Token: b.Job.Token, URL: p.runner.URL, Ended: true})
	if err := p.ts.RecordJob(reportKey(b.Job.ID), b.Job.ID, ended); err != nil {
		log.WithError(err).Warn("could not record the finished job in the state file; if fleetrunner crashes before its final update, GitLab's timeout ends the job")
	}
}

// FinalStateSent implements executors.FinalStateObserver: GitLab has the job's final state, so its
// record can go.
func (p *Provider) FinalStateSent(b *executors.Build) {
	p.ts.ForgetJob(reportKey(b.Job.ID))
}

// reportKey is the state-file key of a job whose slot is released but whose final state may not have
// reached GitLab yet.
func reportKey(jobID int64) string { return fmt.Sprintf("report-%d", jobID) }

// recoveredBlob is what RecordJob keeps per job, enough to report it failed after a crash. The job
// token is a secret; it lives only in the state file (mode 0600), like upstream's state storage.
type recoveredBlob struct {
	JobID int64  `json:"job_id"`
	Token string `json:"job_token"`
	URL   string `json:"gitlab_url"`
	// Ended marks the record kept after the job finished, until its final state reached GitLab.
	Ended bool `json:"ended,omitempty"`
}

// RecoveredJobs implements executors.Recoverer: jobs that were running when the previous process
// stopped. Done forgets one once it was reported.
func (p *Provider) RecoveredJobs() []executors.RecoveredJob {
	var out []executors.RecoveredJob
	for _, r := range p.ts.RecoveredAcquisitions() {
		var b recoveredBlob
		if err := json.Unmarshal(r.Data, &b); err != nil || b.Token == "" {
			p.log.WithFields(logrus.Fields{"job": r.JobID, "instance": r.InstanceID}).
				Warn("a job in flight at the last stop has no usable record; it cannot be reported failed and is left to GitLab's timeout")
			p.ts.ForgetRecovered(r.Key)
			continue
		}
		key := r.Key
		out = append(out, executors.RecoveredJob{
			ID: b.JobID, Token: b.Token, URL: b.URL, Instance: r.InstanceID, Ended: b.Ended,
			Done: func() { p.ts.ForgetRecovered(key) },
		})
	}
	return out
}
