package config

import (
	"fmt"
	"path/filepath"
	"time"
)

// Defaults of [runners.autoscaler], as upstream applies them.
const (
	DefaultCapacityPerInstance         = 1
	DefaultInstanceAcquireTimeout      = 15 * time.Minute
	DefaultUpdateInterval              = time.Minute
	DefaultUpdateIntervalWhenExpecting = 2 * time.Second
	DefaultDeletionRetryInterval       = time.Minute
	DefaultShutdownDeletionInterval    = 10 * time.Second
	DefaultShutdownDeletionRetries     = 3
	DefaultFailureThreshold            = 3
	DefaultScaleThrottleLimit          = 100
	// ScaleThrottleUnlimited is the scale_throttle.limit that turns the throttle off.
	ScaleThrottleUnlimited = -1
	// DefaultPolicyPeriod is the cron period of a policy that names none: always active.
	DefaultPolicyPeriod = "* * * * *"
	// StateStorageDirName is the default state directory, beside config.toml.
	StateStorageDirName = ".taskscaler"
)

// GetCapacityPerInstance is the number of jobs one instance runs at once.
func (a *AutoscalerConfig) GetCapacityPerInstance() int {
	if a.CapacityPerInstance <= 0 {
		return DefaultCapacityPerInstance
	}
	return a.CapacityPerInstance
}

// GetInstanceAcquireTimeout bounds how long a job waits for a slot on a ready instance.
func (a *AutoscalerConfig) GetInstanceAcquireTimeout() time.Duration {
	return durationOr(a.InstanceAcquireTimeout, DefaultInstanceAcquireTimeout)
}

// GetUpdateInterval is how often the plugin is asked for the instances' state.
func (a *AutoscalerConfig) GetUpdateInterval() time.Duration {
	return durationOr(a.UpdateInterval, DefaultUpdateInterval)
}

// GetUpdateIntervalWhenExpecting is the faster poll while an instance state change is expected.
func (a *AutoscalerConfig) GetUpdateIntervalWhenExpecting() time.Duration {
	return durationOr(a.UpdateIntervalWhenExpecting, DefaultUpdateIntervalWhenExpecting)
}

// GetDeletionRetryInterval is the wait before re-issuing a delete that had no effect.
func (a *AutoscalerConfig) GetDeletionRetryInterval() time.Duration {
	return durationOr(a.DeletionRetryInterval, DefaultDeletionRetryInterval)
}

// GetShutdownDeletionInterval is the wait between delete and status check at shutdown.
func (a *AutoscalerConfig) GetShutdownDeletionInterval() time.Duration {
	return durationOr(a.ShutdownDeletionInterval, DefaultShutdownDeletionInterval)
}

// GetShutdownDeletionRetries is how often deletion is confirmed at shutdown.
func (a *AutoscalerConfig) GetShutdownDeletionRetries() int {
	if a.ShutdownDeletionRetries <= 0 {
		return DefaultShutdownDeletionRetries
	}
	return a.ShutdownDeletionRetries
}

// GetFailureThreshold is the consecutive failed health checks before an instance is replaced.
func (a *AutoscalerConfig) GetFailureThreshold() int {
	if a.FailureThreshold <= 0 {
		return DefaultFailureThreshold
	}
	return a.FailureThreshold
}

// GetReservationThrottling is on unless reservation_throttling = false.
func (a *AutoscalerConfig) GetReservationThrottling() bool {
	return a.ReservationThrottling == nil || *a.ReservationThrottling
}

// GetScaleThrottleLimit is the instance-creation rate per second; ScaleThrottleUnlimited (-1)
// turns the throttle off.
func (a *AutoscalerConfig) GetScaleThrottleLimit() int {
	if a.ScaleThrottle.Limit == 0 {
		return DefaultScaleThrottleLimit
	}
	return a.ScaleThrottle.Limit
}

// GetScaleThrottleBurst is the token-bucket size: burst, else max_instances, else the limit.
func (a *AutoscalerConfig) GetScaleThrottleBurst() int {
	switch {
	case a.ScaleThrottle.Burst > 0:
		return a.ScaleThrottle.Burst
	case a.MaxInstances > 0:
		return a.MaxInstances
	}
	return max(a.GetScaleThrottleLimit(), 1)
}

// StateStorageEnabled is true unless state_storage.enabled = false: fleetrunner keeps instances
// across restarts by default.
func (a *AutoscalerConfig) StateStorageEnabled() bool {
	return a.StateStorage.Enabled == nil || *a.StateStorage.Enabled
}

// StateStorageDir is the state directory: state_storage.dir (a relative one is taken from configDir),
// else <configDir>/.taskscaler.
func (a *AutoscalerConfig) StateStorageDir(configDir string) string {
	switch {
	case a.StateStorage.Dir == "":
		return filepath.Join(configDir, StateStorageDirName)
	case filepath.IsAbs(a.StateStorage.Dir):
		return filepath.Clean(a.StateStorage.Dir)
	}
	return filepath.Join(configDir, a.StateStorage.Dir)
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// GetPeriods are the cron periods (5 fields) in which the policy applies; by default always.
func (p *AutoscalerPolicyConfig) GetPeriods() []string {
	if len(p.Periods) == 0 {
		return []string{DefaultPolicyPeriod}
	}
	return append([]string(nil), p.Periods...)
}

// GetLocation is the time zone of the periods: timezone, else the host's local zone.
func (p *AutoscalerPolicyConfig) GetLocation() (*time.Location, error) {
	if p.Timezone == "" {
		return time.Local, nil
	}
	loc, err := time.LoadLocation(p.Timezone)
	if err != nil {
		return nil, fmt.Errorf("policy timezone %q: %w", p.Timezone, err)
	}
	return loc, nil
}

// GetPreemptiveMode is preemptive_mode when set, else idle_count > 0 (upstream's default).
func (p *AutoscalerPolicyConfig) GetPreemptiveMode() bool {
	if p.PreemptiveMode != nil {
		return *p.PreemptiveMode
	}
	return p.IdleCount > 0
}
