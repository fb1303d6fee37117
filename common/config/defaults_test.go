package config

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestDefaults(t *testing.T) {
	var c Config
	var r RunnerConfig
	var d DockerConfig
	var a AutoscalerConfig
	var p AutoscalerPolicyConfig
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"check_interval", c.GetCheckInterval(), 3 * time.Second},
		{"shutdown_timeout", c.GetShutdownTimeout(), 30 * time.Second},
		{"connection_max_age", c.GetConnectionMaxAge(), 15 * time.Minute},
		{"output_limit", r.GetOutputLimit(), int64(4096 * 1024)},
		{"request_concurrency", r.GetRequestConcurrency(), 1},
		{"unhealthy_requests_limit", r.GetUnhealthyRequestsLimit(), 3},
		{"unhealthy_interval", r.GetUnhealthyInterval(), 60 * time.Minute},
		{"builds_dir", r.GetBuildsDir(), "/builds"},
		{"cache_dir", r.GetCacheDir(), "/cache"},
		{"custom_build_dir", r.GetCustomBuildDirEnabled(), true},
		{"pull_policy", must(d.GetPullPolicies()), []string{"always"}},
		{"allowed_pull_policies", must(d.GetAllowedPullPolicies()), []string{"always"}},
		{"wait_for_services_timeout", d.GetWaitForServicesTimeout(), 30 * time.Second},
		{"services_limit", d.GetServicesLimit(), -1},
		{"services_privileged follows privileged", (&DockerConfig{Privileged: true}).GetServicesPrivileged(), true},
		{"capacity_per_instance", a.GetCapacityPerInstance(), 1},
		{"instance_acquire_timeout", a.GetInstanceAcquireTimeout(), 15 * time.Minute},
		{"update_interval", a.GetUpdateInterval(), time.Minute},
		{"update_interval_when_expecting", a.GetUpdateIntervalWhenExpecting(), 2 * time.Second},
		{"interruption_check_interval", a.GetInterruptionCheckInterval(), 5 * time.Second},
		{"deletion_retry_interval", a.GetDeletionRetryInterval(), time.Minute},
		{"shutdown_deletion_interval", a.GetShutdownDeletionInterval(), 10 * time.Second},
		{"shutdown_deletion_retries", a.GetShutdownDeletionRetries(), 3},
		{"failure_threshold", a.GetFailureThreshold(), 3},
		{"reservation_throttling", a.GetReservationThrottling(), true},
		{"scale_throttle.limit", a.GetScaleThrottleLimit(), 100},
		{"scale_throttle.burst without max_instances", a.GetScaleThrottleBurst(), 100},
		{"state_storage.enabled", a.StateStorageEnabled(), true},
		{"state_storage.dir", a.StateStorageDir("/etc/fleetrunner"), "/etc/fleetrunner/.taskscaler"},
		{"state_storage.backend", a.StateStorage.GetBackend(), "file"},
		{"state_storage.lease_duration", a.StateStorage.GetLeaseDuration(), 15 * time.Second},
		{"periods", p.GetPeriods(), []string{"* * * * *"}},
		{"preemptive_mode with idle_count 0", p.GetPreemptiveMode(), false},
	} {
		if !equal(tt.got, tt.want) {
			t.Errorf("default %s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestSetValuesWinOverDefaults(t *testing.T) {
	c := Config{CheckInterval: 10, ShutdownTimeout: 5, ConnectionMaxAge: ptr(time.Duration(0))}
	r := RunnerConfig{OutputLimit: 10, RequestConcurrency: 4, UnhealthyRequestsLimit: 7, UnhealthyInterval: ptr(time.Minute),
		BuildsDir: "/b", CacheDir: "/c", PreCloneScript: "old", PostGetSourcesScript: "new", PostCloneScript: "old",
		CustomBuildDir: CustomBuildDir{Enabled: ptr(false)}, CleanGitConfig: ptr(false)}
	d := DockerConfig{PullPolicy: StringOrSlice{"if-not-present"}, WaitForServicesTimeout: -1, ServicesLimit: ptr(2)}
	a := AutoscalerConfig{CapacityPerInstance: 4, MaxInstances: 8, ScaleThrottle: ScaleThrottle{Limit: -1},
		ReservationThrottling: ptr(false), StateStorage: StateStorage{Enabled: ptr(false), Dir: "state"}}
	ha := StateStorage{Backend: "dynamodb", LeaseDuration: 30 * time.Second}
	p := AutoscalerPolicyConfig{IdleCount: 2}
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"check_interval", c.GetCheckInterval(), 10 * time.Second},
		{"shutdown_timeout", c.GetShutdownTimeout(), 5 * time.Second},
		{"connection_max_age 0", c.GetConnectionMaxAge(), time.Duration(0)},
		{"output_limit", r.GetOutputLimit(), int64(10 * 1024)},
		{"request_concurrency", r.GetRequestConcurrency(), 4},
		{"unhealthy_requests_limit", r.GetUnhealthyRequestsLimit(), 7},
		{"unhealthy_interval", r.GetUnhealthyInterval(), time.Minute},
		{"builds_dir", r.GetBuildsDir(), "/b"},
		{"cache_dir", r.GetCacheDir(), "/c"},
		{"pre_clone_script alias", r.GetPreGetSourcesScript(), "old"},
		{"post_get_sources_script wins", r.GetPostGetSourcesScript(), "new"},
		{"custom_build_dir", r.GetCustomBuildDirEnabled(), false},
		{"allowed_pull_policies follows pull_policy", must(d.GetAllowedPullPolicies()), []string{"if-not-present"}},
		{"wait_for_services_timeout -1", d.GetWaitForServicesTimeout(), time.Duration(0)},
		{"services_limit", d.GetServicesLimit(), 2},
		{"services_privileged", (&DockerConfig{Privileged: true, ServicesPrivileged: ptr(false)}).GetServicesPrivileged(), false},
		{"capacity_per_instance", a.GetCapacityPerInstance(), 4},
		{"scale_throttle unlimited", a.GetScaleThrottleLimit(), ScaleThrottleUnlimited},
		{"scale_throttle.burst = max_instances", a.GetScaleThrottleBurst(), 8},
		{"reservation_throttling", a.GetReservationThrottling(), false},
		{"state_storage off", a.StateStorageEnabled(), false},
		{"relative state dir", a.StateStorageDir("/etc/fleetrunner"), filepath.Join("/etc/fleetrunner", "state")},
		{"state_storage.backend", ha.GetBackend(), "dynamodb"},
		{"state_storage.lease_duration", ha.GetLeaseDuration(), 30 * time.Second},
		{"preemptive_mode with idle_count 2", p.GetPreemptiveMode(), true},
	} {
		if !equal(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	p.PreemptiveMode = ptr(false)
	if p.GetPreemptiveMode() {
		t.Error("explicit preemptive_mode = false ignored")
	}
	a.StateStorage.Dir = "/var/lib/x/"
	if got := a.StateStorageDir("/etc/fleetrunner"); got != "/var/lib/x" {
		t.Errorf("absolute state dir = %s", got)
	}
}

func equal(a, b any) bool {
	if as, ok := a.([]string); ok {
		bs, ok := b.([]string)
		return ok && slices.Equal(as, bs)
	}
	return a == b
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestDockerResources(t *testing.T) {
	d := DockerConfig{Memory: "4g", MemorySwap: "6g", MemoryReservation: "512m", CPUs: "1.5", CPUShares: 512, CgroupParent: "ci",
		ServiceMemory: "1g", ServiceCPUs: "1/2", ServiceCPUSetCPUs: "0-1"}
	build, err := d.GetBuildResources()
	if want := (ContainerResources{Memory: 4 << 30, MemorySwap: 6 << 30, MemoryReservation: 512 << 20, NanoCPUs: 1_500_000_000,
		CPUShares: 512, CgroupParent: "ci"}); err != nil || build != want {
		t.Errorf("build resources = %+v, %v; want %+v", build, err, want)
	}
	svc, err := d.GetServiceResources()
	if want := (ContainerResources{Memory: 1 << 30, NanoCPUs: 500_000_000, CPUSetCPUs: "0-1"}); err != nil || svc != want {
		t.Errorf("service resources = %+v, %v; want %+v", svc, err, want)
	}
	if _, err := (&DockerConfig{ServiceMemorySwap: "lots"}).GetServiceResources(); err == nil || !strings.Contains(err.Error(), "service_memory_swap") {
		t.Errorf("service_memory_swap \"lots\": err = %v, want one naming the key", err)
	}
}

// TestLoadAcceptsWhatRunsUse: a value Validate accepts is one the getters parse, and one it refuses is
// refused by them, so a config that loads never fails a job over the same key (and the reverse).
func TestLoadAcceptsWhatRunsUse(t *testing.T) {
	for _, tt := range []struct {
		name string
		d    DockerConfig
		ok   bool
	}{
		{"memory 4g", DockerConfig{Memory: "4g"}, true},
		{"memory 512m", DockerConfig{MemorySwap: "512m"}, true},
		{"memory_swap -1 (upstream refuses a negative size)", DockerConfig{MemorySwap: "-1"}, false},
		{"memory lots", DockerConfig{Memory: "lots"}, false},
		{"service_memory_reservation -1", DockerConfig{ServiceMemoryReservation: "-1"}, false},
		{"cpus 1.5", DockerConfig{CPUs: "1.5"}, true},
		{"cpus 0 (unset)", DockerConfig{CPUs: "0"}, true},
		{"cpus 3/2", DockerConfig{CPUs: "3/2"}, true},
		{"cpus -1", DockerConfig{CPUs: "-1"}, false},
		{"cpus 1e400", DockerConfig{ServiceCPUs: "1e400"}, false},
		{"cpus two", DockerConfig{CPUs: "two"}, false},
		{"pull_policy never", DockerConfig{PullPolicy: StringOrSlice{"never"}}, true},
		{"pull_policy sometimes", DockerConfig{PullPolicy: StringOrSlice{"sometimes"}}, false},
		{"allowed_pull_policies sometimes", DockerConfig{AllowedPullPolicies: []string{"always", "sometimes"}}, false},
		{"devices", DockerConfig{Devices: []string{"/dev/fuse", "/dev/kvm:/dev/kvm:rw"}}, true},
		{"devices with four fields", DockerConfig{Devices: []string{"/a:/b:rw:x"}}, false},
		{"services_devices with four fields", DockerConfig{ServicesDevices: map[string][]string{"docker:*": {"/a:/b:rw:x"}}}, false},
		{"ulimit soft:hard", DockerConfig{Ulimit: map[string]string{"nofile": "1024:2048"}}, true},
		{"ulimit not a number", DockerConfig{Ulimit: map[string]string{"nofile": "many"}}, false},
		{"ulimit unknown name", DockerConfig{Ulimit: map[string]string{"nofiles": "10"}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			loadErr := errors.Join(tt.d.problems("docker")...)
			_, err1 := tt.d.GetBuildResources()
			_, err2 := tt.d.GetServiceResources()
			_, err3 := tt.d.GetPullPolicies()
			_, err4 := tt.d.GetAllowedPullPolicies()
			_, err5 := tt.d.GetDevices()
			_, err6 := tt.d.GetServicesDevices()
			_, err7 := tt.d.GetUlimits()
			runErr := errors.Join(err1, err2, err3, err4, err5, err6, err7)
			if (loadErr == nil) != tt.ok || (runErr == nil) != tt.ok {
				t.Errorf("Validate: %v; getters: %v; want accepted = %v by both", loadErr, runErr, tt.ok)
			}
		})
	}
}

func TestPolicyLocation(t *testing.T) {
	p := AutoscalerPolicyConfig{Timezone: "Europe/Berlin"}
	loc, err := p.GetLocation()
	if err != nil || loc.String() != "Europe/Berlin" {
		t.Fatalf("GetLocation = %v, %v", loc, err)
	}
	if loc, err := (&AutoscalerPolicyConfig{}).GetLocation(); err != nil || loc != time.Local {
		t.Fatalf("empty timezone = %v, %v; want Local", loc, err)
	}
}

func TestFeatureFlag(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    RunnerConfig
		flag string
		want bool
	}{
		{"dial stdio defaults on", RunnerConfig{}, FFUseDockerAutoscalerDialStdio, true},
		{"network per build defaults off", RunnerConfig{}, FFNetworkPerBuild, false},
		{"heartbeats default off", RunnerConfig{}, FFUseFleetingAcquireHeartbeats, false},
		{"unknown flag is off", RunnerConfig{}, "FF_NO_SUCH_FLAG", false},
		{"table turns on", RunnerConfig{FeatureFlags: map[string]bool{FFNetworkPerBuild: true}}, FFNetworkPerBuild, true},
		{"table turns a default off", RunnerConfig{FeatureFlags: map[string]bool{FFUseDockerAutoscalerDialStdio: false}}, FFUseDockerAutoscalerDialStdio, false},
		{"environment 1", RunnerConfig{Environment: []string{"FF_NETWORK_PER_BUILD=1"}}, FFNetworkPerBuild, true},
		{"environment false", RunnerConfig{Environment: []string{"FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO=false"}}, FFUseDockerAutoscalerDialStdio, false},
		{"last environment entry wins", RunnerConfig{Environment: []string{"FF_NETWORK_PER_BUILD=true", "FF_NETWORK_PER_BUILD=false"}}, FFNetworkPerBuild, false},
		{"environment not a bool uses the default", RunnerConfig{Environment: []string{"FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO=maybe"}}, FFUseDockerAutoscalerDialStdio, true},
		{"table wins over environment", RunnerConfig{FeatureFlags: map[string]bool{FFNetworkPerBuild: false}, Environment: []string{"FF_NETWORK_PER_BUILD=true"}}, FFNetworkPerBuild, false},
	} {
		if got := tt.r.FeatureFlag(tt.flag); got != tt.want {
			t.Errorf("%s: FeatureFlag(%s) = %v, want %v", tt.name, tt.flag, got, tt.want)
		}
	}
}

func TestListenAddress(t *testing.T) {
	for in, want := range map[string]string{":9252": ":9252", "0.0.0.0": "0.0.0.0:9252", "localhost:8080": "localhost:8080", "[::1]": "[::1]:9252"} {
		if got, err := ListenAddress(in); err != nil || got != want {
			t.Errorf("ListenAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ListenAddress("a:b:c"); err == nil {
		t.Error("a:b:c accepted")
	}
}
