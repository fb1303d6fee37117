package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// Features are the job features this executor implements, as declared to GitLab.
func Features() map[string]bool {
	return map[string]bool{
		"variables":                 true,
		"image":                     true,
		"services":                  true,
		"artifacts":                 true,
		"cache":                     true,
		"fallback_cache_keys":       true,
		"upload_multiple_artifacts": true,
		"upload_raw_artifacts":      true,
		"refspecs":                  true,
		"masking":                   true,
		"raw_variables":             true,
		"artifacts_exclude":         true,
		"multi_build_steps":         true,
		"return_exit_code":          true,
		"service_variables":         true,
		"service_multiple_aliases":  true,
		"image_executor_opts":       true,
		"service_executor_opts":     true,
	}
}

// Provider is executor "docker": jobs run on the engine of [runners.docker] host (or DOCKER_HOST).
type Provider struct {
	exec *Executor

	stopSweep context.CancelFunc
	swept     chan struct{}
}

// NewProvider connects to the runner's engine; the connection is made lazily, so an engine that is
// down fails jobs (runner_system_failure, one line) rather than the runner's start. The leftovers of
// this runner's jobs that an earlier process did not clean up are removed in the background.
func NewProvider(runner *config.RunnerConfig, deps executors.Deps) (executors.Provider, error) {
	cli, err := NewClient(runner.Docker)
	if err != nil {
		return nil, err
	}
	log := logging.Or(deps.Logger)
	// The sweep has a client of its own: the Docker client negotiates its API version on first use
	// without a lock, so sharing one with the first job races.
	sweepCli, err := NewClient(runner.Docker)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	p := &Provider{exec: &Executor{Client: cli, Options: Options{EngineName: cli.DaemonHost()}}, stopSweep: stop, swept: make(chan struct{})}
	go func() {
		defer close(p.swept)
		defer sweepCli.Close()
		ctx, cancel := context.WithTimeout(ctx, CleanupTimeout)
		defer cancel()
		removed, err := RemoveLeftovers(ctx, sweepCli, config.ShortToken(runner.Token), deps.SystemID, Running)
		if errors.Is(err, context.Canceled) {
			return // Shutdown came first
		}
		LogLeftovers(log.WithField("engine", cli.DaemonHost()), removed, err)
	}()
	return p, nil
}

// LogLeftovers says what RemoveLeftovers did, in one line.
func LogLeftovers(log logrus.FieldLogger, removed Leftovers, err error) {
	log = log.WithFields(removed.Fields())
	switch {
	case err != nil:
		log.WithError(err).Warn("could not remove every leftover of jobs this runner manager no longer runs")
	case removed.Empty():
		log.Debug("no leftovers of earlier jobs on the engine")
	default:
		log.Info("removed the leftovers of jobs this runner manager no longer runs")
	}
}

// NewClient builds an API client for [runners.docker] host / tls_cert_path, falling back to the
// DOCKER_* environment, with API version negotiation.
func NewClient(dc *config.DockerConfig) (*client.Client, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if dc != nil && dc.Host != "" {
		opts = append(opts, client.WithHost(dc.Host))
	}
	if dc != nil && dc.TLSCertPath != "" {
		p := dc.TLSCertPath
		if _, err := os.Stat(filepath.Join(p, "cert.pem")); err != nil {
			return nil, fmt.Errorf("tls_cert_path %s: %w", p, err)
		}
		opts = append(opts, client.WithTLSClientConfig(filepath.Join(p, "ca.pem"), filepath.Join(p, "cert.pem"), filepath.Join(p, "key.pem")))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client (check [runners.docker] host or DOCKER_HOST): %w", err)
	}
	return cli, nil
}

// Reserve implements executors.Provider; capacity is bounded by the manager's limit only.
func (p *Provider) Reserve(context.Context) (executors.Reservation, error) {
	return executors.NoReservation{}, nil
}

// Run implements executors.Provider.
func (p *Provider) Run(ctx context.Context, _ executors.Reservation, b *executors.Build) error {
	return p.exec.Run(ctx, b)
}

// Features implements executors.Provider.
func (p *Provider) Features() map[string]bool { return Features() }

// Shutdown implements executors.Provider.
func (p *Provider) Shutdown(context.Context) error {
	p.stopSweep()
	<-p.swept
	return p.exec.Client.Close()
}
