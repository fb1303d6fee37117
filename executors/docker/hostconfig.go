package docker

import (
	"fmt"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-units"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

// applyResources sets the cgroup limits of one container kind, as config parsed them.
func applyResources(r *container.Resources, res config.ContainerResources) {
	r.Memory, r.MemorySwap, r.MemoryReservation = res.Memory, res.MemorySwap, res.MemoryReservation
	r.NanoCPUs = res.NanoCPUs
	r.CPUShares = res.CPUShares
	r.CpusetCpus = res.CPUSetCPUs
	r.CgroupParent = res.CgroupParent
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
	res, err := dc.GetBuildResources()
	if err != nil {
		return nil, err
	}
	applyResources(&hc.Resources, res)
	hc.CpusetMems = dc.CPUSetMems
	if dc.OomKillDisable {
		t := true
		hc.OomKillDisable = &t
	}
	hc.DeviceCgroupRules = dc.DeviceCgroupRules
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
	res, err := dc.GetServiceResources()
	if err != nil {
		return nil, fmt.Errorf("service settings: %w", err)
	}
	applyResources(&hc.Resources, res)
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
