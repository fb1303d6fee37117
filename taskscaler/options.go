package taskscaler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// Policy is one compiled [[runners.autoscaler.policy]] entry; build them with capacity.NewPolicies.
type Policy = capacity.Policy

// Defaults, as upstream documents them.
const (
	DefaultCapacityPerInstance         = 1
	DefaultUpdateInterval              = time.Minute
	DefaultUpdateIntervalWhenExpecting = 2 * time.Second
	DefaultDeletionRetryInterval       = time.Minute
	DefaultFailureThreshold            = 3
	DefaultInstanceAcquireTimeout      = 15 * time.Minute
	DefaultShutdownDeletionInterval    = 10 * time.Second
	DefaultShutdownDeletionRetries     = 3
	// DefaultCreationTimeout bounds how long an instance may take from the Increase that asked for it
	// to the end of its ready command before it is removed as stuck.
	DefaultCreationTimeout = 15 * time.Minute
	// DefaultCreateBackoff and DefaultMaxCreateBackoff pace instance creation after a failed Increase or a
	// failed ready command (doubling per consecutive failure), so a broken image does not churn instances.
	DefaultCreateBackoff    = 5 * time.Second
	DefaultMaxCreateBackoff = 5 * time.Minute
)

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

// Options configure a Taskscaler. Zero values take the upstream defaults.
type Options struct {
	Logger logrus.FieldLogger

	CapacityPerInstance int
	// MaxInstances caps instances in any state; 0 means no cap. Callers should clamp it to the plugin's
	// ProviderInfo.MaxSize.
	MaxInstances int
	// MaxUseCount: jobs an instance may run in total before it is retired; 0 means unlimited.
	MaxUseCount int
	Policies    []Policy

	UpdateInterval              time.Duration
	UpdateIntervalWhenExpecting time.Duration
	DeletionRetryInterval       time.Duration
	// FailureThreshold is the number of consecutive failed health checks that gets an instance replaced.
	FailureThreshold       int
	InstanceAcquireTimeout time.Duration
	CreationTimeout        time.Duration
	CreateBackoff          time.Duration
	MaxCreateBackoff       time.Duration

	// ScaleThrottle is scale_throttle: Limit new instances per second (0 → 100, -1 unlimited), Burst
	// (0 → MaxInstances, or Limit without a cap).
	ScaleThrottle config.ScaleThrottle
	// ReservationThrottling (nil = on) keeps reservations out of the scaling demand.
	ReservationThrottling *bool

	DeleteInstancesOnShutdown bool
	ShutdownDeletionInterval  time.Duration
	ShutdownDeletionRetries   int

	// ReadyUp runs once on every new running instance before its slots are used (instance_ready_command,
	// host key pinning). An error removes the instance and slows down further creation.
	ReadyUp func(ctx context.Context, inst Instance) error
	// HealthCheck runs on every ready instance each update_interval with its cached ConnectInfo (empty
	// when none was fetched yet; it is not refreshed for the check); FailureThreshold consecutive
	// errors replace the instance. Nil disables health checks.
	HealthCheck func(ctx context.Context, inst Instance) error

	// Clock defaults to the wall clock.
	Clock clock.Clock
	// State persists instances and in-flight jobs; nil keeps nothing (and then every instance found in
	// the group at start is removed as unknown).
	State state.Store
	// KeepInstanceWithAcquisitions keeps restored instances that had jobs in flight.
	KeepInstanceWithAcquisitions bool
}

// OptionsFromConfig maps [runners.autoscaler] onto Options. Logger, ReadyUp, HealthCheck, State and
// Clock are left for the caller, who owns the connector and the state path.
func OptionsFromConfig(ac *config.AutoscalerConfig) (Options, error) {
	if ac == nil {
		return Options{}, errors.New("[runners.autoscaler] is missing: the docker-autoscaler executor needs it")
	}
	policies, err := capacity.NewPolicies(ac.Policy)
	if err != nil {
		return Options{}, fmt.Errorf("[runners.autoscaler]: %w", err)
	}
	return Options{
		CapacityPerInstance:          ac.CapacityPerInstance,
		MaxInstances:                 ac.MaxInstances,
		MaxUseCount:                  ac.MaxUseCount,
		Policies:                     policies,
		UpdateInterval:               ac.UpdateInterval,
		UpdateIntervalWhenExpecting:  ac.UpdateIntervalWhenExpecting,
		DeletionRetryInterval:        ac.DeletionRetryInterval,
		FailureThreshold:             ac.FailureThreshold,
		InstanceAcquireTimeout:       ac.InstanceAcquireTimeout,
		ScaleThrottle:                ac.ScaleThrottle,
		ReservationThrottling:        ac.ReservationThrottling,
		DeleteInstancesOnShutdown:    ac.DeleteInstancesOnShutdown,
		ShutdownDeletionInterval:     ac.ShutdownDeletionInterval,
		ShutdownDeletionRetries:      ac.ShutdownDeletionRetries,
		KeepInstanceWithAcquisitions: ac.StateStorage.KeepInstanceWithAcquisitions,
	}, nil
}

func (o *Options) setDefaults() error {
	var errs []error
	for name, v := range map[string]int{"capacity_per_instance": o.CapacityPerInstance, "max_instances": o.MaxInstances,
		"max_use_count": o.MaxUseCount, "failure_threshold": o.FailureThreshold, "shutdown_deletion_retries": o.ShutdownDeletionRetries} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %d", name, v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if o.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Logger = l
	}
	orInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	orDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	orInt(&o.CapacityPerInstance, DefaultCapacityPerInstance)
	orInt(&o.FailureThreshold, DefaultFailureThreshold)
	orInt(&o.ShutdownDeletionRetries, DefaultShutdownDeletionRetries)
	orDur(&o.UpdateInterval, DefaultUpdateInterval)
	orDur(&o.UpdateIntervalWhenExpecting, DefaultUpdateIntervalWhenExpecting)
	orDur(&o.DeletionRetryInterval, DefaultDeletionRetryInterval)
	orDur(&o.InstanceAcquireTimeout, DefaultInstanceAcquireTimeout)
	orDur(&o.ShutdownDeletionInterval, DefaultShutdownDeletionInterval)
	orDur(&o.CreationTimeout, DefaultCreationTimeout)
	orDur(&o.CreateBackoff, DefaultCreateBackoff)
	orDur(&o.MaxCreateBackoff, DefaultMaxCreateBackoff)
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	return nil
}

func (o *Options) reservationThrottling() bool {
	return o.ReservationThrottling == nil || *o.ReservationThrottling
}
