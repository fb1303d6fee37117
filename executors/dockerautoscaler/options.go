package dockerautoscaler

import (
	"errors"
	"fmt"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/forecast"
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
		Forecast:                     forecastOptions(ac),
	}, nil
}

// forecastOptions maps [runners.autoscaler.forecast]; nil when it is not enabled.
func forecastOptions(ac *config.AutoscalerConfig) *forecast.Options {
	if !ac.ForecastEnabled() {
		return nil
	}
	f := ac.Forecast
	return &forecast.Options{History: f.GetHistory(), Quantile: f.GetQuantile(), Lead: f.GetLead()}
}

// Buckets are the bounds of the instance lifecycle histograms, in seconds.
type Buckets struct {
	Creation, IsRunning, Deletion, Readiness, LifeDuration []float64
}

// Default lifecycle buckets, used when neither the histogram's own *_buckets key nor
// instance_operation_time_buckets is set. Instances boot and are removed in seconds to minutes, so
// those start below a second; instances live for minutes to a day.
var (
	defaultOperationBuckets = []float64{0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900}
	defaultLifeBuckets      = []float64{60, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400}
)

// HistogramBuckets resolves the lifecycle histograms' buckets as upstream does: a histogram's own key
// (instance_creation_time_buckets, …), else instance_operation_time_buckets, the fallback for all of
// them, else the default (the life duration has its own: instances live far longer than they boot).
func HistogramBuckets(ac *config.AutoscalerConfig) Buckets {
	pick := func(own, byDefault []float64) []float64 {
		switch {
		case len(own) > 0:
			return own
		case len(ac.InstanceOperationTimeBuckets) > 0:
			return ac.InstanceOperationTimeBuckets
		}
		return byDefault
	}
	return Buckets{
		Creation:     pick(ac.InstanceCreationTimeBuckets, defaultOperationBuckets),
		IsRunning:    pick(ac.InstanceIsRunningTimeBuckets, defaultOperationBuckets),
		Deletion:     pick(ac.InstanceDeletionTimeBuckets, defaultOperationBuckets),
		Readiness:    pick(ac.InstanceReadinessTimeBuckets, defaultOperationBuckets),
		LifeDuration: pick(ac.InstanceLifeDurationBuckets, defaultLifeBuckets),
	}
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
