package config

import (
	"fmt"
	"time"
)

// Config is the whole config.toml. Key names, types and defaults follow upstream gitlab-runner so that
// an upstream file loads unchanged (see ../shared/spec/upstream-runner.md §1–§3).
type Config struct {
	Concurrent       int               `toml:"concurrent" json:"concurrent"`
	CheckInterval    int               `toml:"check_interval,omitempty,omitzero" json:"check_interval"`
	LogLevel         string            `toml:"log_level,omitempty" json:"log_level"`
	LogFormat        string            `toml:"log_format,omitempty" json:"log_format"`
	ListenAddress    string            `toml:"listen_address,omitempty" json:"listen_address"`
	ShutdownTimeout  int               `toml:"shutdown_timeout,omitempty,omitzero" json:"shutdown_timeout"`
	ConnectionMaxAge *time.Duration    `toml:"connection_max_age,omitempty" json:"connection_max_age"`
	SentryDSN        *string           `toml:"sentry_dsn,omitempty" json:"sentry_dsn"`
	User             string            `toml:"user,omitempty" json:"user"`
	Labels           map[string]string `toml:"labels,omitempty" json:"labels"`
	SessionServer    SessionServer     `toml:"session_server,omitempty" json:"session_server"`

	Runners []*RunnerConfig `toml:"runners" json:"runners"`
}

// SessionServer is the interactive web terminal server; parsed for compatibility.
type SessionServer struct {
	ListenAddress    string `toml:"listen_address,omitempty" json:"listen_address"`
	AdvertiseAddress string `toml:"advertise_address,omitempty" json:"advertise_address"`
	SessionTimeout   int    `toml:"session_timeout,omitempty,omitzero" json:"session_timeout"`
}

// RunnerCredentials identify one registered runner against one GitLab.
type RunnerCredentials struct {
	URL             string    `toml:"url" json:"url"`
	ID              int64     `toml:"id" json:"id"`
	Token           string    `toml:"token" json:"-"`
	TokenObtainedAt time.Time `toml:"token_obtained_at,omitempty" json:"token_obtained_at"`
	TokenExpiresAt  time.Time `toml:"token_expires_at,omitempty" json:"token_expires_at"`
	TLSCAFile       string    `toml:"tls-ca-file,omitempty" json:"tls-ca-file"`
	TLSCertFile     string    `toml:"tls-cert-file,omitempty" json:"tls-cert-file"`
	TLSKeyFile      string    `toml:"tls-key-file,omitempty" json:"tls-key-file"`
}

// RunnerConfig is one [[runners]] entry.
type RunnerConfig struct {
	Name string `toml:"name" json:"name"`
	RunnerCredentials

	Executor                       string            `toml:"executor" json:"executor"`
	Limit                          int               `toml:"limit,omitempty,omitzero" json:"limit"`
	RequestConcurrency             int               `toml:"request_concurrency,omitempty,omitzero" json:"request_concurrency"`
	StrictCheckInterval            bool              `toml:"strict_check_interval,omitempty" json:"strict_check_interval"`
	OutputLimit                    int               `toml:"output_limit,omitempty,omitzero" json:"output_limit"`
	Shell                          string            `toml:"shell,omitempty" json:"shell"`
	BuildsDir                      string            `toml:"builds_dir,omitempty" json:"builds_dir"`
	CacheDir                       string            `toml:"cache_dir,omitempty" json:"cache_dir"`
	Environment                    []string          `toml:"environment,omitempty" json:"environment"`
	CloneURL                       string            `toml:"clone_url,omitempty" json:"clone_url"`
	PreGetSourcesScript            string            `toml:"pre_get_sources_script,omitempty" json:"pre_get_sources_script"`
	PostGetSourcesScript           string            `toml:"post_get_sources_script,omitempty" json:"post_get_sources_script"`
	PreCloneScript                 string            `toml:"pre_clone_script,omitempty" json:"pre_clone_script"`
	PostCloneScript                string            `toml:"post_clone_script,omitempty" json:"post_clone_script"`
	PreBuildScript                 string            `toml:"pre_build_script,omitempty" json:"pre_build_script"`
	PostBuildScript                string            `toml:"post_build_script,omitempty" json:"post_build_script"`
	DebugTraceDisabled             bool              `toml:"debug_trace_disabled,omitempty" json:"debug_trace_disabled"`
	CleanGitConfig                 *bool             `toml:"clean_git_config,omitempty" json:"clean_git_config"`
	SafeDirectoryCheckout          *bool             `toml:"safe_directory_checkout,omitempty" json:"safe_directory_checkout"`
	UnhealthyRequestsLimit         int               `toml:"unhealthy_requests_limit,omitempty,omitzero" json:"unhealthy_requests_limit"`
	UnhealthyInterval              *time.Duration    `toml:"unhealthy_interval,omitempty" json:"unhealthy_interval"`
	JobStatusFinalUpdateRetryLimit int               `toml:"job_status_final_update_retry_limit,omitempty,omitzero" json:"job_status_final_update_retry_limit"`
	FeatureFlags                   map[string]bool   `toml:"feature_flags,omitempty" json:"feature_flags"`
	Labels                         map[string]string `toml:"labels,omitempty" json:"labels"`
	CustomBuildDir                 CustomBuildDir    `toml:"custom_build_dir,omitempty" json:"custom_build_dir"`

	Cache      *CacheConfig      `toml:"cache,omitempty" json:"cache"`
	Docker     *DockerConfig     `toml:"docker,omitempty" json:"docker"`
	Autoscaler *AutoscalerConfig `toml:"autoscaler,omitempty" json:"autoscaler"`
	Monitoring *Monitoring       `toml:"monitoring,omitempty" json:"monitoring"`
}

// CustomBuildDir allows GIT_CLONE_PATH.
type CustomBuildDir struct {
	Enabled *bool `toml:"enabled,omitempty" json:"enabled"`
}

// CacheConfig is [runners.cache]. Upstream spells these keys in CamelCase.
type CacheConfig struct {
	Type                   string         `toml:"Type,omitempty" json:"Type"`
	Path                   string         `toml:"Path,omitempty" json:"Path"`
	Shared                 bool           `toml:"Shared,omitempty" json:"Shared"`
	MaxUploadedArchiveSize int64          `toml:"MaxUploadedArchiveSize,omitempty,omitzero" json:"MaxUploadedArchiveSize"`
	S3                     *CacheS3       `toml:"s3,omitempty" json:"s3"`
	GCS                    map[string]any `toml:"gcs,omitempty" json:"gcs"`
	Azure                  map[string]any `toml:"azure,omitempty" json:"azure"`

	// Upstream's older flat layout kept these S3 keys directly under [runners.cache]. They are read
	// (GetS3 merges them under [runners.cache.s3]) and warned about.
	LegacyServerAddress  string `toml:"ServerAddress,omitempty" json:"-"`
	LegacyAccessKey      string `toml:"AccessKey,omitempty" json:"-"`
	LegacySecretKey      string `toml:"SecretKey,omitempty" json:"-"`
	LegacyBucketName     string `toml:"BucketName,omitempty" json:"-"`
	LegacyBucketLocation string `toml:"BucketLocation,omitempty" json:"-"`
	LegacyInsecure       bool   `toml:"Insecure,omitempty" json:"-"`
}

// CacheS3 is [runners.cache.s3].
type CacheS3 struct {
	ServerAddress             string `toml:"ServerAddress,omitempty" json:"ServerAddress"`
	AccessKey                 string `toml:"AccessKey,omitempty" json:"-"`
	SecretKey                 string `toml:"SecretKey,omitempty" json:"-"`
	SessionToken              string `toml:"SessionToken,omitempty" json:"-"`
	BucketName                string `toml:"BucketName,omitempty" json:"BucketName"`
	BucketLocation            string `toml:"BucketLocation,omitempty" json:"BucketLocation"`
	Insecure                  bool   `toml:"Insecure,omitempty" json:"Insecure"`
	AuthenticationType        string `toml:"AuthenticationType,omitempty" json:"AuthenticationType"`
	ServerSideEncryption      string `toml:"ServerSideEncryption,omitempty" json:"ServerSideEncryption"`
	ServerSideEncryptionKeyID string `toml:"ServerSideEncryptionKeyID,omitempty" json:"ServerSideEncryptionKeyID"`
	DualStack                 *bool  `toml:"DualStack,omitempty" json:"DualStack"`
	PathStyle                 *bool  `toml:"PathStyle,omitempty" json:"PathStyle"`
	Accelerate                bool   `toml:"Accelerate,omitempty" json:"Accelerate"`
	RoleARN                   string `toml:"RoleARN,omitempty" json:"RoleARN"`
	UploadRoleARN             string `toml:"UploadRoleARN,omitempty" json:"UploadRoleARN"`
}

// StringOrSlice reads a TOML value written either as one string or as an array of strings
// (upstream's pull_policy accepts both).
type StringOrSlice []string

// UnmarshalTOML implements toml.Unmarshaler.
func (s *StringOrSlice) UnmarshalTOML(data any) error {
	switch v := data.(type) {
	case string:
		*s = StringOrSlice{v}
	case []any:
		out := make(StringOrSlice, 0, len(v))
		for i, item := range v {
			str, ok := item.(string)
			if !ok {
				return fmt.Errorf("element %d is %s, want a string", i, describeTOML(item))
			}
			out = append(out, str)
		}
		*s = out
	default:
		return fmt.Errorf("want a string or an array of strings, got %s", describeTOML(data))
	}
	return nil
}

// DockerService is one [[runners.docker.services]] entry.
type DockerService struct {
	Name        string   `toml:"name" json:"name"`
	Alias       string   `toml:"alias,omitempty" json:"alias"`
	Entrypoint  []string `toml:"entrypoint,omitempty" json:"entrypoint"`
	Command     []string `toml:"command,omitempty" json:"command"`
	Environment []string `toml:"environment,omitempty" json:"environment"`
}

// DockerConfig is [runners.docker], shared by the docker and docker-autoscaler executors.
type DockerConfig struct {
	Image                       string              `toml:"image" json:"image"`
	Host                        string              `toml:"host,omitempty" json:"host"`
	TLSCertPath                 string              `toml:"tls_cert_path,omitempty" json:"tls_cert_path"`
	TLSVerify                   bool                `toml:"tls_verify,omitempty" json:"tls_verify"`
	Hostname                    string              `toml:"hostname,omitempty" json:"hostname"`
	Privileged                  bool                `toml:"privileged,omitempty" json:"privileged"`
	ServicesPrivileged          *bool               `toml:"services_privileged,omitempty" json:"services_privileged"`
	AllowedPrivilegedImages     []string            `toml:"allowed_privileged_images,omitempty" json:"allowed_privileged_images"`
	AllowedPrivilegedServices   []string            `toml:"allowed_privileged_services,omitempty" json:"allowed_privileged_services"`
	AllowedImages               []string            `toml:"allowed_images,omitempty" json:"allowed_images"`
	AllowedServices             []string            `toml:"allowed_services,omitempty" json:"allowed_services"`
	PullPolicy                  StringOrSlice       `toml:"pull_policy,omitempty" json:"pull_policy"`
	AllowedPullPolicies         []string            `toml:"allowed_pull_policies,omitempty" json:"allowed_pull_policies"`
	Volumes                     []string            `toml:"volumes,omitempty" json:"volumes"`
	VolumesFrom                 []string            `toml:"volumes_from,omitempty" json:"volumes_from"`
	VolumeDriver                string              `toml:"volume_driver,omitempty" json:"volume_driver"`
	VolumeDriverOps             map[string]string   `toml:"volume_driver_ops,omitempty" json:"volume_driver_ops"`
	DisableCache                bool                `toml:"disable_cache,omitempty" json:"disable_cache"`
	CacheDir                    string              `toml:"cache_dir,omitempty" json:"cache_dir"`
	Memory                      string              `toml:"memory,omitempty" json:"memory"`
	MemorySwap                  string              `toml:"memory_swap,omitempty" json:"memory_swap"`
	MemoryReservation           string              `toml:"memory_reservation,omitempty" json:"memory_reservation"`
	CPUs                        string              `toml:"cpus,omitempty" json:"cpus"`
	CPUShares                   int64               `toml:"cpu_shares,omitempty,omitzero" json:"cpu_shares"`
	CPUSetCPUs                  string              `toml:"cpuset_cpus,omitempty" json:"cpuset_cpus"`
	CPUSetMems                  string              `toml:"cpuset_mems,omitempty" json:"cpuset_mems"`
	CgroupParent                string              `toml:"cgroup_parent,omitempty" json:"cgroup_parent"`
	ServiceMemory               string              `toml:"service_memory,omitempty" json:"service_memory"`
	ServiceMemorySwap           string              `toml:"service_memory_swap,omitempty" json:"service_memory_swap"`
	ServiceMemoryReservation    string              `toml:"service_memory_reservation,omitempty" json:"service_memory_reservation"`
	ServiceCPUs                 string              `toml:"service_cpus,omitempty" json:"service_cpus"`
	ServiceCPUShares            int64               `toml:"service_cpu_shares,omitempty,omitzero" json:"service_cpu_shares"`
	ServiceCPUSetCPUs           string              `toml:"service_cpuset_cpus,omitempty" json:"service_cpuset_cpus"`
	ServiceGPUs                 string              `toml:"service_gpus,omitempty" json:"service_gpus"`
	ServiceCgroupParent         string              `toml:"service_cgroup_parent,omitempty" json:"service_cgroup_parent"`
	ServiceSlotCgroupTemplate   string              `toml:"service_slot_cgroup_template,omitempty" json:"service_slot_cgroup_template"`
	ShmSize                     int64               `toml:"shm_size,omitempty,omitzero" json:"shm_size"`
	NetworkMode                 string              `toml:"network_mode,omitempty" json:"network_mode"`
	NetworkMTU                  int                 `toml:"network_mtu,omitempty,omitzero" json:"network_mtu"`
	EnableIPv6                  bool                `toml:"enable_ipv6,omitempty" json:"enable_ipv6"`
	DNS                         []string            `toml:"dns,omitempty" json:"dns"`
	DNSSearch                   []string            `toml:"dns_search,omitempty" json:"dns_search"`
	ExtraHosts                  []string            `toml:"extra_hosts,omitempty" json:"extra_hosts"`
	Links                       []string            `toml:"links,omitempty" json:"links"`
	MacAddress                  string              `toml:"mac_address,omitempty" json:"mac_address"`
	IpcMode                     string              `toml:"ipcmode,omitempty" json:"ipcmode"`
	CapAdd                      []string            `toml:"cap_add,omitempty" json:"cap_add"`
	CapDrop                     []string            `toml:"cap_drop,omitempty" json:"cap_drop"`
	SecurityOpt                 []string            `toml:"security_opt,omitempty" json:"security_opt"`
	ServicesSecurityOpt         []string            `toml:"services_security_opt,omitempty" json:"services_security_opt"`
	Devices                     []string            `toml:"devices,omitempty" json:"devices"`
	DeviceCgroupRules           []string            `toml:"device_cgroup_rules,omitempty" json:"device_cgroup_rules"`
	ServicesDevices             map[string][]string `toml:"services_devices,omitempty" json:"services_devices"`
	GPUs                        string              `toml:"gpus,omitempty" json:"gpus"`
	GroupAdd                    []string            `toml:"group_add,omitempty" json:"group_add"`
	UsernsMode                  string              `toml:"userns_mode,omitempty" json:"userns_mode"`
	Runtime                     string              `toml:"runtime,omitempty" json:"runtime"`
	Isolation                   string              `toml:"isolation,omitempty" json:"isolation"`
	Sysctls                     map[string]string   `toml:"sysctls,omitempty" json:"sysctls"`
	Ulimit                      map[string]string   `toml:"ulimit,omitempty" json:"ulimit"`
	OomKillDisable              bool                `toml:"oom_kill_disable,omitempty" json:"oom_kill_disable"`
	OomScoreAdjust              int                 `toml:"oom_score_adjust,omitempty,omitzero" json:"oom_score_adjust"`
	User                        string              `toml:"user,omitempty" json:"user"`
	AllowedUsers                []string            `toml:"allowed_users,omitempty" json:"allowed_users"`
	HelperImage                 string              `toml:"helper_image,omitempty" json:"helper_image"`
	HelperImageFlavor           string              `toml:"helper_image_flavor,omitempty" json:"helper_image_flavor"`
	HelperImageAutosetArchAndOS bool                `toml:"helper_image_autoset_arch_and_os,omitempty" json:"helper_image_autoset_arch_and_os"`
	WaitForServicesTimeout      int                 `toml:"wait_for_services_timeout,omitempty,omitzero" json:"wait_for_services_timeout"`
	ServicesLimit               *int                `toml:"services_limit,omitempty" json:"services_limit"`
	DisableEntrypointOverwrite  bool                `toml:"disable_entrypoint_overwrite,omitempty" json:"disable_entrypoint_overwrite"`
	ContainerLabels             map[string]string   `toml:"container_labels,omitempty" json:"container_labels"`
	Tmpfs                       map[string]string   `toml:"tmpfs,omitempty" json:"tmpfs"`
	ServicesTmpfs               map[string]string   `toml:"services_tmpfs,omitempty" json:"services_tmpfs"`
	LogOptions                  map[string]string   `toml:"log_options,omitempty" json:"log_options"`
	Services                    []DockerService     `toml:"services,omitempty" json:"services"`
}

// AutoscalerConfig is [runners.autoscaler].
type AutoscalerConfig struct {
	Plugin                       string                   `toml:"plugin" json:"plugin"`
	CapacityPerInstance          int                      `toml:"capacity_per_instance,omitempty,omitzero" json:"capacity_per_instance"`
	MaxUseCount                  int                      `toml:"max_use_count,omitempty,omitzero" json:"max_use_count"`
	MaxInstances                 int                      `toml:"max_instances,omitempty,omitzero" json:"max_instances"`
	InstanceReadyCommand         string                   `toml:"instance_ready_command,omitempty" json:"instance_ready_command"`
	InstanceAcquireTimeout       time.Duration            `toml:"instance_acquire_timeout,omitempty,omitzero" json:"instance_acquire_timeout"`
	UpdateInterval               time.Duration            `toml:"update_interval,omitempty,omitzero" json:"update_interval"`
	UpdateIntervalWhenExpecting  time.Duration            `toml:"update_interval_when_expecting,omitempty,omitzero" json:"update_interval_when_expecting"`
	InterruptionCheckInterval    time.Duration            `toml:"interruption_check_interval,omitempty,omitzero" json:"interruption_check_interval"`
	RolloutMaxDraining           *Pace                    `toml:"rollout_max_draining,omitempty" json:"rollout_max_draining"`
	DeletionRetryInterval        time.Duration            `toml:"deletion_retry_interval,omitempty,omitzero" json:"deletion_retry_interval"`
	ShutdownDeletionInterval     time.Duration            `toml:"shutdown_deletion_interval,omitempty,omitzero" json:"shutdown_deletion_interval"`
	ShutdownDeletionRetries      int                      `toml:"shutdown_deletion_retries,omitempty,omitzero" json:"shutdown_deletion_retries"`
	FailureThreshold             int                      `toml:"failure_threshold,omitempty,omitzero" json:"failure_threshold"`
	DeleteInstancesOnShutdown    bool                     `toml:"delete_instances_on_shutdown,omitempty" json:"delete_instances_on_shutdown"`
	LogInternalIP                bool                     `toml:"log_internal_ip,omitempty" json:"log_internal_ip"`
	LogExternalIP                bool                     `toml:"log_external_ip,omitempty" json:"log_external_ip"`
	ReservationThrottling        *bool                    `toml:"reservation_throttling,omitempty" json:"reservation_throttling"`
	InstanceOperationTimeBuckets []float64                `toml:"instance_operation_time_buckets,omitempty" json:"instance_operation_time_buckets"`
	InstanceCreationTimeBuckets  []float64                `toml:"instance_creation_time_buckets,omitempty" json:"instance_creation_time_buckets"`
	InstanceIsRunningTimeBuckets []float64                `toml:"instance_is_running_time_buckets,omitempty" json:"instance_is_running_time_buckets"`
	InstanceDeletionTimeBuckets  []float64                `toml:"instance_deletion_time_buckets,omitempty" json:"instance_deletion_time_buckets"`
	InstanceReadinessTimeBuckets []float64                `toml:"instance_readiness_time_buckets,omitempty" json:"instance_readiness_time_buckets"`
	InstanceLifeDurationBuckets  []float64                `toml:"instance_life_duration_buckets,omitempty" json:"instance_life_duration_buckets"`
	PluginConfig                 PluginConfig             `toml:"plugin_config,omitempty" json:"plugin_config"`
	ConnectorConfig              ConnectorConfig          `toml:"connector_config,omitempty" json:"connector_config"`
	Policy                       []AutoscalerPolicyConfig `toml:"policy,omitempty" json:"policy"`
	StateStorage                 StateStorage             `toml:"state_storage,omitempty" json:"state_storage"`
	ScaleThrottle                ScaleThrottle            `toml:"scale_throttle,omitempty" json:"scale_throttle"`
	VMIsolation                  map[string]any           `toml:"vm_isolation,omitempty" json:"vm_isolation"`

	// Forecast is fleetrunner's own.
	Forecast *AutoscalerForecastConfig `toml:"forecast,omitempty" json:"forecast"`
}

// PluginConfig is the free-form [runners.autoscaler.plugin_config] table. It is passed to the plugin
// untouched, nested tables included, as JSON.
type PluginConfig map[string]any

// ConnectorConfig is [runners.autoscaler.connector_config].
type ConnectorConfig struct {
	OS                   string        `toml:"os,omitempty" json:"os"`
	Arch                 string        `toml:"arch,omitempty" json:"arch"`
	Protocol             string        `toml:"protocol,omitempty" json:"protocol"`
	ProtocolPort         int           `toml:"protocol_port,omitempty,omitzero" json:"protocol_port"`
	Username             string        `toml:"username,omitempty" json:"username"`
	Password             string        `toml:"password,omitempty" json:"-"`
	KeyPath              string        `toml:"key_path,omitempty" json:"key_path"`
	UseStaticCredentials bool          `toml:"use_static_credentials,omitempty" json:"use_static_credentials"`
	Keepalive            time.Duration `toml:"keepalive,omitempty,omitzero" json:"keepalive"`
	Timeout              time.Duration `toml:"timeout,omitempty,omitzero" json:"timeout"`
	UseExternalAddr      bool          `toml:"use_external_addr,omitempty" json:"use_external_addr"`
}

// AutoscalerPolicyConfig is one [[runners.autoscaler.policy]] entry; the last matching entry wins.
type AutoscalerPolicyConfig struct {
	Periods          []string      `toml:"periods,omitempty" json:"periods"`
	Timezone         string        `toml:"timezone,omitempty" json:"timezone"`
	IdleCount        int           `toml:"idle_count,omitempty,omitzero" json:"idle_count"`
	IdleTime         time.Duration `toml:"idle_time,omitempty,omitzero" json:"idle_time"`
	ScaleFactor      float64       `toml:"scale_factor,omitempty,omitzero" json:"scale_factor"`
	ScaleFactorLimit int           `toml:"scale_factor_limit,omitempty,omitzero" json:"scale_factor_limit"`
	PreemptiveMode   *bool         `toml:"preemptive_mode,omitempty" json:"preemptive_mode"`
}

// StateStorage is [runners.autoscaler.state_storage]. fleetrunner keeps state by default; an explicit
// `enabled = false` turns it off.
type StateStorage struct {
	Enabled                      *bool  `toml:"enabled,omitempty" json:"enabled"`
	Dir                          string `toml:"dir,omitempty" json:"dir"`
	KeepInstanceWithAcquisitions bool   `toml:"keep_instance_with_acquisitions,omitempty" json:"keep_instance_with_acquisitions"`
	// Backend and the keys below are fleetrunner's own: "dynamodb" keeps the state in a table shared by
	// the managers of a high-availability pair, with a lease per runner (docs/ha.md).
	Backend          string        `toml:"backend,omitempty" json:"backend"`
	DynamoDBTable    string        `toml:"dynamodb_table,omitempty" json:"dynamodb_table"`
	DynamoDBRegion   string        `toml:"dynamodb_region,omitempty" json:"dynamodb_region"`
	DynamoDBEndpoint string        `toml:"dynamodb_endpoint,omitempty" json:"dynamodb_endpoint"`
	LeaseDuration    time.Duration `toml:"lease_duration,omitempty,omitzero" json:"lease_duration"`
}

// AutoscalerForecastConfig is [runners.autoscaler.forecast], fleetrunner's own: the idle count follows
// the demand learnt from the runner's own job arrivals by hour of week instead of the policy's idle_count.
type AutoscalerForecastConfig struct {
	Enabled  bool          `toml:"enabled,omitempty" json:"enabled"`
	History  time.Duration `toml:"history,omitempty,omitzero" json:"history"`
	Quantile float64       `toml:"quantile,omitempty,omitzero" json:"quantile"`
	Lead     time.Duration `toml:"lead,omitempty,omitzero" json:"lead"`
}

// ScaleThrottle is [runners.autoscaler.scale_throttle]: a token bucket on instance creation.
type ScaleThrottle struct {
	Limit int `toml:"limit,omitempty,omitzero" json:"limit"`
	Burst int `toml:"burst,omitempty,omitzero" json:"burst"`
}
