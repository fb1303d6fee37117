package taskscaler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/forecast"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// Policy is one scaling policy; New and SetPolicies check and compile them.
type Policy = capacity.Policy

// ScaleThrottleUnlimited is the ScaleThrottleLimit that turns the throttle off.
const ScaleThrottleUnlimited = -1

// Instance is what the ReadyUp and HealthCheck hooks get: a running instance, how to connect to it,
// and the caller data stored on it (e.g. the SSH connector's pinned host key).
type Instance struct {
	ID          string
	ConnectInfo fleeting.ConnectInfo

	ts *Taskscaler
}

// Data returns the caller data stored on the instance under name.
func (i Instance) Data(name string) ([]byte, bool) { return i.ts.InstanceData(i.ID, name) }

// SetData stores caller data on the instance under name; it is written to the state file at once.
func (i Instance) SetData(name string, value []byte) error {
	return i.ts.SetInstanceData(i.ID, name, value)
}

// Options configure a Taskscaler. The caller resolves every value (the docker-autoscaler executor does
// it from config.toml); New refuses what is missing or out of range rather than pick a value itself.
// Only the zero values documented below mean something.
type Options struct {
	// Logger receives the taskscaler's log; nil discards it.
	Logger logrus.FieldLogger

	// CapacityPerInstance is the number of job slots per instance, at least 1.
	CapacityPerInstance int
	// MaxInstances caps instances in any state; 0 means no cap. Callers should clamp it to the plugin's
	// ProviderInfo.MaxSize.
	MaxInstances int
	// MaxUseCount: jobs an instance may run in total before it is retired; 0 means unlimited.
	MaxUseCount int
	// Policies: the last one whose periods match the time is in force; none matching means no idle
	// capacity, idle instances removed at once, not preemptive.
	Policies []Policy

	// UpdateInterval is how often the group is listed; UpdateIntervalWhenExpecting how often while an
	// instance is expected to change state.
	UpdateInterval              time.Duration
	UpdateIntervalWhenExpecting time.Duration
	// DeletionRetryInterval is the wait before asking again to remove an instance that is still there.
	DeletionRetryInterval time.Duration
	// FailureThreshold is the number of consecutive failed health checks that gets an instance replaced.
	FailureThreshold int
	// InstanceAcquireTimeout bounds how long Acquire waits for a slot.
	InstanceAcquireTimeout time.Duration
	// CreationTimeout bounds the time from the Increase that asked for an instance to the end of its
	// ReadyUp; a slower instance is removed.
	CreationTimeout time.Duration
	// CreateBackoff is the pause in creating instances after a failed Increase or ReadyUp, doubled per
	// consecutive failure up to MaxCreateBackoff.
	CreateBackoff    time.Duration
	MaxCreateBackoff time.Duration

	// ScaleThrottleLimit is the rate of new instances per second, or ScaleThrottleUnlimited;
	// ScaleThrottleBurst is the size of its token bucket (at least 1 unless unlimited).
	ScaleThrottleLimit int
	ScaleThrottleBurst int
	// ReservationThrottling keeps reservations out of the scaling demand (see capacity.Demand.InUse).
	ReservationThrottling bool

	DeleteInstancesOnShutdown bool
	// ShutdownDeletionInterval and ShutdownDeletionRetries pace the checks, with
	// DeleteInstancesOnShutdown, that the instances are gone.
	ShutdownDeletionInterval time.Duration
	ShutdownDeletionRetries  int

	// ReadyUp runs once on every new running instance before its slots are used (instance_ready_command,
	// host key pinning). An error removes the instance and slows down further creation. Nil: an instance
	// is ready once it runs.
	ReadyUp func(ctx context.Context, inst Instance) error
	// HealthCheck runs on every ready instance each update_interval with its cached ConnectInfo (empty
	// when none was fetched yet; it is not refreshed for the check); FailureThreshold consecutive
	// errors replace the instance. Nil disables health checks.
	HealthCheck func(ctx context.Context, inst Instance) error
	// Gone is called, outside the taskscaler's lock, for every instance that left the group (listed as
	// deleted or no longer listed, or deleted at shutdown) once the taskscaler has forgotten it, so that
	// what the caller holds for it (a pooled connection) can go too. Nil: nobody is told.
	Gone func(id string)

	// Observe receives instance lifecycle durations as they are measured (see Measure), e.g. for
	// histograms. It is called with the taskscaler's lock held, so it must be quick and must not call
	// the taskscaler. Nil: nobody is told.
	Observe func(m Measure, d time.Duration)

	// Forecast, when set, replaces the active policy's idle count with one learnt from the job
	// arrivals of past hours like the coming one (see package forecast); the policy's other limits
	// still apply. Nil: the policies alone decide.
	Forecast *forecast.Options

	// Clock is the wall clock when nil.
	Clock clock.Clock
	// State persists instances and in-flight jobs; nil keeps nothing (and then every instance found in
	// the group at start is removed as unknown).
	State state.Store
	// KeepInstanceWithAcquisitions keeps restored instances that had jobs in flight.
	KeepInstanceWithAcquisitions bool
}

// check reports every option that is missing or out of range, and returns the compiled policies.
func (o *Options) check() ([]Policy, error) {
	var errs []error
	atLeast := func(name string, v, least int) {
		if v < least {
			errs = append(errs, fmt.Errorf("%s must be at least %d, got %d", name, least, v))
		}
	}
	atLeast("capacity per instance", o.CapacityPerInstance, 1)
	atLeast("max instances (0: no cap)", o.MaxInstances, 0)
	atLeast("max use count (0: unlimited)", o.MaxUseCount, 0)
	atLeast("failure threshold", o.FailureThreshold, 1)
	atLeast("shutdown deletion retries", o.ShutdownDeletionRetries, 1)
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"update interval", o.UpdateInterval},
		{"update interval when expecting", o.UpdateIntervalWhenExpecting},
		{"deletion retry interval", o.DeletionRetryInterval},
		{"instance acquire timeout", o.InstanceAcquireTimeout},
		{"creation timeout", o.CreationTimeout},
		{"create backoff", o.CreateBackoff},
		{"max create backoff", o.MaxCreateBackoff},
		{"shutdown deletion interval", o.ShutdownDeletionInterval},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", d.name, d.v))
		}
	}
	if o.ScaleThrottleLimit != ScaleThrottleUnlimited {
		atLeast("scale throttle limit (-1: unlimited)", o.ScaleThrottleLimit, 1)
		atLeast("scale throttle burst", o.ScaleThrottleBurst, 1)
	}
	if f := o.Forecast; f != nil {
		if f.History < 24*time.Hour {
			errs = append(errs, fmt.Errorf("forecast history must be at least 24h, got %s", f.History))
		}
		if !(f.Quantile > 0 && f.Quantile <= 1) {
			errs = append(errs, fmt.Errorf("forecast quantile must be above 0 and at most 1, got %v", f.Quantile))
		}
		if f.Lead < 0 {
			errs = append(errs, fmt.Errorf("forecast lead must not be negative, got %s", f.Lead))
		}
	}
	policies, err := capacity.NewPolicies(o.Policies)
	return policies, errors.Join(append(errs, err)...)
}
