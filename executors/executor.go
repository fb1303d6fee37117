// Package executors defines what the manager hands a job to, and picks an implementation by the
// `executor` name of a [[runners]] entry.
package executors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// ErrNoCapacity is returned by Provider.Reserve when the runner cannot take a job now; the manager then
// does not ask GitLab for one this round.
var ErrNoCapacity = errors.New("no free executor capacity")

// Why a job's contexts end, as context.Cause tells it. The manager alone decides a job's deadline and
// its cancellation (NewJobContext); an executor obeys the contexts it is given and reads these causes to
// report the failure reason.
var (
	// ErrCanceled ends Build.Canceling: GitLab asked for a graceful cancel (Job-Status: canceling).
	ErrCanceled = errors.New("job canceled")
	// ErrAborted ends Run's context: GitLab no longer runs the job (canceled or failed on the server).
	ErrAborted = errors.New("GitLab no longer runs the job")
)

// TimeoutError ends Run's context when the job ran longer than its timeout.
type TimeoutError struct {
	Timeout time.Duration
}

func (e *TimeoutError) Error() string { return fmt.Sprintf("execution took longer than %s", e.Timeout) }

// NewJobContext derives the contexts one job runs under from parent. ctx, for Run, ends with a
// *TimeoutError once timeout has passed and with ErrAborted once aborted is closed. canceling, for
// Build.Canceling, ends with ErrCanceled once canceling is closed; it does not end with ctx, so that it
// says only that GitLab asked for a graceful cancel. A nil channel never closes. Call stop when the job
// is over.
func NewJobContext(parent context.Context, timeout time.Duration, canceling, aborted <-chan struct{}) (ctx, cancelCtx context.Context, stop func()) {
	ctx, abort := context.WithCancelCause(parent)
	ctx, stopTimer := context.WithTimeoutCause(ctx, timeout, &TimeoutError{Timeout: timeout})
	cancelCtx, cancelGracefully := context.WithCancelCause(context.WithoutCancel(ctx))
	go func() {
		for {
			select {
			case <-canceling:
				cancelGracefully(ErrCanceled)
				canceling = nil
			case <-aborted:
				abort(ErrAborted)
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, cancelCtx, func() {
		stopTimer()
		abort(nil)
		cancelGracefully(nil)
	}
}

// JobLog is the job's log as the executor sees it. Everything written is masked, limited and streamed to
// GitLab by the caller. Section names follow upstream's stage names (prepare_executor, step_script, …).
type JobLog interface {
	io.Writer
	// SectionStart opens a collapsible section and writes its header line.
	SectionStart(name, header string)
	// SectionEnd closes a section opened with SectionStart.
	SectionEnd(name string)
	// Infof, Warnf and Errorf write one coloured runner line (not user output).
	Infof(format string, args ...any)
	Warnf(format string, args ...any)
	Errorf(format string, args ...any)
}

// Build is one job handed to an executor.
type Build struct {
	Job    *job.Job
	Runner *config.RunnerConfig
	Log    JobLog
	// Logger is the manager-side logger, already scoped to the runner and job.
	Logger logrus.FieldLogger
	// Canceling ends, with cause ErrCanceled, when GitLab asks for a graceful cancel (Job-Status:
	// canceling): the script stops, after_script and the on_failure stages still run. An abort and the job
	// timeout end Run's context instead. Nil: the job cannot be canceled gracefully. See NewJobContext.
	Canceling context.Context
	// SystemID identifies this runner manager host.
	SystemID string
}

// Reservation is capacity held for one job between asking GitLab and running the job.
type Reservation interface {
	// Unreserve gives the capacity back when GitLab had no job. Calling it after Run is a no-op.
	Unreserve()
}

// Provider runs jobs for one [[runners]] entry.
//
// The manager calls Reserve before each job request. If a job comes, it calls Run with that
// reservation exactly once; if none comes, it calls Unreserve. Shutdown is called once at the end.
type Provider interface {
	Reserve(ctx context.Context) (Reservation, error)
	// Run executes every stage of the job. A nil error means success; a *job.BuildError carries the
	// failure reason and exit code; any other error is a runner_system_failure. Cancelling ctx aborts
	// the job at once (no after_script); its cause says why (ErrAborted, *TimeoutError). Run computes
	// no deadline of its own. Run always consumes the reservation.
	Run(ctx context.Context, res Reservation, b *Build) error
	// Features are the job features this executor implements, declared to GitLab truthfully.
	Features() map[string]bool
	Shutdown(ctx context.Context) error
}

// Deps are what a provider may need from the process besides its runner entry.
type Deps struct {
	Logger logrus.FieldLogger
	// ConfigDir is the directory of config.toml (state files live beside it).
	ConfigDir string
	SystemID  string
}

// StandbyError is what a Factory returns when another manager manages the runner's fleet now and this
// one may take it over later (a high-availability pair sharing the runner's state): the manager does not
// serve the runner, and asks the factory again at RetryAt. A provider's Reserve returns it when the
// provider gave its fleet up to another manager: the manager stops requesting jobs for the runner,
// shuts the provider down once its running jobs ended, and then asks the factory again.
type StandbyError struct {
	// Holder names the manager that manages the fleet now, for logs and the status page, and
	// HolderSince is when it took it over (zero when unknown).
	Holder      string
	HolderSince time.Time
	// RetryAt is when the holder's claim runs out unless it renews it.
	RetryAt time.Time
	Err     error
}

func (e *StandbyError) Error() string {
	if e.Holder == "" {
		return fmt.Sprintf("standby: %v", e.Err)
	}
	return fmt.Sprintf("standby: manager %s manages this runner's fleet (its claim runs to %s): %v", e.Holder, e.RetryAt.UTC().Format(time.RFC3339), e.Err)
}

func (e *StandbyError) Unwrap() error { return e.Err }

// Factory builds a Provider for one runner entry.
type Factory func(runner *config.RunnerConfig, deps Deps) (Provider, error)

// Registry maps executor names to factories.
type Registry map[string]Factory

// New builds the provider for runner, or says which executors exist.
func (r Registry) New(runner *config.RunnerConfig, deps Deps) (Provider, error) {
	f, ok := r[runner.Executor]
	if !ok {
		return nil, fmt.Errorf("runner %q: unknown executor %q (this build has: %s)", runner.Name, runner.Executor, strings.Join(r.Names(), ", "))
	}
	p, err := f(runner, deps)
	if err != nil {
		return nil, fmt.Errorf("runner %q: executor %q: %w", runner.Name, runner.Executor, err)
	}
	return p, nil
}

// Names lists the registered executor names, sorted.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// NoReservation is the reservation of providers that have no capacity limit of their own.
type NoReservation struct{}

// Unreserve implements Reservation.
func (NoReservation) Unreserve() {}

// RecoveredJob is a job that was in flight when a previous manager process stopped. It never resumes;
// the manager reports it failed (runner_system_failure) to GitLab at once.
type RecoveredJob struct {
	ID    int64
	Token string
	// URL is the GitLab URL the job came from.
	URL string
	// Instance names where it ran, for the log line; empty when it never got one or had ended.
	Instance string
	// Ended: the job had finished and only its final state had not reached GitLab.
	Ended bool
	// Done tells the provider the job was reported, so it is not reported again after another restart.
	Done func()
}

// Recoverer is implemented by providers that keep state across restarts (docker-autoscaler).
type Recoverer interface {
	RecoveredJobs() []RecoveredJob
}

// PolicyUpdater is implemented by providers that apply a reloaded [[runners.autoscaler.policy]] list
// without a restart.
type PolicyUpdater interface {
	UpdatePolicies(runner *config.RunnerConfig) error
}

// FinalStateObserver is implemented by providers that keep each job on record until its final state
// reached GitLab, so that a crash after Run but before that update still gets the job reported as failed
// after a restart. The manager calls FinalStateSent once GitLab has the final state (or no longer runs
// the job); the record is kept otherwise.
type FinalStateObserver interface {
	FinalStateSent(b *Build)
}

// AutoscaledInstance is one instance of an autoscaling provider as the operator's debug endpoint
// (/debug/autoscaler/instances) shows it.
type AutoscaledInstance struct {
	ID string `json:"id"`
	// State is the autoscaler's view: creating, readying, ready, draining (max_use_count reached, no
	// new jobs), remove or removing.
	State    string `json:"state"`
	UseCount int    `json:"use_count"`
	// Acquired is the number of jobs running on the instance now.
	Acquired int `json:"acquired"`
	// IdleSince is when the instance last became idle; absent while it runs a job.
	IdleSince *time.Time `json:"idle_since,omitempty"`
	// CreatedAt is when the instance first appeared in the group.
	CreatedAt time.Time `json:"created_at"`
	// Jobs are the IDs of the jobs running on it now.
	Jobs []int64 `json:"jobs,omitempty"`
}

// InstanceLister is implemented by providers that run jobs on autoscaled instances. It is called per
// debug request and must return at once.
type InstanceLister interface {
	AutoscalerInstances() []AutoscaledInstance
}

// FleetStatus is an autoscaling provider's fleet at one moment, as the status page shows it.
type FleetStatus struct {
	// PolicyIndex is the index of the [[runners.autoscaler.policy]] in force now, -1 when none matches:
	// then Policy is the zero one (no idle capacity, idle instances removed at once, not preemptive).
	PolicyIndex int
	Policy      FleetPolicy
	// SlotsPerInstance is capacity_per_instance; MaxInstances is max_instances, 0 for no cap.
	SlotsPerInstance int
	MaxInstances     int
	Instances        []AutoscaledInstance
	// Decisions are the last scale decisions, newest last.
	Decisions []ScaleDecision
	// Lease is this manager's hold on the runner's fleet with a shared state (a high-availability
	// pair); nil without one.
	Lease *FleetLease
}

// FleetLease is a manager's lease on a runner's fleet.
type FleetLease struct {
	// Holder names the manager that holds it (system ID, host, pid); Since is when it took it.
	Holder string
	Since  time.Time
	// Token is the lease's fencing token: it grows with every takeover.
	Token int64
}

// FleetPolicy is a scaling policy as config.toml spells it.
type FleetPolicy struct {
	Periods          []string
	IdleCount        int
	IdleTime         time.Duration
	ScaleFactor      float64
	ScaleFactorLimit int
	Preemptive       bool
}

// ScaleDecision is one pass of the autoscaler that asked for instances, removed some, or found a reason
// not to.
type ScaleDecision struct {
	At time.Time
	// Action is increase, decrease or none.
	Action string
	// Count is the number of instances asked for or removed.
	Count int
	// Desired is the instance count the pass aimed for, Actual the live instances when it began.
	Desired, Actual int
	Reason          string
}

// FleetDescriber is implemented by providers that scale a fleet of instances (docker-autoscaler). It is
// called per status page request and must return at once.
type FleetDescriber interface {
	FleetStatus() FleetStatus
}
