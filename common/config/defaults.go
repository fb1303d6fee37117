package config

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
)

// Defaults, as upstream gitlab-runner applies them. A zero value in the structs means "unset"; the
// accessor methods below return the effective value.
const (
	DefaultConcurrent             = 1
	DefaultCheckInterval          = 3 * time.Second
	DefaultShutdownTimeout        = 30 * time.Second
	DefaultConnectionMaxAge       = 15 * time.Minute
	DefaultSessionTimeout         = 30 * time.Minute
	DefaultOutputLimitKiB         = 4096
	DefaultUnhealthyRequestsLimit = 3
	DefaultUnhealthyInterval      = 60 * time.Minute
	DefaultBuildsDir              = "/builds"
	DefaultCacheDir               = "/cache"
	DefaultWaitForServicesTimeout = 30 * time.Second

	PullPolicyAlways       = "always"
	PullPolicyIfNotPresent = "if-not-present"
	PullPolicyNever        = "never"
)

// GetCheckInterval is how often each runner polls GitLab.
func (c *Config) GetCheckInterval() time.Duration {
	return secondsOr(c.CheckInterval, DefaultCheckInterval)
}

// GetShutdownTimeout bounds the forceful shutdown and the shutdown of executor providers.
func (c *Config) GetShutdownTimeout() time.Duration {
	return secondsOr(c.ShutdownTimeout, DefaultShutdownTimeout)
}

// GetConnectionMaxAge is the lifetime of a keep-alive connection to GitLab; 0 keeps connections
// as long as the server allows.
func (c *Config) GetConnectionMaxAge() time.Duration {
	if c.ConnectionMaxAge == nil {
		return DefaultConnectionMaxAge
	}
	return max(*c.ConnectionMaxAge, 0)
}

// GetSessionTimeout is upstream's session_server.session_timeout (parsed for compatibility).
func (s SessionServer) GetSessionTimeout() time.Duration {
	return secondsOr(s.SessionTimeout, DefaultSessionTimeout)
}

func secondsOr(s int, def time.Duration) time.Duration {
	if s > 0 {
		return time.Duration(s) * time.Second
	}
	return def
}

// GetOutputLimit is the job log limit in bytes (output_limit is written in KiB).
func (r *RunnerConfig) GetOutputLimit() int64 {
	kib := r.OutputLimit
	if kib <= 0 {
		kib = DefaultOutputLimitKiB
	}
	return int64(kib) * 1024
}

// GetRequestConcurrency is the most job requests in flight at once for this runner (at least 1).
func (r *RunnerConfig) GetRequestConcurrency() int {
	return max(r.RequestConcurrency, 1)
}

// GetUnhealthyRequestsLimit is how many unhealthy job-request answers pause this runner.
func (r *RunnerConfig) GetUnhealthyRequestsLimit() int {
	if r.UnhealthyRequestsLimit < 1 {
		return DefaultUnhealthyRequestsLimit
	}
	return r.UnhealthyRequestsLimit
}

// GetUnhealthyInterval is how long a runner stays paused after too many unhealthy answers.
func (r *RunnerConfig) GetUnhealthyInterval() time.Duration {
	if r.UnhealthyInterval == nil {
		return DefaultUnhealthyInterval
	}
	return *r.UnhealthyInterval
}

// GetBuildsDir is where builds live inside the job containers.
func (r *RunnerConfig) GetBuildsDir() string {
	if r.BuildsDir == "" {
		return DefaultBuildsDir
	}
	return r.BuildsDir
}

// GetCacheDir is where local caches live inside the job containers.
func (r *RunnerConfig) GetCacheDir() string {
	if r.CacheDir == "" {
		return DefaultCacheDir
	}
	return r.CacheDir
}

// GetShell is the shell the job scripts are written for: bash unless sh is asked for.
func (r *RunnerConfig) GetShell() string {
	if r.Shell == "" {
		return "bash"
	}
	return r.Shell
}

// GetPreGetSourcesScript falls back to the deprecated pre_clone_script, as upstream does.
func (r *RunnerConfig) GetPreGetSourcesScript() string {
	if r.PreGetSourcesScript != "" {
		return r.PreGetSourcesScript
	}
	return r.PreCloneScript
}

// GetPostGetSourcesScript falls back to the deprecated post_clone_script, as upstream does.
func (r *RunnerConfig) GetPostGetSourcesScript() string {
	if r.PostGetSourcesScript != "" {
		return r.PostGetSourcesScript
	}
	return r.PostCloneScript
}

// GetCustomBuildDirEnabled says whether jobs may set GIT_CLONE_PATH; on by default for Docker.
func (r *RunnerConfig) GetCustomBuildDirEnabled() bool {
	return r.CustomBuildDir.Enabled == nil || *r.CustomBuildDir.Enabled
}

// GetCleanGitConfig says whether the git config is cleaned around a build; on by default.
func (r *RunnerConfig) GetCleanGitConfig() bool {
	return r.CleanGitConfig == nil || *r.CleanGitConfig
}

// Feature flags fleetrunner reads. Their upstream defaults are false except where
// featureFlagDefaults says otherwise.
const (
	FFUseDockerAutoscalerDialStdio  = "FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO"
	FFNetworkPerBuild               = "FF_NETWORK_PER_BUILD"
	FFUseFleetingAcquireHeartbeats  = "FF_USE_FLEETING_ACQUIRE_HEARTBEATS"
	FFUseAdaptiveRequestConcurrency = "FF_USE_ADAPTIVE_REQUEST_CONCURRENCY"
	FFDisableAutomaticTokenRotation = "FF_DISABLE_AUTOMATIC_TOKEN_ROTATION"
	FFDisableUmaskForDockerExecutor = "FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR"
	FFUseInitWithDockerExecutor     = "FF_USE_INIT_WITH_DOCKER_EXECUTOR"
	FFScriptSections                = "FF_SCRIPT_SECTIONS"
)

var featureFlagDefaults = map[string]bool{
	FFUseDockerAutoscalerDialStdio:  true,
	FFUseAdaptiveRequestConcurrency: true,
}

// FeatureFlag reports whether the named feature flag is on for this runner: [runners.feature_flags]
// first, then an FF_NAME=value entry in environment (strconv.ParseBool syntax), then upstream's default.
func (r *RunnerConfig) FeatureFlag(name string) bool {
	if v, ok := r.FeatureFlags[name]; ok {
		return v
	}
	for i := len(r.Environment) - 1; i >= 0; i-- {
		k, v, ok := strings.Cut(r.Environment[i], "=")
		if !ok || k != name {
			continue
		}
		if on, err := strconv.ParseBool(v); err == nil {
			return on
		}
		break
	}
	return featureFlagDefaults[name]
}

// GetPullPolicies is the image pull policy list (tried in order); the default is ["always"].
func (d *DockerConfig) GetPullPolicies() []string {
	if len(d.PullPolicy) == 0 {
		return []string{PullPolicyAlways}
	}
	return append([]string(nil), d.PullPolicy...)
}

// GetAllowedPullPolicies are the policies a job may ask for; by default those of pull_policy.
func (d *DockerConfig) GetAllowedPullPolicies() []string {
	if len(d.AllowedPullPolicies) == 0 {
		return d.GetPullPolicies()
	}
	return append([]string(nil), d.AllowedPullPolicies...)
}

// GetWaitForServicesTimeout is how long to wait for services to answer; 0 means do not wait
// (wait_for_services_timeout = -1).
func (d *DockerConfig) GetWaitForServicesTimeout() time.Duration {
	switch {
	case d.WaitForServicesTimeout < 0:
		return 0
	case d.WaitForServicesTimeout == 0:
		return DefaultWaitForServicesTimeout
	}
	return time.Duration(d.WaitForServicesTimeout) * time.Second
}

// GetServicesLimit is the most services a job may start; -1 means no limit.
func (d *DockerConfig) GetServicesLimit() int {
	if d.ServicesLimit == nil {
		return -1
	}
	return *d.ServicesLimit
}

// GetMemory, GetMemorySwap and GetMemoryReservation return the limits in bytes (0 when unset).
func (d *DockerConfig) GetMemory() (int64, error) { return memoryBytes("memory", d.Memory) }

// GetMemorySwap returns memory_swap in bytes (0 when unset).
func (d *DockerConfig) GetMemorySwap() (int64, error) {
	return memoryBytes("memory_swap", d.MemorySwap)
}

// GetMemoryReservation returns memory_reservation in bytes (0 when unset).
func (d *DockerConfig) GetMemoryReservation() (int64, error) {
	return memoryBytes("memory_reservation", d.MemoryReservation)
}

// GetServiceMemory returns service_memory in bytes (0 when unset).
func (d *DockerConfig) GetServiceMemory() (int64, error) {
	return memoryBytes("service_memory", d.ServiceMemory)
}

func memoryBytes(key, v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := units.RAMInBytes(v)
	if err != nil {
		return 0, fmt.Errorf("docker %s %q: %w", key, v, err)
	}
	return n, nil
}

// GetNanoCPUs converts cpus ("1.5") to Docker's NanoCPUs (0 when unset).
func (d *DockerConfig) GetNanoCPUs() (int64, error) { return nanoCPUs("cpus", d.CPUs) }

// GetServiceNanoCPUs converts service_cpus to Docker's NanoCPUs (0 when unset).
func (d *DockerConfig) GetServiceNanoCPUs() (int64, error) {
	return nanoCPUs("service_cpus", d.ServiceCPUs)
}

func nanoCPUs(key, v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	r, ok := new(big.Rat).SetString(v)
	if !ok {
		return 0, fmt.Errorf("docker %s %q is not a number", key, v)
	}
	n, _ := r.Mul(r, big.NewRat(1e9, 1)).Float64()
	return int64(n), nil
}

// ShortToken is the part of a runner token that may be shown, as upstream shows it in logs and labels:
// the first 8 characters after the token-kind prefix (glrt-, glrtr-, or a legacy registration
// token's GR1348941).
func ShortToken(token string) string {
	for _, p := range []string{"glrt-", "glrtr-", "GR1348941"} {
		token = strings.TrimPrefix(token, p)
	}
	return token[:min(8, len(token))]
}
