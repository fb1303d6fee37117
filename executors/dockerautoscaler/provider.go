// Package dockerautoscaler is executor "docker-autoscaler": a job reserves a slot from the taskscaler,
// acquires it on a ready instance of the fleeting plugin's group, reaches the instance's Docker Engine
// through a pooled SSH connection and runs its stages there with executors/docker, then releases the
// slot. An instance that cannot be reached before the job's script started is replaced and the job moves
// on to another one; an instance lost during the script fails the job with runner_system_failure.
package dockerautoscaler

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// Name is the executor name in config.toml.
const Name = "docker-autoscaler"

// startTimeout bounds the plugin's Init and the taskscaler's first listing of the group when the
// provider is created.
const startTimeout = 2 * time.Minute

// Provider runs the jobs of one [[runners]] entry on autoscaled instances. Besides executors.Provider
// it applies reloaded policies (executors.PolicyUpdater), reports the jobs a crash interrupted
// (recovery.go), and exports its fleet (metrics.go, instances.go).
type Provider struct {
	runner *config.RunnerConfig
	log    logrus.FieldLogger
	group  fleeting.InstanceGroup
	plugin string
	info   fleeting.ProviderInfo
	pool   *connector.Pool
	ts     *taskscaler.Taskscaler
	docker docker.Options
	// metrics are the histograms Collectors exports (metrics.go).
	metrics *fleetMetrics

	// statePath is the taskscaler's state file, where pinned host keys live; empty with state_storage off.
	statePath        string
	readyCommand     string
	heartbeatOverSSH bool
	logInternalIP    bool
	logExternalIP    bool

	// systemID labels this manager's job resources; leftovers are looked for by it (leftovers.go).
	systemID string

	mu        sync.Mutex
	policies  []config.AutoscalerPolicyConfig
	leftovers map[string]*leftoverMark
	// runnerShort is the runner's short token as the latest job knows it (a rotation changes it).
	runnerShort string

	// bgCtx ends when Shutdown begins: the leftover retries and removals (bg) run under it.
	bgCtx   context.Context
	stopBg  context.CancelFunc
	bg      sync.WaitGroup
	retried chan struct{} // closed when the leftover retries have ended
	// interruptionsDone is closed when the interruption watch has ended (interruptions.go).
	interruptionsDone chan struct{}
	// gaveUp is why the provider gave its fleet up to another manager (giveUp), nil while it serves.
	gaveUp atomic.Pointer[error]
	// lease is the runner's state lease (lease.go), nil on the file backend; leaseDone closes when its
	// renewals ended.
	lease     *runnerLease
	leaseDone chan struct{}
	// groupClaim is this manager's claim on the group (claim.go), nil when the plugin cannot claim; claimDone
	// closes when its refreshes ended.
	groupClaim *managerClaim
	claimDone  chan struct{}
	notices    notices
	// rolloutDone is closed when the roll-out watch has ended (rollout.go).
	rolloutDone chan struct{}
	rollout     rollout
	shutdown    sync.Once
}

var (
	_ executors.Provider      = (*Provider)(nil)
	_ executors.PolicyUpdater = (*Provider)(nil)
)

// New returns the executor's factory. Each provider it makes builds, for its runner, the fleeting
// plugin named by [runners.autoscaler] plugin from plugins (configured with plugin_config and
// initialised with connector_config), the SSH connection pool and the taskscaler, which adopts the
// instances its state file knows. cmd hands it the compiled-in plugins (fleeting-plugins/builtin).
func New(plugins fleeting.Registry) executors.Factory {
	return func(runner *config.RunnerConfig, deps executors.Deps) (executors.Provider, error) {
		return newProvider(runner, deps, plugins, docker.Options{})
	}
}

func newProvider(runner *config.RunnerConfig, deps executors.Deps, plugins fleeting.Registry, dopts docker.Options) (*Provider, error) {
	ac := runner.Autoscaler
	if ac == nil {
		return nil, errors.New("[runners.autoscaler] is missing: the docker-autoscaler executor needs it (plugin, capacity_per_instance, max_instances, …)")
	}
	if runner.Docker == nil {
		return nil, errors.New("[runners.docker] is missing: the docker-autoscaler executor needs at least its image")
	}
	log := logging.Or(deps.Logger)

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// The lease first: a standby must not even initialise the plugin, which may cost API calls.
	var lease *runnerLease
	if usesLease(ac) {
		var err error
		if lease, err = acquireLease(ctx, runner, deps.SystemID, log); err != nil {
			return nil, err
		}
	}
	p, err := startProvider(ctx, runner, deps, plugins, dopts, log, lease)
	if err != nil && lease != nil {
		if rerr := lease.lease.Release(ctx); rerr != nil {
			log.WithError(rerr).Warn("could not release the runner's state lease after a failed start; another manager takes over once it expires")
		}
	}
	return p, err
}

func startProvider(ctx context.Context, runner *config.RunnerConfig, deps executors.Deps, plugins fleeting.Registry, dopts docker.Options, log logrus.FieldLogger, lease *runnerLease) (*Provider, error) {
	ac := runner.Autoscaler
	group, plugin, err := plugins.New(ac.Plugin)
	if err != nil {
		return nil, fmt.Errorf("[runners.autoscaler] plugin: %w", err)
	}
	pluginConfig, err := ac.PluginConfig.JSON()
	if err != nil {
		return nil, fmt.Errorf("[runners.autoscaler.plugin_config]: %w", err)
	}
	if err := fleeting.Configure(group, pluginConfig); err != nil {
		return nil, fmt.Errorf("[runners.autoscaler.plugin_config] for plugin %q: %w", plugin, err)
	}

	log = log.WithField("plugin", plugin)
	info, err := group.Init(ctx, log, fleeting.Settings{ConnectorConfig: settingsOf(ac.ConnectorConfig)})
	if err != nil {
		return nil, fmt.Errorf("plugin %q rejected its configuration ([runners.autoscaler.plugin_config] / connector_config): %w", plugin, err)
	}
	claim, err := claimGroup(ctx, group, info, deps.SystemID, lease != nil, log)
	if err != nil {
		_ = group.Shutdown(ctx)
		return nil, err
	}

	bgCtx, stopBg := context.WithCancel(context.Background())
	p := &Provider{
		runner:           runner,
		log:              log,
		group:            group,
		plugin:           plugin,
		info:             info,
		docker:           dopts,
		metrics:          newFleetMetrics(HistogramBuckets(ac)),
		readyCommand:     ac.InstanceReadyCommand,
		heartbeatOverSSH: runner.FeatureFlag(config.FFUseFleetingAcquireHeartbeats),
		logInternalIP:    ac.LogInternalIP,
		logExternalIP:    ac.LogExternalIP,
		policies:         slices.Clone(ac.Policy),
		leftovers:        map[string]*leftoverMark{},
		systemID:         deps.SystemID,
		runnerShort:      config.ShortToken(runner.Token),
		bgCtx:            bgCtx,
		stopBg:           stopBg,
		retried:          make(chan struct{}),
		lease:            lease,
		groupClaim:       claim,
	}
	p.interruptionsDone = make(chan struct{})
	p.leaseDone = make(chan struct{})
	p.claimDone = make(chan struct{})
	p.rolloutDone = make(chan struct{})
	p.rollout = rollout{pace: ac.GetRolloutMaxDraining(), draining: map[string]bool{}}
	p.notices = notices{seen: map[string]notice{}, attempts: map[string]map[*scriptWatch]context.CancelCauseFunc{}}

	// The taskscaler's hooks use the pool, and the pool the taskscaler (connection details, pinned host
	// keys): both exist before Start runs the first hook.
	opts, err := p.taskscalerOptions(ctx, deps.ConfigDir)
	if err != nil {
		p.abandon(ctx)
		return nil, err
	}
	ts, err := taskscaler.New(group, opts)
	if err != nil {
		p.abandon(ctx)
		return nil, fmt.Errorf("[runners.autoscaler]: %w", err)
	}
	p.ts = ts
	p.pool = connector.NewPool(connector.Config{
		Timeout:         ac.ConnectorConfig.Timeout,
		Keepalive:       ac.ConnectorConfig.Keepalive,
		UseExternalAddr: ac.ConnectorConfig.UseExternalAddr,
		HostKeys:        &hostKeys{ts: ts, statePath: p.statePath},
		DialStdio:       runner.FeatureFlag(config.FFUseDockerAutoscalerDialStdio),
		DockerHost:      runner.Docker.Host,
		IsStream:        docker.IsStream,
		Log:             log,
	}, ts.ConnectInfo)
	ts.Start(ctx)
	for _, in := range ts.Instances() {
		if in.State == "ready" || in.State == "draining" {
			p.markLeftovers(in.ID, leftoversAdopted)
		}
	}
	go p.retryLeftovers(ac.GetUpdateInterval())
	go p.watchInterruptions(ac.GetInterruptionCheckInterval())
	go p.keepLease()
	go p.keepClaim()
	// Outdated instances are checked as often as interruption notices: the aws plugin answers both from
	// its last listing, and a roll-out moves on as soon as a drained instance has left.
	go p.watchRollout(ac.GetInterruptionCheckInterval())

	perInstance, maxInstances := ts.Capacity()
	log.WithFields(logrus.Fields{"group": info.ID, "plugin_version": info.Version, "max_instances": maxInstances,
		"capacity_per_instance": perInstance}).Info("docker-autoscaler ready")
	return p, nil
}

// abandon undoes a provider that failed to start, before anything ran in the background.
func (p *Provider) abandon(ctx context.Context) {
	p.stopBg()
	if err := p.releaseClaim(ctx); err != nil {
		p.log.WithError(err).Warn("could not release the claim on the group after a failed start")
	}
	_ = p.group.Shutdown(ctx)
}

// stopBackground ends the leftover retries and removals; none starts after it (they start under mu).
func (p *Provider) stopBackground() {
	p.mu.Lock()
	p.stopBg()
	p.mu.Unlock()
}

func (p *Provider) taskscalerOptions(ctx context.Context, configDir string) (taskscaler.Options, error) {
	ac := p.runner.Autoscaler
	opts, err := TaskscalerOptions(ac, p.info.MaxSize)
	if err != nil {
		return taskscaler.Options{}, err
	}
	if opts.MaxInstances != ac.MaxInstances {
		p.log.WithFields(logrus.Fields{"max_instances": ac.MaxInstances, "plugin_max_size": p.info.MaxSize}).
			Warn("max_instances is above what the plugin's group can hold; using the group's size")
	}
	opts.Logger = p.log
	opts.ReadyUp = p.readyUp
	opts.HealthCheck = p.healthCheck
	opts.Gone = p.gone
	opts.Observe = p.metrics.observe
	switch {
	case p.lease != nil:
		// The taskscaler's own goroutines save; Abandon waits for them, so it runs apart.
		opts.State = p.lease.store(func(err error) { go p.giveUp(errLeaseLost, err, "another manager took the runner's state lease over") })
		p.statePath = fmt.Sprintf("DynamoDB table %s, item %s", p.lease.table, p.lease.key)
	case ac.StateStorageEnabled():
		path := p.stateFile(configDir)
		opts.State = state.NewFile(path)
		p.statePath = path
	default:
		p.log.Warn("state_storage is disabled: instances found in the group at start are removed, and jobs in flight at a crash are left to GitLab's timeout")
	}
	return opts, nil
}

// stateFile is the taskscaler's state file, or "" with state_storage off. The state directory is keyed
// by the runner id (not its token), so a token rotation keeps it; one named after the token is moved.
func (p *Provider) stateFile(configDir string) string {
	ac := p.runner.Autoscaler
	if !ac.StateStorageEnabled() {
		return ""
	}
	dir, r := ac.StateStorageDir(configDir), stateRunner(p.runner)
	if moved, err := state.MigrateLegacy(dir, r); err != nil {
		p.log.WithError(err).Warn("taskscaler state directory named after the runner token was not moved")
	} else if moved {
		p.log.WithField("state_key", state.Key(r)).Info("taskscaler state directory renamed from the short token to a name that survives token rotation")
	}
	return state.Path(dir, r)
}

// settingsOf copies [runners.autoscaler.connector_config] into what the plugin's Init gets.
// use_external_addr is the connector's own choice and stays with the pool.
func settingsOf(cc config.ConnectorConfig) fleeting.ConnectorConfig {
	return fleeting.ConnectorConfig{
		OS:                   cc.OS,
		Arch:                 cc.Arch,
		Protocol:             cc.Protocol,
		ProtocolPort:         cc.ProtocolPort,
		Username:             cc.Username,
		Password:             cc.Password,
		KeyPath:              cc.KeyPath,
		UseStaticCredentials: cc.UseStaticCredentials,
		Keepalive:            cc.Keepalive,
		Timeout:              cc.Timeout,
	}
}

// reservation is a slot held under a taskscaler key between asking GitLab and running the job.
type reservation struct {
	p    *Provider
	key  string
	once sync.Once
}

// Unreserve implements executors.Reservation.
func (r *reservation) Unreserve() {
	r.once.Do(func() { r.p.ts.Unreserve(r.key) })
}

// consume marks the reservation as used by Run, so a later Unreserve does nothing.
func (r *reservation) consume() { r.once.Do(func() {}) }

// Reserve implements executors.Provider: it holds taskscaler capacity under a fresh key. No capacity
// is executors.ErrNoCapacity, wrapping the taskscaler's reason.
func (p *Provider) Reserve(context.Context) (executors.Reservation, error) {
	if reason := p.gaveUp.Load(); reason != nil {
		return nil, &executors.StandbyError{RetryAt: time.Now(), Err: fmt.Errorf("%w: %w", executors.ErrNoCapacity, *reason)}
	}
	key := uuid.NewString()
	if err := p.ts.Reserve(key); err != nil {
		if errors.Is(err, taskscaler.ErrNoCapacity) {
			return nil, fmt.Errorf("%w: %w", executors.ErrNoCapacity, err)
		}
		return nil, fmt.Errorf("reserve capacity: %w", err)
	}
	return &reservation{p: p, key: key}, nil
}

// Features implements executors.Provider: the jobs run on executors/docker.
func (p *Provider) Features() map[string]bool { return docker.Features() }

// UpdatePolicies applies the [[runners.autoscaler.policy]] list of runner (executors.PolicyUpdater): the
// manager calls it on every config reload, as upstream applies policies; every other autoscaler key
// takes effect only after a restart. An unchanged list is left alone.
func (p *Provider) UpdatePolicies(runner *config.RunnerConfig) error {
	if runner == nil || runner.Autoscaler == nil {
		return errors.New("update policies: the runner has no [runners.autoscaler]")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if reflect.DeepEqual(p.policies, runner.Autoscaler.Policy) {
		return nil
	}
	policies, err := Policies(runner.Autoscaler.Policy)
	if err == nil {
		err = p.ts.SetPolicies(policies)
	}
	if err != nil {
		return fmt.Errorf("[[runners.autoscaler.policy]] not applied, keeping the running one: %w", err)
	}
	p.policies = slices.Clone(runner.Autoscaler.Policy)
	p.log.WithField("policies", len(policies)).Info("autoscaler policies updated")
	return nil
}

// Stats exposes the taskscaler's counts (for metrics and the status page).
func (p *Provider) Stats() taskscaler.Stats { return p.ts.Stats() }

// Instances lists the instances the taskscaler knows.
func (p *Provider) Instances() []taskscaler.InstanceInfo { return p.ts.Instances() }

// Shutdown implements executors.Provider: the taskscaler stops (deleting the instances only with
// delete_instances_on_shutdown), the claim on the group goes, then the plugin, then every SSH
// connection.
func (p *Provider) Shutdown(ctx context.Context) error {
	var err error
	p.shutdown.Do(func() {
		p.stopBackground()
		<-p.retried
		<-p.interruptionsDone
		<-p.leaseDone
		<-p.claimDone
		<-p.rolloutDone
		p.bg.Wait()
		var errs []error
		if e := p.ts.Shutdown(ctx); e != nil {
			errs = append(errs, fmt.Errorf("taskscaler shutdown: %w", e))
		}
		if e := p.releaseClaim(ctx); e != nil {
			errs = append(errs, e)
		}
		if e := p.group.Shutdown(ctx); e != nil {
			errs = append(errs, fmt.Errorf("plugin %q shutdown: %w", p.plugin, e))
		}
		_ = p.pool.Close()
		if e := p.releaseLease(ctx); e != nil {
			errs = append(errs, e)
		}
		err = errors.Join(errs...)
	})
	return err
}
