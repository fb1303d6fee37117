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

// Instance creation pacing of fleetrunner's own, with no config key: how long an instance may take from
// the Increase that asked for it to the end of its ready command before it is removed as stuck, and the
// wait after a failed Increase or ready command (doubled per consecutive failure, up to the maximum), so
// that a broken image does not churn instances.
const (
	InstanceCreationTimeout  = 15 * time.Minute
	InstanceCreateBackoff    = 5 * time.Second
	InstanceMaxCreateBackoff = 5 * time.Minute
)

// The int getters return a negative value as set, for Validate and the taskscaler to refuse.

// GetCapacityPerInstance is the number of jobs one instance runs at once.
func (a *AutoscalerConfig) GetCapacityPerInstance() int {
	return intOr(a.CapacityPerInstance, DefaultCapacityPerInstance)
}

// GetInstanceAcquireTimeout bounds how long a job waits for a slot on a ready instance.
func (a *AutoscalerConfig) GetInstanceAcquireTimeout() time.Duration {
	return durationOr(a.InstanceAcquireTimeout, DefaultInstanceAcquireTimeout)
}

// GetUpdateInterval is how often the plugin is asked for the instances' state.
func (a *AutoscalerConfig) GetUpdateInterval() time.Duration {
	return durationOr(a.UpdateInterval, DefaultUpdateInterval)
}

// DefaultInterruptionCheckInterval is what AWS advises for spot interruption notices: a check every 5 s
// of the two minutes' warning.
const DefaultInterruptionCheckInterval = 5 * time.Second

// GetInterruptionCheckInterval is how often a plugin that reports interruption notices (aws: spot
// interruptions) is asked for them.
func (a *AutoscalerConfig) GetInterruptionCheckInterval() time.Duration {
	return durationOr(a.InterruptionCheckInterval, DefaultInterruptionCheckInterval)
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
	return intOr(a.ShutdownDeletionRetries, DefaultShutdownDeletionRetries)
}

// GetFailureThreshold is the consecutive failed health checks before an instance is replaced.
func (a *AutoscalerConfig) GetFailureThreshold() int {
	return intOr(a.FailureThreshold, DefaultFailureThreshold)
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

// State storage backends (state_storage.backend), fleetrunner's own.
const (
	StateBackendFile     = "file"
	StateBackendDynamoDB = "dynamodb"
)

// Lease of a runner on the dynamodb backend, fleetrunner's own: a standby takes a lost manager's runner
// over within DefaultLeaseDuration. MinLeaseDuration leaves a renewal (every third of the lease) time for
// a slow round trip to DynamoDB.
const (
	DefaultLeaseDuration = 15 * time.Second
	MinLeaseDuration     = 3 * time.Second
)

// GetBackend is where the state is kept: state_storage.backend, else StateBackendFile.
func (s *StateStorage) GetBackend() string {
	if s.Backend == "" {
		return StateBackendFile
	}
	return s.Backend
}

// GetLeaseDuration is how long a manager holds a runner's lease without renewing it.
func (s *StateStorage) GetLeaseDuration() time.Duration {
	return durationOr(s.LeaseDuration, DefaultLeaseDuration)
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

// StateDir is where the manager keeps this runner's files (the taskscaler state, the job history): its
// [runners.autoscaler.state_storage] directory, or <configDir>/.taskscaler for a runner without
// [runners.autoscaler].
func (c *RunnerConfig) StateDir(configDir string) string {
	if c.Autoscaler == nil {
		return filepath.Join(configDir, StateStorageDirName)
	}
	return c.Autoscaler.StateStorageDir(configDir)
}

func intOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
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
	return periodLocation(p.Timezone)
}

// periodLocation is the time zone cron periods are read in: the named IANA zone, else the host's
// local zone, as upstream reads periods.
func periodLocation(timezone string) (*time.Location, error) {
	if timezone == "" {
		return time.Local, nil
	}
	loc, err := time.LoadLocation(timezone)
	if err != nil {
		return nil, fmt.Errorf("timezone %q is not a known IANA zone (e.g. UTC, Europe/Berlin): %w", timezone, err)
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

// Defaults and bounds of [runners.autoscaler.forecast], fleetrunner's own.
const (
	// DefaultForecastHistory is two weeks: two samples of each hour of the week.
	DefaultForecastHistory = 14 * 24 * time.Hour
	// DefaultForecastQuantile holds idle what the demand of nine in ten past hours like the coming one needed.
	DefaultForecastQuantile = 0.9
	// MinForecastHistory is one day: the forecast needs at least the same hour of an earlier day.
	MinForecastHistory = 24 * time.Hour
	// MaxForecastHistory bounds the history kept in the state file (one record per hour).
	MaxForecastHistory = 8 * 7 * 24 * time.Hour
)

// ForecastEnabled is true when [runners.autoscaler.forecast] has enabled = true.
func (a *AutoscalerConfig) ForecastEnabled() bool {
	return a.Forecast != nil && a.Forecast.Enabled
}

// GetHistory is how far back job arrivals are learnt from.
func (f *AutoscalerForecastConfig) GetHistory() time.Duration {
	if f == nil {
		return DefaultForecastHistory
	}
	return durationOr(f.History, DefaultForecastHistory)
}

// GetQuantile is the share of a past hour's jobs the forecast idle count would have let start at once.
func (f *AutoscalerForecastConfig) GetQuantile() float64 {
	if f == nil || f.Quantile == 0 {
		return DefaultForecastQuantile
	}
	return f.Quantile
}

// GetLead is how far ahead of demand instances are started (and how long an idle instance beyond the
// forecast stays); 0 means the boot delay the taskscaler observes (a moving median of instance creation
// to ready).
func (f *AutoscalerForecastConfig) GetLead() time.Duration {
	if f == nil {
		return 0
	}
	return f.Lead
}
