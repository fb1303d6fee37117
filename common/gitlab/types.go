package gitlab

import (
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// JobCredentials address one running job: its ID and job token.
type JobCredentials struct {
	ID    int64
	Token string
}

// JobState is the `state` of PUT /jobs/:id.
type JobState string

// Job states a runner sends.
const (
	JobPending JobState = "pending"
	JobRunning JobState = "running"
	JobSuccess JobState = "success"
	JobFailed  JobState = "failed"
)

// JobOutput is the checksum ("crc32:%08x") and size of the log as sent.
type JobOutput struct {
	Checksum string `json:"checksum,omitempty"`
	Bytesize int64  `json:"bytesize,omitempty"`
}

// UpdateJobInfo is what a PUT /jobs/:id reports.
type UpdateJobInfo struct {
	State         JobState
	FailureReason job.FailureReason
	ExitCode      int
	Output        JobOutput
}

// UpdateState is the runner's reading of a PUT /jobs/:id answer (spec gitlab-api.md §1.8).
type UpdateState int

// Update outcomes.
const (
	UpdateSucceeded UpdateState = iota
	// UpdateAcceptedButNotCompleted (202): resend the same final state after NewUpdateInterval.
	UpdateAcceptedButNotCompleted
	// UpdateTraceValidationFailed (412): resend the whole log, then PUT again.
	UpdateTraceValidationFailed
	// UpdateNotFound (404): the job is unknown; abort.
	UpdateNotFound
	// UpdateAbort (403, or Job-Status canceled/failed on anything but a 200 to a final state): abort the job.
	UpdateAbort
	// UpdateFailed (other statuses, transport errors): retry after the update interval.
	UpdateFailed
)

// UpdateJobResult is the outcome of a PUT /jobs/:id.
type UpdateJobResult struct {
	State UpdateState
	// CancelRequested is true when GitLab answered Job-Status: canceling.
	CancelRequested bool
	// NewUpdateInterval is X-GitLab-Trace-Update-Interval when > 0, else 0.
	NewUpdateInterval time.Duration
}

// PatchState is the runner's reading of a PATCH /jobs/:id/trace answer (spec gitlab-api.md §1.9).
type PatchState int

// Patch outcomes.
const (
	PatchSucceeded PatchState = iota
	// PatchNotFound (404): try again next tick.
	PatchNotFound
	// PatchRangeMismatch (416): continue from SentOffset, which is GitLab's stored size.
	PatchRangeMismatch
	// PatchAbort (403, Job-Status canceled/failed): abort the job.
	PatchAbort
	// PatchFailed (transport error, other statuses): retry after the interval.
	PatchFailed
)

// PatchTraceResult is the outcome of one PATCH /jobs/:id/trace.
type PatchTraceResult struct {
	// SentOffset is the number of log bytes GitLab holds after this call.
	SentOffset      int
	CancelRequested bool
	State           PatchState
	// NewUpdateInterval is X-GitLab-Trace-Update-Interval when > 0, else 0.
	NewUpdateInterval time.Duration
}
