package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // policy timezones must resolve on hosts without /usr/share/zoneinfo

	"github.com/robfig/cron/v3"
)

// Executors fleetrunner runs.
const (
	ExecutorDockerAutoscaler = "docker-autoscaler"
	ExecutorDocker           = "docker"
)

// upstreamOnlyExecutors are executor names upstream accepts and fleetrunner does not run: a runner
// entry using one loads with a warning and is not started.
var upstreamOnlyExecutors = []string{
	"shell", "docker-windows", "docker+machine", "docker-ssh", "docker-ssh+machine", "docker-autoscaler-windows",
	"ssh", "parallels", "virtualbox", "kubernetes", "custom", "instance",
}

// ExecutorSupported reports whether fleetrunner runs this entry's executor.
func (r *RunnerConfig) ExecutorSupported() bool {
	return r.Executor == ExecutorDockerAutoscaler || r.Executor == ExecutorDocker
}

var (
	cronParser   = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
	pullPolicies = []string{PullPolicyAlways, PullPolicyIfNotPresent, PullPolicyNever}
)

// Validate checks the decoded config and returns every problem, joined; each is a *FieldError naming
// its key path. Load already calls it; call it before Save when a command built or changed the config.
func (c *Config) Validate() error {
	return errors.Join(c.problems()...)
}

func (c *Config) problems() []error {
	var errs []error
	add := func(key, format string, args ...any) { errs = append(errs, fieldErr(key, format, args...)) }

	if c.Concurrent < 1 {
		add("concurrent", "must be at least 1 (the number of jobs run at once across all runners)")
	}
	if c.CheckInterval < 0 {
		add("check_interval", "must not be negative (seconds; 0 means the default 3)")
	}
	if c.ShutdownTimeout < 0 {
		add("shutdown_timeout", "must not be negative (seconds; 0 means the default 30)")
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "warning", "error", "fatal", "panic":
	default:
		add("log_level", "unsupported log_level %q (want debug, info, warn, error, fatal or panic)", c.LogLevel)
	}
	switch c.LogFormat {
	case "", "runner", "text", "json":
	default:
		add("log_format", "unsupported log_format %q (want runner, text or json)", c.LogFormat)
	}
	if c.ListenAddress != "" {
		if _, err := ListenAddress(c.ListenAddress); err != nil {
			add("listen_address", "%v", err)
		}
	}
	if c.SessionServer.SessionTimeout < 0 {
		add("session_server.session_timeout", "must not be negative")
	}
	for i, r := range c.Runners {
		if r == nil {
			add(fmt.Sprintf("runners[%d]", i), "empty entry")
			continue
		}
		errs = append(errs, r.problems(fmt.Sprintf("runners[%d]", i))...)
	}
	return errs
}

// ListenAddress returns the metrics listen address with upstream's default port 9252 added when
// none is given.
func ListenAddress(addr string) (string, error) {
	bad := fmt.Errorf("invalid listen address %q (want host:port or host, e.g. \":9252\")", addr)
	if _, port, err := net.SplitHostPort(addr); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return "", bad
		}
		return addr, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return "", bad
	}
	return net.JoinHostPort(host, "9252"), nil
}

func (r *RunnerConfig) problems(p string) []error {
	var errs []error
	add := func(key, format string, args ...any) { errs = append(errs, fieldErr(p+"."+key, format, args...)) }
	nonNegative := func(key string, v int64) {
		if v < 0 {
			add(key, "must not be negative")
		}
	}

	if r.URL == "" {
		add("url", "missing (the GitLab URL, e.g. \"https://gitlab.example.com\")")
	} else if err := checkHTTPURL(r.URL); err != nil {
		add("url", "%v", err)
	}
	if r.Token == "" {
		add("token", "missing (the runner authentication token; run `fleetrunner register`)")
	}
	switch {
	case r.Executor == "":
		add("executor", "missing (want %q or %q)", ExecutorDockerAutoscaler, ExecutorDocker)
	case r.ExecutorSupported(), slices.Contains(upstreamOnlyExecutors, r.Executor):
	default:
		add("executor", "unknown executor %q (fleetrunner runs %q and %q)", r.Executor, ExecutorDockerAutoscaler, ExecutorDocker)
	}
	if r.CloneURL != "" {
		if err := checkHTTPURL(r.CloneURL); err != nil {
			add("clone_url", "%v", err)
		}
	}
	if slices.Contains(upstreamOnlyExecutors, r.Executor) {
		// The entry is skipped with a warning (see lint); its executor settings are written for an
		// executor fleetrunner does not run (Windows shells and paths, npipe hosts, winrm), so judging
		// them by our rules would fail the whole file over an entry that is never started.
		return errs
	}
	if r.Limit < 0 {
		add("limit", "must not be negative (0 means no limit)")
	}
	nonNegative("request_concurrency", int64(r.RequestConcurrency))
	nonNegative("output_limit", int64(r.OutputLimit))
	nonNegative("unhealthy_requests_limit", int64(r.UnhealthyRequestsLimit))
	nonNegative("job_status_final_update_retry_limit", int64(r.JobStatusFinalUpdateRetryLimit))
	if r.UnhealthyInterval != nil {
		nonNegative("unhealthy_interval", int64(*r.UnhealthyInterval))
	}
	switch r.Shell {
	case "", "bash", "sh":
	default:
		add("shell", "unsupported shell %q (fleetrunner runs jobs on Linux: want bash or sh)", r.Shell)
	}
	for _, f := range []named[string]{{"builds_dir", r.BuildsDir}, {"cache_dir", r.CacheDir}} {
		if f.v != "" && !path.IsAbs(f.v) {
			add(f.key, "must be an absolute path, got %q", f.v)
		}
	}
	for i, env := range r.Environment {
		if k, _, ok := strings.Cut(env, "="); !ok || k == "" {
			add(fmt.Sprintf("environment[%d]", i), "want KEY=value, got %q", env)
		}
	}
	if r.Cache != nil {
		errs = append(errs, r.Cache.problems(p+".cache")...)
	}
	if r.Monitoring != nil {
		for i := range r.Monitoring.JobQueuingDurations {
			errs = append(errs, r.Monitoring.JobQueuingDurations[i].problems(fmt.Sprintf("%s.monitoring.job_queuing_durations[%d]", p, i))...)
		}
	}
	if r.Docker != nil {
		errs = append(errs, r.Docker.problems(p+".docker")...)
	} else if r.ExecutorSupported() {
		add("docker", "missing: executor %q needs a [runners.docker] table (at least image)", r.Executor)
	}
	if r.Autoscaler != nil {
		errs = append(errs, r.Autoscaler.problems(p+".autoscaler")...)
	} else if r.Executor == ExecutorDockerAutoscaler {
		add("autoscaler", "missing: executor %q needs a [runners.autoscaler] table (plugin, capacity, policy)", r.Executor)
	}
	return errs
}

func checkHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %v", raw, errors.Unwrap(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("unsupported URL scheme in %q (want http:// or https://)", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("no host in URL %q", raw)
	}
	return nil
}

func (c *CacheConfig) problems(p string) []error {
	var errs []error
	switch c.Type {
	case "", "s3", "gcs", "azure":
	default:
		errs = append(errs, fieldErr(p+".Type", "unsupported cache Type %q (want s3)", c.Type))
	}
	if c.MaxUploadedArchiveSize < 0 {
		errs = append(errs, fieldErr(p+".MaxUploadedArchiveSize", "must not be negative"))
	}
	if c.S3 != nil {
		switch strings.ToLower(c.S3.AuthenticationType) {
		case "", "iam", "access-key":
		default:
			errs = append(errs, fieldErr(p+".s3.AuthenticationType", "unsupported AuthenticationType %q (want iam or access-key)", c.S3.AuthenticationType))
		}
		if c.S3.ServerSideEncryption != "" && c.S3.GetServerSideEncryption() == "" {
			errs = append(errs, fieldErr(p+".s3.ServerSideEncryption", "unsupported ServerSideEncryption %q (want S3, KMS or DSSE-KMS)", c.S3.ServerSideEncryption))
		}
	}
	return errs
}

func (d *DockerConfig) problems(p string) []error {
	var errs []error
	add := func(key, format string, args ...any) { errs = append(errs, fieldErr(p+"."+key, format, args...)) }

	for _, f := range []named[[]string]{{"pull_policy", d.PullPolicy}, {"allowed_pull_policies", d.AllowedPullPolicies}} {
		for _, pol := range f.v {
			if err := checkPullPolicy(pol); err != nil {
				add(f.key, "%v", err)
			}
		}
	}
	if d.Host != "" {
		u, err := url.Parse(d.Host)
		if err != nil || !slices.Contains([]string{"unix", "tcp", "ssh", "http", "https"}, u.Scheme) {
			add("host", "unsupported Docker host %q (want unix:///path, tcp://host:port or ssh://user@host)", d.Host)
		}
	}
	for _, f := range []named[string]{
		{"memory", d.Memory}, {"memory_swap", d.MemorySwap}, {"memory_reservation", d.MemoryReservation},
		{"service_memory", d.ServiceMemory}, {"service_memory_swap", d.ServiceMemorySwap},
		{"service_memory_reservation", d.ServiceMemoryReservation},
	} {
		if _, err := parseMemory(f.v); err != nil {
			add(f.key, "%v", err)
		}
	}
	for _, f := range []named[string]{{"cpus", d.CPUs}, {"service_cpus", d.ServiceCPUs}} {
		if _, err := parseNanoCPUs(f.v); err != nil {
			add(f.key, "%v", err)
		}
	}
	for _, f := range []named[int64]{
		{"shm_size", d.ShmSize}, {"cpu_shares", d.CPUShares}, {"service_cpu_shares", d.ServiceCPUShares},
		{"network_mtu", int64(d.NetworkMTU)},
	} {
		if f.v < 0 {
			add(f.key, "must not be negative")
		}
	}
	for i, s := range d.Devices {
		if _, err := parseDevice(s); err != nil {
			add(fmt.Sprintf("devices[%d]", i), "%v", err)
		}
	}
	for _, pattern := range slices.Sorted(maps.Keys(d.ServicesDevices)) {
		for i, s := range d.ServicesDevices[pattern] {
			if _, err := parseDevice(s); err != nil {
				add(fmt.Sprintf("services_devices.%s[%d]", pattern, i), "%v", err)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(d.Ulimit)) {
		if _, err := parseUlimit(name, d.Ulimit[name]); err != nil {
			add("ulimit."+name, "%v", err)
		}
	}
	if d.OomScoreAdjust < -1000 || d.OomScoreAdjust > 1000 {
		add("oom_score_adjust", "must be between -1000 and 1000")
	}
	if d.WaitForServicesTimeout < -1 {
		add("wait_for_services_timeout", "must be -1 (do not wait), 0 (default 30) or a number of seconds")
	}
	if d.ServicesLimit != nil && *d.ServicesLimit < -1 {
		add("services_limit", "must be -1 (no limit) or more")
	}
	for i, s := range d.Services {
		if s.Name == "" {
			add(fmt.Sprintf("services[%d].name", i), "missing (the service image)")
		}
	}
	for k := range d.LogOptions {
		if k != "env" && k != "labels" {
			add("log_options."+k, "unsupported log option (only env and labels are allowed)")
		}
	}
	return errs
}

func (s *StateStorage) problems(p string) []error {
	var errs []error
	add := func(key, format string, args ...any) { errs = append(errs, fieldErr(p+"."+key, format, args...)) }

	switch s.GetBackend() {
	case StateBackendFile:
		for _, f := range []named[string]{
			{"dynamodb_table", s.DynamoDBTable}, {"dynamodb_region", s.DynamoDBRegion}, {"dynamodb_endpoint", s.DynamoDBEndpoint},
		} {
			if f.v != "" {
				add(f.key, "is set but backend is %q: set backend = %q to use it, or remove it", StateBackendFile, StateBackendDynamoDB)
			}
		}
		if s.LeaseDuration != 0 {
			add("lease_duration", "is set but backend is %q; it applies to backend = %q only: set that backend, or remove it", StateBackendFile, StateBackendDynamoDB)
		}
	case StateBackendDynamoDB:
		if s.DynamoDBTable == "" {
			add("dynamodb_table", "missing: backend %q needs the table's name (deploy/aws/fleetrunner-state-table.yaml creates one)", StateBackendDynamoDB)
		}
		if s.Enabled != nil && !*s.Enabled {
			add("backend", "is %q but enabled = false: a manager without state cannot share a runner with a standby", StateBackendDynamoDB)
		}
	default:
		add("backend", "unknown backend %q (%q or %q)", s.Backend, StateBackendFile, StateBackendDynamoDB)
	}
	if s.LeaseDuration != 0 && s.LeaseDuration < MinLeaseDuration {
		add("lease_duration", "must be at least %s (0 for the default %s), got %s", MinLeaseDuration, DefaultLeaseDuration, s.LeaseDuration)
	}
	return errs
}

func (a *AutoscalerConfig) problems(p string) []error {
	var errs []error
	add := func(key, format string, args ...any) { errs = append(errs, fieldErr(p+"."+key, format, args...)) }

	if a.Plugin == "" {
		add("plugin", "missing (the fleeting plugin, e.g. \"aws\")")
	}
	for _, f := range []named[int]{
		{"capacity_per_instance", a.CapacityPerInstance}, {"max_use_count", a.MaxUseCount},
		{"max_instances", a.MaxInstances}, {"shutdown_deletion_retries", a.ShutdownDeletionRetries},
		{"failure_threshold", a.FailureThreshold},
	} {
		if f.v < 0 {
			add(f.key, "must not be negative")
		}
	}
	if a.RolloutMaxDraining != nil {
		if err := a.RolloutMaxDraining.check(); err != nil {
			add("rollout_max_draining", "%v", err)
		}
	}
	for _, f := range []named[time.Duration]{
		{"instance_acquire_timeout", a.InstanceAcquireTimeout},
		{"update_interval", a.UpdateInterval},
		{"update_interval_when_expecting", a.UpdateIntervalWhenExpecting},
		{"interruption_check_interval", a.InterruptionCheckInterval},
		{"deletion_retry_interval", a.DeletionRetryInterval},
		{"shutdown_deletion_interval", a.ShutdownDeletionInterval},
		{"connector_config.keepalive", a.ConnectorConfig.Keepalive},
		{"connector_config.timeout", a.ConnectorConfig.Timeout},
	} {
		if f.v < 0 {
			add(f.key, "must not be negative")
		}
	}
	for _, f := range []named[[]float64]{
		{"instance_operation_time_buckets", a.InstanceOperationTimeBuckets},
		{"instance_creation_time_buckets", a.InstanceCreationTimeBuckets},
		{"instance_is_running_time_buckets", a.InstanceIsRunningTimeBuckets},
		{"instance_deletion_time_buckets", a.InstanceDeletionTimeBuckets},
		{"instance_readiness_time_buckets", a.InstanceReadinessTimeBuckets},
		{"instance_life_duration_buckets", a.InstanceLifeDurationBuckets},
	} {
		buckets := f.v
		for _, b := range buckets {
			if math.IsNaN(b) || math.IsInf(b, 0) {
				add(f.key, "bucket bound %v is not a finite number of seconds", b)
			}
		}
		for i := 1; i < len(buckets); i++ {
			if buckets[i] <= buckets[i-1] {
				add(f.key, "bucket bounds must increase (%v after %v)", buckets[i], buckets[i-1])
				break
			}
		}
	}
	if a.ScaleThrottle.Limit < -1 {
		add("scale_throttle.limit", "must be -1 (unlimited), 0 (default 100) or instances per second")
	}
	if a.ScaleThrottle.Burst < 0 {
		add("scale_throttle.burst", "must not be negative")
	}

	errs = append(errs, a.StateStorage.problems(p+".state_storage")...)

	if f := a.Forecast; f != nil {
		if f.History != 0 && (f.History < MinForecastHistory || f.History > MaxForecastHistory) {
			add("forecast.history", "must be between %s and %s (0 for the default %s), got %s",
				MinForecastHistory, MaxForecastHistory, DefaultForecastHistory, f.History)
		}
		if math.IsNaN(f.Quantile) || f.Quantile < 0 || f.Quantile > 1 {
			add("forecast.quantile", "must be above 0 and at most 1 (0 for the default %v), got %v", DefaultForecastQuantile, f.Quantile)
		}
		if f.Lead < 0 {
			add("forecast.lead", "must not be negative (0: the boot delay the taskscaler observes)")
		}
	}

	cc := a.ConnectorConfig
	switch cc.Protocol {
	case "", "ssh":
	default:
		add("connector_config.protocol", "unsupported protocol %q (fleetrunner connects to instances over ssh)", cc.Protocol)
	}
	switch cc.OS {
	case "", "linux":
	default:
		add("connector_config.os", "unsupported os %q (fleetrunner runs jobs on linux instances)", cc.OS)
	}
	if cc.ProtocolPort < 0 || cc.ProtocolPort > 65535 {
		add("connector_config.protocol_port", "must be a port number (1-65535, 0 for the default 22)")
	}

	for i, pol := range a.Policy {
		pp := fmt.Sprintf("policy[%d]", i)
		for j, period := range pol.Periods {
			if _, err := cronParser.Parse(period); err != nil {
				add(fmt.Sprintf("%s.periods[%d]", pp, j), "invalid cron period %q: %v (want 5 fields: minute hour day-of-month month day-of-week)", period, err)
			}
		}
		if pol.Timezone != "" {
			if _, err := time.LoadLocation(pol.Timezone); err != nil {
				add(pp+".timezone", "unknown timezone %q (want an IANA name such as \"UTC\" or \"Europe/Berlin\")", pol.Timezone)
			}
		}
		if pol.IdleCount < 0 {
			add(pp+".idle_count", "must not be negative")
		}
		if pol.IdleTime < 0 || (pol.IdleTime > 0 && pol.IdleTime < time.Second) {
			add(pp+".idle_time", "must be at least 1s (or 0), got %s (write a duration such as \"20m\"; a bare number counts nanoseconds)", pol.IdleTime)
		}
		if math.IsNaN(pol.ScaleFactor) || math.IsInf(pol.ScaleFactor, 0) {
			add(pp+".scale_factor", "must be a finite number, got %v", pol.ScaleFactor)
		} else if pol.ScaleFactor < 0 {
			add(pp+".scale_factor", "must not be negative")
		}
		if pol.ScaleFactorLimit < 0 {
			add(pp+".scale_factor_limit", "must not be negative")
		}
	}
	return errs
}

// lint finds what loads but will not be used: executors and settings fleetrunner does not run.
func (c *Config) lint() []Warning {
	var w []Warning
	warn := func(key, format string, args ...any) {
		w = append(w, Warning{Key: key, Message: fmt.Sprintf(format, args...)})
	}
	if c.SessionServer.ListenAddress != "" || c.SessionServer.AdvertiseAddress != "" {
		warn("session_server", "fleetrunner has no interactive web terminal; ignored")
	}
	if c.SentryDSN != nil && *c.SentryDSN != "" {
		warn("sentry_dsn", "fleetrunner does not report to Sentry; ignored")
	}
	if n := len(c.Runners); n > 1 && c.Concurrent < n {
		warn("concurrent", "%d is less than the number of [[runners]] (%d): runners will wait for each other's job slots", c.Concurrent, n)
	}
	seen := map[string]int{}
	for i, r := range c.Runners {
		if r == nil {
			continue
		}
		p := fmt.Sprintf("runners[%d]", i)
		if r.Executor != "" && !r.ExecutorSupported() && slices.Contains(upstreamOnlyExecutors, r.Executor) {
			warn(p+".executor", "executor %q is not run by fleetrunner (it runs %q and %q); this runner entry is skipped",
				r.Executor, ExecutorDockerAutoscaler, ExecutorDocker)
		}
		if r.Token != "" {
			id := r.URL + "\x00" + r.Token
			if j, dup := seen[id]; dup {
				warn(p, "same url and token as runners[%d]; both entries poll as one runner", j)
			} else {
				seen[id] = i
			}
		}
		if r.Monitoring != nil {
			for j, d := range r.Monitoring.JobQueuingDurations {
				if len(d.Periods) == 0 {
					warn(fmt.Sprintf("%s.monitoring.job_queuing_durations[%d].periods", p, j), "none set, so this entry is never in force")
				}
			}
		}
		if r.PreCloneScript != "" {
			warn(p+".pre_clone_script", "deprecated upstream; use pre_get_sources_script")
		}
		if r.PostCloneScript != "" {
			warn(p+".post_clone_script", "deprecated upstream; use post_get_sources_script")
		}
		for j, env := range r.Environment {
			k, v, _ := strings.Cut(env, "=")
			if strings.HasPrefix(k, "FF_") {
				if _, err := strconv.ParseBool(v); err != nil {
					warn(fmt.Sprintf("%s.environment[%d]", p, j), "feature flag %s=%q is not a boolean; its default is used", k, v)
				}
			}
		}
		if r.Cache != nil {
			w = append(w, r.Cache.lint(p+".cache")...)
		}
		if d := r.Docker; d != nil {
			const why = "fleetrunner builds its own helper image on each engine (upstream's helper images speak another command line); ignored"
			if d.HelperImage != "" {
				warn(p+".docker.helper_image", why)
			}
			if d.HelperImageFlavor != "" {
				warn(p+".docker.helper_image_flavor", why)
			}
			if d.HelperImageAutosetArchAndOS {
				warn(p+".docker.helper_image_autoset_arch_and_os", why)
			}
		}
		if r.Autoscaler != nil {
			if r.Executor == ExecutorDocker {
				warn(p+".autoscaler", "used only by executor %q; ignored", ExecutorDockerAutoscaler)
			}
			if len(r.Autoscaler.VMIsolation) > 0 {
				warn(p+".autoscaler.vm_isolation", "VM isolation (macOS nesting) is not supported by fleetrunner; ignored")
			}
		}
	}
	return w
}

// named is a value with its key, for checks that run over several keys in a fixed order.
type named[T any] struct {
	key string
	v   T
}
