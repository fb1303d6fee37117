package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
)

// Defaults, as upstream gitlab-runner applies them (../spec/upstream-runner.md §1, §2). A zero value in
// the structs means "unset"; the Get methods below return the effective value, and they are the only
// place where a default is applied or a value is parsed: executors and the manager consume their results.
const (
	// DefaultConcurrent: concurrent, written by register for a new file and used when the key is absent.
	DefaultConcurrent = 1
	// DefaultCheckInterval: check_interval = 3 (seconds), used when ≤ 0.
	DefaultCheckInterval = 3 * time.Second
	// DefaultShutdownTimeout: shutdown_timeout = 30 (seconds), used when ≤ 0.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultConnectionMaxAge: connection_max_age = "15m" when absent; 0 or negative keeps connections.
	DefaultConnectionMaxAge = 15 * time.Minute
	// DefaultOutputLimitKiB: output_limit = 4096 (KiB), used when ≤ 0.
	DefaultOutputLimitKiB = 4096
	// DefaultUnhealthyRequestsLimit: unhealthy_requests_limit, upstream's internal default of 3.
	DefaultUnhealthyRequestsLimit = 3
	// DefaultUnhealthyInterval: unhealthy_interval, upstream's internal default of 60 minutes.
	DefaultUnhealthyInterval = 60 * time.Minute
	// DefaultBuildsDir: builds_dir, the Docker executor's default on Linux.
	DefaultBuildsDir = "/builds"
	// DefaultCacheDir: cache_dir, the Docker executor's default on Linux.
	DefaultCacheDir = "/cache"
	// DefaultWaitForServicesTimeout: wait_for_services_timeout = 30 (seconds) when 0; -1 does not wait.
	DefaultWaitForServicesTimeout = 30 * time.Second
	// NoServicesLimit: services_limit = -1 (no limit), also the default.
	NoServicesLimit = -1

	// Pull policies (pull_policy, allowed_pull_policies); upstream's default pull_policy is ["always"].
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
func (d *DockerConfig) GetPullPolicies() ([]string, error) {
	if len(d.PullPolicy) == 0 {
		return []string{PullPolicyAlways}, nil
	}
	return pullPolicyList("pull_policy", d.PullPolicy)
}

// GetAllowedPullPolicies are the policies a job may ask for; by default those of pull_policy.
func (d *DockerConfig) GetAllowedPullPolicies() ([]string, error) {
	if len(d.AllowedPullPolicies) == 0 {
		return d.GetPullPolicies()
	}
	return pullPolicyList("allowed_pull_policies", d.AllowedPullPolicies)
}

func pullPolicyList(key string, policies []string) ([]string, error) {
	for _, p := range policies {
		if err := checkPullPolicy(p); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	return slices.Clone(policies), nil
}

// checkPullPolicy refuses what upstream refuses with "unsupported pull_policy config".
func checkPullPolicy(p string) error {
	if !slices.Contains(pullPolicies, p) {
		return fmt.Errorf("unsupported pull_policy %q (want always, if-not-present or never)", p)
	}
	return nil
}

// GetServicesPrivileged says whether service containers run privileged: services_privileged, else
// privileged (upstream's default).
func (d *DockerConfig) GetServicesPrivileged() bool {
	if d.ServicesPrivileged != nil {
		return *d.ServicesPrivileged
	}
	return d.Privileged
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

// GetServicesLimit is the most services a job may start; NoServicesLimit (-1) means no limit.
func (d *DockerConfig) GetServicesLimit() int {
	if d.ServicesLimit == nil {
		return NoServicesLimit
	}
	return *d.ServicesLimit
}

// ContainerResources are the cgroup limits of one kind of container (build or service), parsed from
// [runners.docker]. Zero means unset (the engine's default).
type ContainerResources struct {
	Memory, MemorySwap, MemoryReservation int64 // bytes
	NanoCPUs                              int64
	CPUShares                             int64
	CPUSetCPUs, CgroupParent              string
}

// GetBuildResources are the limits of the job's containers: memory, memory_swap, memory_reservation,
// cpus, cpu_shares, cpuset_cpus and cgroup_parent.
func (d *DockerConfig) GetBuildResources() (ContainerResources, error) {
	return resources(d.Memory, d.MemorySwap, d.MemoryReservation, d.CPUs, ContainerResources{
		CPUShares: d.CPUShares, CPUSetCPUs: d.CPUSetCPUs, CgroupParent: d.CgroupParent,
	}, "")
}

// GetServiceResources are the limits of service containers: the service_* counterparts.
func (d *DockerConfig) GetServiceResources() (ContainerResources, error) {
	return resources(d.ServiceMemory, d.ServiceMemorySwap, d.ServiceMemoryReservation, d.ServiceCPUs, ContainerResources{
		CPUShares: d.ServiceCPUShares, CPUSetCPUs: d.ServiceCPUSetCPUs, CgroupParent: d.ServiceCgroupParent,
	}, "service_")
}

func resources(memory, swap, reservation, cpus string, res ContainerResources, prefix string) (ContainerResources, error) {
	var errs []error
	for _, f := range []struct {
		key string
		v   string
		n   *int64
	}{{"memory", memory, &res.Memory}, {"memory_swap", swap, &res.MemorySwap}, {"memory_reservation", reservation, &res.MemoryReservation}} {
		var err error
		if *f.n, err = parseMemory(f.v); err != nil {
			errs = append(errs, fmt.Errorf("%s%s: %w", prefix, f.key, err))
		}
	}
	var err error
	if res.NanoCPUs, err = parseNanoCPUs(cpus); err != nil {
		errs = append(errs, fmt.Errorf("%scpus: %w", prefix, err))
	}
	return res, errors.Join(errs...)
}

// parseMemory reads a size as upstream does (go-units' RAMInBytes: "<n>[b|k|m|g]", binary units). A
// negative size such as "-1" is refused, as upstream refuses it. "" is 0 (unset).
func parseMemory(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := units.RAMInBytes(v)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q (want <number>[b|k|m|g], e.g. \"4g\")", v)
	}
	return n, nil
}

// parseNanoCPUs converts a number of CPUs ("1.5", upstream reads it as a rational number) to Docker's
// NanoCPUs. "" is 0 (unset), and so is "0".
func parseNanoCPUs(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	r, ok := new(big.Rat).SetString(v)
	if !ok || r.Sign() < 0 {
		return 0, fmt.Errorf("invalid number of CPUs %q (want a number such as \"1.5\")", v)
	}
	n, _ := r.Mul(r, big.NewRat(1e9, 1)).Float64()
	if n >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid number of CPUs %q (too large)", v)
	}
	return int64(n), nil
}

// DeviceMapping is one devices entry: "host[:container[:permissions]]", as docker run --device.
type DeviceMapping struct {
	PathOnHost, PathInContainer, CgroupPermissions string
}

// GetDevices are the devices of the job's containers.
func (d *DockerConfig) GetDevices() ([]DeviceMapping, error) {
	return deviceList("devices", d.Devices)
}

// GetServicesDevices are the devices of service containers, by image pattern (services_devices).
func (d *DockerConfig) GetServicesDevices() (map[string][]DeviceMapping, error) {
	var errs []error
	out := make(map[string][]DeviceMapping, len(d.ServicesDevices))
	for pattern, specs := range d.ServicesDevices {
		devs, err := deviceList("services_devices."+pattern, specs)
		errs = append(errs, err)
		out[pattern] = devs
	}
	return out, errors.Join(errs...)
}

func deviceList(key string, specs []string) ([]DeviceMapping, error) {
	var out []DeviceMapping
	for _, s := range specs {
		dm, err := parseDevice(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, dm)
	}
	return out, nil
}

// parseDevice reads "host[:container[:permissions]]"; the container path defaults to the host's and
// the permissions to rwm, as Docker's.
func parseDevice(s string) (DeviceMapping, error) {
	parts := strings.Split(s, ":")
	d := DeviceMapping{PathOnHost: parts[0], PathInContainer: parts[0], CgroupPermissions: "rwm"}
	switch len(parts) {
	case 1:
	case 2:
		d.PathInContainer = parts[1]
	case 3:
		d.PathInContainer, d.CgroupPermissions = parts[1], parts[2]
	default:
		return DeviceMapping{}, fmt.Errorf("device %q: use host[:container[:permissions]]", s)
	}
	return d, nil
}

// Ulimit is one ulimit entry: name = "soft[:hard]".
type Ulimit struct {
	Name       string
	Soft, Hard int64
}

// GetUlimits are the ulimits of the job's containers, in name order.
func (d *DockerConfig) GetUlimits() ([]Ulimit, error) {
	var out []Ulimit
	for _, name := range slices.Sorted(maps.Keys(d.Ulimit)) {
		u, err := parseUlimit(name, d.Ulimit[name])
		if err != nil {
			return nil, fmt.Errorf("ulimit: %w", err)
		}
		out = append(out, u)
	}
	return out, nil
}

// parseUlimit reads one entry as Docker does (go-units' ParseUlimit).
func parseUlimit(name, v string) (Ulimit, error) {
	u, err := units.ParseUlimit(name + "=" + v)
	if err != nil {
		return Ulimit{}, fmt.Errorf("%s = %q: %w", name, v, err)
	}
	return Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard}, nil
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
