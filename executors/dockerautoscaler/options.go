package dockerautoscaler

import (
	"errors"
	"fmt"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// TaskscalerOptions maps [runners.autoscaler] onto the taskscaler's options, from the values config
// resolves (its getters own the defaults). max_instances is capped at maxSize, the plugin's group size
// (0: none). Logger, the hooks, State and Clock are left to the caller; `fleetrunner simulate` uses it
// too, so that a simulated fleet is configured as a real one.
func TaskscalerOptions(ac *config.AutoscalerConfig, maxSize int) (taskscaler.Options, error) {
	if ac == nil {
		return taskscaler.Options{}, errors.New("[runners.autoscaler] is missing: the docker-autoscaler executor needs it")
	}
	// The group's size caps max_instances, and so the scale_throttle burst that defaults to it.
	capped := *ac
	if maxSize > 0 && (capped.MaxInstances == 0 || capped.MaxInstances > maxSize) {
		capped.MaxInstances = maxSize
	}
	policies, err := Policies(ac.Policy)
	if err != nil {
		return taskscaler.Options{}, err
	}
	return taskscaler.Options{
		CapacityPerInstance:          ac.GetCapacityPerInstance(),
		MaxInstances:                 capped.MaxInstances,
		MaxUseCount:                  ac.MaxUseCount,
		Policies:                     policies,
		UpdateInterval:               ac.GetUpdateInterval(),
		UpdateIntervalWhenExpecting:  ac.GetUpdateIntervalWhenExpecting(),
		DeletionRetryInterval:        ac.GetDeletionRetryInterval(),
		FailureThreshold:             ac.GetFailureThreshold(),
		InstanceAcquireTimeout:       ac.GetInstanceAcquireTimeout(),
		CreationTimeout:              config.InstanceCreationTimeout,
		CreateBackoff:                config.InstanceCreateBackoff,
		MaxCreateBackoff:             config.InstanceMaxCreateBackoff,
		ScaleThrottleLimit:           ac.GetScaleThrottleLimit(),
		ScaleThrottleBurst:           capped.GetScaleThrottleBurst(),
		ReservationThrottling:        ac.GetReservationThrottling(),
		DeleteInstancesOnShutdown:    ac.DeleteInstancesOnShutdown,
		ShutdownDeletionInterval:     ac.GetShutdownDeletionInterval(),
		ShutdownDeletionRetries:      ac.GetShutdownDeletionRetries(),
		KeepInstanceWithAcquisitions: ac.StateStorage.KeepInstanceWithAcquisitions,
	}, nil
}

// Policies maps the [[runners.autoscaler.policy]] list onto the taskscaler's policies, which check
// them further when they are applied.
func Policies(cs []config.AutoscalerPolicyConfig) ([]taskscaler.Policy, error) {
	ps := make([]taskscaler.Policy, 0, len(cs))
	var errs []error
	for i, c := range cs {
		loc, err := c.GetLocation()
		if err != nil {
			errs = append(errs, fmt.Errorf("[[runners.autoscaler.policy]] entry %d: %w", i+1, err))
			continue
		}
		ps = append(ps, taskscaler.Policy{
			Periods:          c.GetPeriods(),
			Location:         loc,
			IdleCount:        c.IdleCount,
			IdleTime:         c.IdleTime,
			ScaleFactor:      c.ScaleFactor,
			ScaleFactorLimit: c.ScaleFactorLimit,
			Preemptive:       c.GetPreemptiveMode(),
		})
	}
	return ps, errors.Join(errs...)
}

// stateRunner is what names the runner's state directory.
func stateRunner(rc *config.RunnerConfig) state.Runner {
	return state.Runner{ID: rc.ID, URL: rc.URL, Name: rc.Name, ShortToken: config.ShortToken(rc.Token)}
}
