package docker

import (
	"fmt"

	"github.com/docker/docker/api/types/container"

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
	devs, err := dc.GetDevices()
	if err != nil {
		return nil, err
	}
	hc.Devices = deviceMappings(devs)
	ulimits, err := dc.GetUlimits()
	if err != nil {
		return nil, err
	}
	for _, u := range ulimits {
		hc.Ulimits = append(hc.Ulimits, &container.Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard})
	}
	return hc, nil
}

// serviceHostConfig applies the service_* keys of [runners.docker] to a service container.
func serviceHostConfig(dc *config.DockerConfig, name string) (*container.HostConfig, error) {
	hc := &container.HostConfig{
		Privileged:    dc.GetServicesPrivileged() && imageAllowed(name, dc.AllowedPrivilegedServices),
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
	byPattern, err := dc.GetServicesDevices()
	if err != nil {
		return nil, fmt.Errorf("service settings: %w", err)
	}
	for pattern, devs := range byPattern {
		if imageAllowed(name, []string{pattern}) {
			hc.Devices = append(hc.Devices, deviceMappings(devs)...)
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

// deviceMappings are config's parsed devices in the Docker API's type.
func deviceMappings(devs []config.DeviceMapping) []container.DeviceMapping {
	var out []container.DeviceMapping
	for _, d := range devs {
		out = append(out, container.DeviceMapping{PathOnHost: d.PathOnHost, PathInContainer: d.PathInContainer, CgroupPermissions: d.CgroupPermissions})
	}
	return out
}
