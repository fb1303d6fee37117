package docker

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-units"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

// resources are the cgroup limits of one container kind (build or service).
type resources struct {
	memory, swap, reservation, cpus, cpuset, cgroupParent string
	shares                                                int64
}

func (res resources) apply(r *container.Resources) error {
	var err error
	if r.Memory, err = bytesOf("memory", res.memory); err != nil {
		return err
	}
	if r.MemorySwap, err = bytesOf("memory_swap", res.swap); err != nil {
		return err
	}
	if r.MemoryReservation, err = bytesOf("memory_reservation", res.reservation); err != nil {
		return err
	}
	if res.cpus != "" {
		f, err := strconv.ParseFloat(res.cpus, 64)
		if err != nil || f <= 0 {
			return fmt.Errorf("cpus %q is not a positive number of CPUs (e.g. \"1.5\")", res.cpus)
		}
		r.NanoCPUs = int64(f * 1e9)
	}
	r.CPUShares = res.shares
	r.CpusetCpus = res.cpuset
	r.CgroupParent = res.cgroupParent
	return nil
}

func bytesOf(key, s string) (int64, error) {
	switch s {
	case "":
		return 0, nil
	case "-1":
		return -1, nil
	}
	n, err := units.RAMInBytes(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a size (use e.g. \"512m\" or \"2g\"): %w", key, s, err)
	}
	return n, nil
}

// buildHostConfig applies [runners.docker] to the job (build) container. Mounts are added by the caller,
// and so is Privileged, which depends on the job's image (allowed_privileged_images).
func buildHostConfig(dc *config.DockerConfig) (*container.HostConfig, error) {
	hc := &container.HostConfig{
		NetworkMode:   container.NetworkMode(dc.NetworkMode),
		ShmSize:       dc.ShmSize,
		CapAdd:        dc.CapAdd,
		CapDrop:       dc.CapDrop,
		SecurityOpt:   dc.SecurityOpt,
		DNS:           dc.DNS,
		DNSSearch:     dc.DNSSearch,
		ExtraHosts:    dc.ExtraHosts,
		Tmpfs:         dc.Tmpfs,
		Sysctls:       dc.Sysctls,
		GroupAdd:      dc.GroupAdd,
		Runtime:       dc.Runtime,
		UsernsMode:    container.UsernsMode(dc.UsernsMode),
		IpcMode:       container.IpcMode(dc.IpcMode),
		OomScoreAdj:   dc.OomScoreAdjust,
		VolumesFrom:   dc.VolumesFrom,
		VolumeDriver:  dc.VolumeDriver,
		Links:         dc.Links,
		Isolation:     container.Isolation(dc.Isolation),
		LogConfig:     logConfig(dc.LogOptions),
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}
	res := resources{memory: dc.Memory, swap: dc.MemorySwap, reservation: dc.MemoryReservation,
		cpus: dc.CPUs, cpuset: dc.CPUSetCPUs, shares: dc.CPUShares, cgroupParent: dc.CgroupParent}
	if err := res.apply(&hc.Resources); err != nil {
		return nil, err
	}
	hc.CpusetMems = dc.CPUSetMems
	if dc.OomKillDisable {
		t := true
		hc.OomKillDisable = &t
	}
	hc.DeviceCgroupRules = dc.DeviceCgroupRules
	var err error
	if hc.Devices, err = devices(dc.Devices); err != nil {
		return nil, err
	}
	if hc.Ulimits, err = ulimits(dc.Ulimit); err != nil {
		return nil, err
	}
	return hc, nil
}

// serviceHostConfig applies the service_* keys of [runners.docker] to a service container.
func serviceHostConfig(dc *config.DockerConfig, name string) (*container.HostConfig, error) {
	privileged := dc.Privileged
	if dc.ServicesPrivileged != nil {
		privileged = *dc.ServicesPrivileged
	}
	privileged = privileged && imageAllowed(name, dc.AllowedPrivilegedServices)
	hc := &container.HostConfig{
		Privileged:    privileged,
		SecurityOpt:   dc.ServicesSecurityOpt,
		Tmpfs:         dc.ServicesTmpfs,
		DNS:           dc.DNS,
		DNSSearch:     dc.DNSSearch,
		ExtraHosts:    dc.ExtraHosts,
		Runtime:       dc.Runtime,
		UsernsMode:    container.UsernsMode(dc.UsernsMode),
		LogConfig:     logConfig(dc.LogOptions),
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}
	res := resources{memory: dc.ServiceMemory, swap: dc.ServiceMemorySwap, reservation: dc.ServiceMemoryReservation,
		cpus: dc.ServiceCPUs, cpuset: dc.ServiceCPUSetCPUs, shares: dc.ServiceCPUShares, cgroupParent: dc.ServiceCgroupParent}
	if err := res.apply(&hc.Resources); err != nil {
		return nil, fmt.Errorf("service settings: %w", err)
	}
	for pattern, devs := range dc.ServicesDevices {
		if imageAllowed(name, []string{pattern}) {
			d, err := devices(devs)
			if err != nil {
				return nil, err
			}
			hc.Devices = append(hc.Devices, d...)
		}
	}
	return hc, nil
}

func logConfig(opts map[string]string) container.LogConfig {
	if len(opts) == 0 {
		return container.LogConfig{}
	}
	return container.LogConfig{Type: "json-file", Config: opts}
}

// devices parses "host[:container[:permissions]]".
func devices(specs []string) ([]container.DeviceMapping, error) {
	var out []container.DeviceMapping
	for _, s := range specs {
		parts := strings.Split(s, ":")
		d := container.DeviceMapping{PathOnHost: parts[0], PathInContainer: parts[0], CgroupPermissions: "rwm"}
		switch len(parts) {
		case 1:
		case 2:
			d.PathInContainer = parts[1]
		case 3:
			d.PathInContainer, d.CgroupPermissions = parts[1], parts[2]
		default:
			return nil, fmt.Errorf("device %q: use host[:container[:permissions]]", s)
		}
		out = append(out, d)
	}
	return out, nil
}

// ulimits parses upstream's table: name = "soft[:hard]".
func ulimits(m map[string]string) ([]*container.Ulimit, error) {
	var out []*container.Ulimit
	for name, v := range m {
		u, err := units.ParseUlimit(name + "=" + v)
		if err != nil {
			return nil, fmt.Errorf("ulimit %s=%q: %w", name, v, err)
		}
		out = append(out, &container.Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard})
	}
	return out, nil
}
