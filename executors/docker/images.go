package docker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/pkg/jsonmessage"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// pullPolicies returns the policies to try for an image, in order: the job's own when it set any (each
// must be allowed), else the runner's pull_policy filtered by allowed_pull_policies.
func pullPolicies(dc *config.DockerConfig, requested []string) ([]string, error) {
	configured, err := dc.GetPullPolicies()
	if err != nil {
		return nil, err
	}
	allowed, err := dc.GetAllowedPullPolicies()
	if err != nil {
		return nil, err
	}
	if len(requested) > 0 {
		for _, p := range requested {
			if !slices.Contains(allowed, p) {
				return nil, &job.BuildError{Reason: job.ConfigurationError, Err: fmt.Errorf(
					"pull_policy %v defined in the job is not one of the allowed_pull_policies %v", requested, allowed)}
			}
		}
		return requested, nil
	}
	var out []string
	for _, p := range configured {
		if slices.Contains(allowed, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, &job.BuildError{Reason: job.ConfigurationError, Err: fmt.Errorf(
			"none of the pull_policy %v is in allowed_pull_policies %v", configured, allowed)}
	}
	return out, nil
}

// imageAllowed matches name against wildcard patterns (path.Match, as in `ruby:*` or `*/*:*`). An empty
// list allows everything.
func imageAllowed(name string, patterns []string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// parsePlatform reads "os/arch[/variant]".
func parsePlatform(s string) (*ocispec.Platform, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return nil, &job.BuildError{Reason: job.ConfigurationError, Err: fmt.Errorf("docker platform %q: use os/arch[/variant], e.g. linux/arm64", s)}
	}
	p := &ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func platformString(p *ocispec.Platform) string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ensureImage makes image name present on the engine following policies in order (a failing policy
// falls back to the next one) and returns it. A local image for another platform than the one asked for
// counts as absent; a pulled one fails the policy. Failure is an image_pull_failure with one line.
func (r *run) ensureImage(ctx context.Context, name string, policies []string, platform *ocispec.Platform) (image.InspectResponse, error) {
	var errs []error
	for i, p := range policies {
		if p != config.PullPolicyAlways {
			img, err := r.cli.ImageInspect(ctx, name)
			switch {
			case err == nil && platformMatches(img, platform):
				r.log.Infof("Using locally found image version due to %q pull policy", p)
				return img, nil
			case err != nil && !cerrdefs.IsNotFound(err):
				return image.InspectResponse{}, fmt.Errorf("inspect image %q: %w", name, err)
			case p == config.PullPolicyNever && err == nil:
				errs = append(errs, fmt.Errorf("image %q on the engine is %s/%s, not %s, and pull_policy is never", name, img.Os, img.Architecture, platformString(platform)))
				continue
			case p == config.PullPolicyNever:
				errs = append(errs, fmt.Errorf("image %q is not present on the engine and pull_policy is never", name))
				continue
			}
		}
		r.log.Infof("Pulling docker image %s ...", name)
		img, err := r.pullAndInspect(ctx, name, platform)
		if err == nil {
			return img, nil
		}
		if ctx.Err() != nil {
			return image.InspectResponse{}, err
		}
		errs = append(errs, err)
		if i < len(policies)-1 {
			r.log.Warnf("Failed to pull image with policy %q: %v", p, err)
		}
	}
	return image.InspectResponse{}, &job.BuildError{Reason: job.ImagePullFailure, Err: fmt.Errorf(
		"failed to pull image %q with specified policies %v: %w", name, policies, errors.Join(errs...))}
}

func (r *run) pullAndInspect(ctx context.Context, name string, platform *ocispec.Platform) (image.InspectResponse, error) {
	if err := r.pull(ctx, name, platform); err != nil {
		return image.InspectResponse{}, err
	}
	img, err := r.cli.ImageInspect(ctx, name)
	if err != nil {
		return image.InspectResponse{}, fmt.Errorf("inspect pulled image %q: %w", name, err)
	}
	// An engine may hand out a single-platform image whatever platform was asked for; running it
	// would fail later with a less clear error, or run the wrong binaries under emulation.
	if !platformMatches(img, platform) {
		return image.InspectResponse{}, fmt.Errorf("the registry has image %q only for %s/%s, not for the requested docker platform %s",
			name, img.Os, img.Architecture, platformString(platform))
	}
	return img, nil
}

// platformMatches tells whether img is for platform (nil matches anything; a variant is compared only
// when both name one).
func platformMatches(img image.InspectResponse, platform *ocispec.Platform) bool {
	if platform == nil {
		return true
	}
	if img.Os != platform.OS || img.Architecture != platform.Architecture {
		return false
	}
	return platform.Variant == "" || img.Variant == "" || img.Variant == platform.Variant
}

func (r *run) pull(ctx context.Context, name string, platform *ocispec.Platform) error {
	auth, err := r.registryAuth(name)
	if err != nil {
		return err
	}
	rc, err := r.cli.ImagePull(ctx, name, image.PullOptions{RegistryAuth: auth, Platform: platformString(platform)})
	if err != nil {
		return err
	}
	defer rc.Close()
	return jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
}

// registryAuth finds credentials for the image's registry: DOCKER_AUTH_CONFIG (job variable or runner
// environment) first, then the payload's registry credentials.
func (r *run) registryAuth(name string) (string, error) {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", &job.BuildError{Reason: job.ImagePullFailure, Err: fmt.Errorf("invalid image name %q: %w", name, err)}
	}
	host := reference.Domain(named)
	if ac, ok := r.authFromDockerConfig(host); ok {
		return registry.EncodeAuthConfig(ac)
	}
	for _, c := range r.j.Credentials {
		if strings.EqualFold(c.Type, "registry") && registryHost(c.URL) == host {
			return registry.EncodeAuthConfig(registry.AuthConfig{Username: c.Username, Password: c.Password, ServerAddress: c.URL})
		}
	}
	return "", nil
}

func (r *run) authFromDockerConfig(host string) (registry.AuthConfig, bool) {
	raw := r.vars.Get("DOCKER_AUTH_CONFIG")
	if raw == "" {
		return registry.AuthConfig{}, false
	}
	var cfg struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		r.log.Warnf("DOCKER_AUTH_CONFIG is not valid JSON; ignoring it")
		return registry.AuthConfig{}, false
	}
	for key, a := range cfg.Auths {
		if registryHost(key) != host {
			continue
		}
		ac := registry.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, ServerAddress: key}
		if a.Auth != "" {
			if dec, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
				ac.Username, ac.Password, _ = strings.Cut(string(dec), ":")
			}
		}
		return ac, true
	}
	return registry.AuthConfig{}, false
}

// registryHost normalises "https://index.docker.io/v1/", "registry.example.test:5000/x" and plain hosts.
func registryHost(s string) string {
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil {
			s = u.Host
		}
	}
	s, _, _ = strings.Cut(s, "/")
	switch s {
	case "index.docker.io", "registry-1.docker.io", "":
		return "docker.io"
	}
	return s
}
