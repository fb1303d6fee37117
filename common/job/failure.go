package job

import (
	"errors"
	"fmt"
	"slices"
)

// FailureReason is what a runner reports to GitLab with a failed job (spec gitlab-api.md §3).
type FailureReason string

// Failure reasons fleetrunner sends or maps.
const (
	ScriptFailure          FailureReason = "script_failure"
	RunnerSystemFailure    FailureReason = "runner_system_failure"
	JobExecutionTimeout    FailureReason = "job_execution_timeout"
	UnknownFailure         FailureReason = "unknown_failure"
	ImagePullFailure       FailureReason = "image_pull_failure"
	ConfigurationError     FailureReason = "configuration_error"
	RunnerUnsupported      FailureReason = "runner_unsupported"
	JobCanceled            FailureReason = "job_canceled"
	RunnerConfigurationErr FailureReason = "runner_configuration_error"
)

// alwaysSupported are accepted by every GitLab version.
var alwaysSupported = []FailureReason{ScriptFailure, RunnerSystemFailure, JobExecutionTimeout}

// compatibility maps runner-internal reasons to ones an older GitLab knows.
var compatibility = map[FailureReason]FailureReason{
	ImagePullFailure:   RunnerSystemFailure,
	ConfigurationError: ScriptFailure,
}

// ReasonFor returns the reason to send to GitLab: as-is when the job's payload lists it (or it is one
// of the three every GitLab knows), otherwise through the compatibility table, otherwise unknown_failure.
// An empty reason on a failed job means script_failure.
func (j *Job) ReasonFor(r FailureReason) FailureReason {
	if r == "" {
		return ScriptFailure
	}
	supported := func(r FailureReason) bool {
		return slices.Contains(alwaysSupported, r) || slices.Contains(j.Features.FailureReasons, string(r))
	}
	if supported(r) {
		return r
	}
	if m, ok := compatibility[r]; ok && supported(m) {
		return m
	}
	return UnknownFailure
}

// BuildError is a job failure with the reason and exit code to report. Executors return it (wrapped
// or not) from Run; any other error is a runner_system_failure.
type BuildError struct {
	Reason   FailureReason
	ExitCode int
	Err      error
}

func (e *BuildError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("job failed: %s", e.Reason)
	}
	return e.Err.Error()
}

func (e *BuildError) Unwrap() error { return e.Err }

// Failure classifies an error returned by an executor: the reason and exit code to send to GitLab.
func Failure(err error) (FailureReason, int) {
	if err == nil {
		return "", 0
	}
	var be *BuildError
	if errors.As(err, &be) {
		return be.Reason, be.ExitCode
	}
	return RunnerSystemFailure, 0
}
