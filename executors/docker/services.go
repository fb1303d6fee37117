package docker

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// service is one service container of the job.
type service struct {
	name       string
	aliases    []string
	entrypoint []string
	command    []string
	env        []string
	policies   []string
	platform   *ocispec.Platform
	ports      []int

	imageID       string
	containerID   string
	containerName string
}

// serviceAliases are the explicit aliases (comma or space separated) plus the ones derived from the
// image name as upstream does: "registry.test/group/redis:7" gives "registry.test__group__redis" and
// "registry.test-group-redis"; "postgres:16" gives "postgres".
func serviceAliases(name, alias string) []string {
	out := strings.FieldsFunc(alias, func(r rune) bool { return r == ',' || r == ' ' })
	base := name
	if i := strings.Index(base, "@"); i >= 0 {
		base = base[:i]
	}
	if i := strings.LastIndex(base, ":"); i > strings.LastIndex(base, "/") {
		base = base[:i]
	}
	for _, a := range []string{strings.ReplaceAll(base, "/", "__"), strings.ReplaceAll(base, "/", "-")} {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// collectServices merges [[runners.docker.services]] and the job's services, checking
// services_limit, allowed_services and pull policies.
func (r *run) collectServices() ([]*service, error) {
	var out []*service
	for _, s := range r.dc.Services {
		pol, err := pullPolicies(r.dc, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, &service{name: r.vars.Expand(s.Name), aliases: serviceAliases(r.vars.Expand(s.Name), s.Alias),
			entrypoint: s.Entrypoint, command: s.Command, env: append(r.serviceEnv(), s.Environment...), policies: pol})
	}
	for _, s := range r.j.Services {
		name := r.vars.Expand(s.Name)
		if name == "" {
			return nil, &job.BuildError{Reason: job.ConfigurationError, Err: fmt.Errorf("a service has no image name")}
		}
		if !imageAllowed(name, r.dc.AllowedServices) {
			return nil, &job.BuildError{Reason: job.ConfigurationError, Err: fmt.Errorf(
				"service image %q is not allowed by allowed_services %v", name, r.dc.AllowedServices)}
		}
		pol, err := pullPolicies(r.dc, s.PullPolicy)
		if err != nil {
			return nil, err
		}
		sv := &service{name: name, aliases: serviceAliases(name, s.Alias), command: s.Command, env: r.serviceEnv(), policies: pol}
		if !r.dc.DisableEntrypointOverwrite {
			sv.entrypoint = s.Entrypoint
		}
		for _, v := range s.Variables {
			sv.env = append(sv.env, v.Key+"="+v.Value)
		}
		for _, p := range s.Ports {
			sv.ports = append(sv.ports, p.Number)
		}
		if s.ExecutorOpts != nil {
			if sv.platform, err = parsePlatform(s.ExecutorOpts.Docker.Platform); err != nil {
				return nil, err
			}
		}
		out = append(out, sv)
	}
	if lim := r.dc.GetServicesLimit(); lim != config.NoServicesLimit && len(out) > lim {
		return nil, &job.BuildError{Reason: job.ConfigurationError, Err: fmt.Errorf(
			"the job uses %d services but services_limit is %d", len(out), lim)}
	}
	return out, nil
}

// serviceEnv is what every service inherits: the job's variables (not file ones), as upstream does.
func (r *run) serviceEnv() []string {
	var env []string
	for _, v := range r.vars {
		if !v.File && varName.MatchString(v.Key) {
			env = append(env, v.Key+"="+v.Value)
		}
	}
	return env
}

// startServices pulls, creates and starts every service, then waits for their ports.
func (r *run) startServices(ctx context.Context) error {
	for _, s := range r.services {
		img, err := r.ensureImage(ctx, s.name, s.policies, s.platform)
		if err != nil {
			return err
		}
		s.imageID = img.ID
	}
	for _, s := range r.services {
		r.log.Infof("Starting service %s ...", s.name)
		hc, err := serviceHostConfig(r.dc, s.name)
		if err != nil {
			return err
		}
		var net *network.NetworkingConfig
		if r.network != "" {
			hc.NetworkMode = container.NetworkMode(r.network)
			net = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{r.network: {Aliases: s.aliases}}}
		} else {
			hc.NetworkMode = container.NetworkMode(r.dc.NetworkMode)
		}
		cfg := &container.Config{Image: s.imageID, Entrypoint: s.entrypoint, Cmd: s.command, Env: s.env}
		spec := containerSpec{role: "service", stage: "svc-" + s.aliases[0], config: cfg, host: hc, net: net, platform: s.platform}
		spec.name = r.name(spec.stage)
		s.containerName = spec.name
		id, err := r.createContainer(ctx, spec)
		if err != nil {
			return err
		}
		s.containerID = id
		if err := r.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			return &job.BuildError{Reason: job.ScriptFailure, Err: fmt.Errorf("service %s did not start: %w", s.name, err)}
		}
		switch {
		case r.network != "":
		case r.dc.NetworkMode == "bridge":
			// Without a per-build network only legacy links give the build container the aliases.
			for _, a := range s.aliases {
				r.links = append(r.links, s.containerName+":"+a)
			}
		default:
			r.log.Warnf("Service %s is not reachable by alias with network_mode %q; use the default network_mode for aliases", s.name, r.dc.NetworkMode)
		}
	}
	return r.waitForServices(ctx)
}

type probeResult struct {
	svc     *service
	failed  string // port that never listened
	skipped string // why the service could not be probed
}

func (r *run) waitForServices(ctx context.Context) error {
	timeout := r.dc.GetWaitForServicesTimeout()
	if timeout == 0 {
		return nil
	}
	// Every service's ports are known before any probe starts, so an error here leaves no probe running.
	ports := make([][]string, len(r.services))
	for i, s := range r.services {
		var err error
		if ports[i], err = r.servicePorts(ctx, s); err != nil {
			return err
		}
	}
	results := make([]probeResult, len(r.services))
	var g errgroup.Group
	for i, s := range r.services {
		if len(ports[i]) == 0 {
			continue
		}
		g.Go(func() error {
			results[i] = r.probe(ctx, s, ports[i], timeout)
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	for _, res := range results {
		switch {
		case res.skipped != "":
			r.log.Warnf("Could not check whether service %s is listening: %s", res.svc.name, res.skipped)
		case res.failed != "":
			r.serviceLogs(ctx, res.svc)
			return &job.BuildError{Reason: job.ScriptFailure, Err: fmt.Errorf(
				"service %s (alias %s) did not come up: port %s not listening after %s (wait_for_services_timeout)",
				res.svc.name, res.svc.aliases[0], res.failed, timeout)}
		}
	}
	return nil
}

// servicePorts are the service image's exposed TCP ports plus the job's declared ports.
func (r *run) servicePorts(ctx context.Context, s *service) ([]string, error) {
	img, err := r.cli.ImageInspect(ctx, s.imageID)
	if err != nil {
		return nil, fmt.Errorf("inspect service image %s: %w", s.name, err)
	}
	var ports []string
	if img.Config != nil {
		for p := range img.Config.ExposedPorts {
			if port, proto, _ := strings.Cut(p, "/"); proto == "" || proto == "tcp" {
				ports = append(ports, port)
			}
		}
	}
	for _, p := range s.ports {
		ports = appendNew(ports, strconv.Itoa(p))
	}
	slices.Sort(ports)
	return ports, nil
}

// notListening picks the port out of the helper's health-check failure.
var notListening = regexp.MustCompile(`port (\S+) did not listen`)

// probe runs the helper's health-check inside the service's network namespace, so that waiting does not
// depend on what tools the job or service image has.
func (r *run) probe(ctx context.Context, s *service, ports []string, timeout time.Duration) probeResult {
	ctx, cancel := context.WithTimeout(ctx, timeout+killTimeout)
	defer cancel()
	var out bytes.Buffer
	args := []string{"health-check", "--timeout", timeout.String()}
	for _, p := range ports {
		args = append(args, "--port", p)
	}
	cfg := &container.Config{Image: r.helperImage, Cmd: args}
	hc := &container.HostConfig{NetworkMode: container.NetworkMode("container:" + s.containerID)}
	code, err := r.runContainer(ctx, containerSpec{role: "probe", stage: "probe-" + s.aliases[0], config: cfg, host: hc, output: &out})
	switch {
	case err != nil && ctx.Err() == nil && strings.Contains(err.Error(), "is not running"):
		return probeResult{svc: s, failed: strings.Join(ports, ",") + " (the service container exited)"}
	case err != nil:
		return probeResult{svc: s, skipped: err.Error()}
	case code != 0:
		if m := notListening.FindStringSubmatch(out.String()); m != nil {
			return probeResult{svc: s, failed: m[1]}
		}
		return probeResult{svc: s, skipped: fmt.Sprintf("health check exited with %d: %s", code, strings.TrimSpace(out.String()))}
	}
	return probeResult{svc: s}
}

// serviceLogs copies the last lines of a service's output into the job log.
func (r *run) serviceLogs(ctx context.Context, s *service) {
	rc, err := r.cli.ContainerLogs(ctx, s.containerID, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "20"})
	if err != nil {
		return
	}
	defer rc.Close()
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, rc)
	if out.Len() > 0 {
		r.log.Warnf("Last output of service %s:", s.name)
		_, _ = r.log.Write(out.Bytes())
	}
}
