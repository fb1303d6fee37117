// Package demo is `make demo`: on a machine with Docker and OpenSSH it starts a GitLab simulator with a
// sample pipeline, runs the real manager with the docker-autoscaler executor on the local fleeting
// plugin (sshd "instances" on loopback), and shows jobs spreading over instances as they are created and
// retired, ending with a summary.
package demo

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/manager"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helperimage"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

//go:embed pipeline.yml
var pipelineYAML string

// The fleet the demo runs on: small enough to watch, busy enough to see instances come and go.
const (
	CapacityPerInstance = 2
	MaxInstances        = 3
	MaxUseCount         = 4
	IdleCount           = 1
	IdleTime            = 4 * time.Second
	BootDelay           = 2 * time.Second
)

// ErrPrerequisite is wrapped by the error Run returns when Docker, sshd or busybox-static is missing.
var ErrPrerequisite = errors.New("the demo cannot run on this machine")

// Options configure a demo run.
type Options struct {
	// Out receives the live view and the summary.
	Out io.Writer
	// Log receives the manager's and the autoscaler's own log; nil writes it to LogPath.
	Log logrus.FieldLogger
	// LogPath is where the log goes when Log is nil; empty means fleetrunner-demo.log in the temp dir.
	LogPath string
}

// Summary is how the demo went.
type Summary struct {
	Jobs, Succeeded, Failed int
	// InstancesCreated and InstancesRetired count what the autoscaler did while jobs ran; the
	// instances left at the end are removed when the demo stops.
	InstancesCreated, InstancesRetired int
	Wall                               time.Duration
}

// Run runs the demo until the pipeline is done and the fleet has scaled in, or ctx ends.
func Run(ctx context.Context, o Options) (Summary, error) {
	start := time.Now()
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	cli, err := checkPrerequisites(ctx)
	if err != nil {
		return Summary{}, err
	}
	defer cli.Close()

	log := o.Log
	if log == nil {
		path := o.LogPath
		if path == "" {
			path = filepath.Join(os.TempDir(), "fleetrunner-demo.log")
		}
		f, err := os.Create(path)
		if err != nil {
			return Summary{}, fmt.Errorf("create the demo log: %w", err)
		}
		defer f.Close()
		l := logrus.New()
		l.SetOutput(f)
		l.SetLevel(logrus.DebugLevel)
		log = l
		fmt.Fprintf(out, "fleetrunner demo (the runner's own log: %s)\n", path)
	}

	fmt.Fprintln(out, "Building the job image (static busybox) and the helper image on the local Docker Engine...")
	if err := buildJobImage(ctx, cli); err != nil {
		return Summary{}, err
	}
	if _, err := helperimage.Ensure(ctx, cli, log); err != nil {
		return Summary{}, fmt.Errorf("helper image: %w", err)
	}

	work, err := os.MkdirTemp("", "fleetrunner-demo-*")
	if err != nil {
		return Summary{}, err
	}
	defer os.RemoveAll(work)

	sim, err := gitlabsim.New(gitlabsim.Options{TraceUpdateInterval: 1, Logger: log.WithField("component", "gitlabsim")})
	if err != nil {
		return Summary{}, fmt.Errorf("start the GitLab simulator: %w", err)
	}
	defer sim.Close()
	_, token := sim.CreateRunner(gitlabsim.RunnerOptions{Description: "fleetrunner demo"})
	pipelineFile := filepath.Join(work, ".gitlab-ci.yml")
	if err := os.WriteFile(pipelineFile, []byte(strings.ReplaceAll(pipelineYAML, "DEMO_IMAGE", JobImage)), 0o600); err != nil {
		return Summary{}, err
	}
	pipeline, err := sim.LoadPipelineFile(pipelineFile)
	if err != nil {
		return Summary{}, err
	}

	configPath := filepath.Join(work, "config.toml")
	if err := config.Save(configPath, demoConfig(sim.URL(), token, work)); err != nil {
		return Summary{}, err
	}
	fmt.Fprintf(out, "GitLab simulator at %s with pipeline #%d (%d jobs); config %s\n", sim.URL(), pipeline.ID, len(pipeline.JobIDs), configPath)
	fmt.Fprintf(out, "Fleet: local plugin, capacity_per_instance=%d, max_instances=%d, max_use_count=%d, idle_count=%d, idle_time=%s, boot delay %s\n\n",
		CapacityPerInstance, MaxInstances, MaxUseCount, IdleCount, IdleTime, BootDelay)

	made := make(chan *dockerautoscaler.Provider, 1)
	reg := executors.Registry{dockerautoscaler.Name: func(rc *config.RunnerConfig, deps executors.Deps) (executors.Provider, error) {
		p, err := dockerautoscaler.NewProvider(rc, deps)
		if err == nil {
			made <- p.(*dockerautoscaler.Provider)
		}
		return p, err
	}}
	m := manager.New(log, manager.Options{ConfigPath: configPath, Registry: reg, SystemID: "s_demo"})
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(context.WithoutCancel(ctx)) }()
	var p *dockerautoscaler.Provider
	select {
	case p = <-made:
	case err := <-runDone:
		return Summary{}, fmt.Errorf("the manager did not start: %w", err)
	case <-ctx.Done():
		m.StopForcefully()
		<-runDone
		return Summary{}, ctx.Err()
	}

	v := newView(out, sim, p, pipeline.JobIDs, start)
	watchErr := v.watch(ctx)

	v.say("stopping the manager; the instances left are removed")
	if watchErr != nil {
		m.StopForcefully()
	} else {
		m.StopGracefully()
	}
	stopErr := <-runDone

	sum := v.summary()
	sum.Wall = time.Since(start)
	fmt.Fprintf(out, "\nSummary: %d jobs: %d succeeded, %d failed; instances: %d created, %d retired by the autoscaler; wall time %s\n",
		sum.Jobs, sum.Succeeded, sum.Failed, sum.InstancesCreated, sum.InstancesRetired, sum.Wall.Round(100*time.Millisecond))
	if watchErr != nil {
		return sum, watchErr
	}
	if stopErr != nil {
		return sum, fmt.Errorf("manager: %w", stopErr)
	}
	return sum, nil
}

// checkPrerequisites returns a client of a Docker Engine that answers, or says what is missing.
func checkPrerequisites(ctx context.Context) (*client.Client, error) {
	var missing []string
	if _, err := os.Stat(local.SSHDPath); err != nil {
		missing = append(missing, fmt.Sprintf("OpenSSH's sshd is not at %s (apt-get install openssh-server)", local.SSHDPath))
	}
	if _, err := os.Stat(BusyboxPath); err != nil {
		missing = append(missing, fmt.Sprintf("no static busybox at %s for the job image (apt-get install busybox-static)", BusyboxPath))
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = cli.Ping(pctx)
		cancel()
		if err != nil {
			_ = cli.Close()
		}
	}
	if err != nil {
		missing = append(missing, fmt.Sprintf("no Docker Engine answers (%v); start dockerd or set DOCKER_HOST", err))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w:\n  - %s", ErrPrerequisite, strings.Join(missing, "\n  - "))
	}
	return cli, nil
}

// demoConfig is the config.toml the demo's manager runs: one docker-autoscaler runner on the local
// plugin, job containers on the host network so that they reach the simulator on loopback.
func demoConfig(url, token, work string) *config.Config {
	preemptive := false
	return &config.Config{
		Concurrent:      CapacityPerInstance * MaxInstances,
		CheckInterval:   1,
		ShutdownTimeout: 30,
		Runners: []*config.RunnerConfig{{
			Name:               "fleetrunner-demo",
			RunnerCredentials:  config.RunnerCredentials{URL: url, Token: token},
			Executor:           dockerautoscaler.Name,
			RequestConcurrency: CapacityPerInstance * MaxInstances,
			Docker: &config.DockerConfig{
				Image:       JobImage,
				PullPolicy:  config.StringOrSlice{"if-not-present"},
				NetworkMode: "host",
			},
			Autoscaler: &config.AutoscalerConfig{
				Plugin:                      "local",
				CapacityPerInstance:         CapacityPerInstance,
				MaxInstances:                MaxInstances,
				MaxUseCount:                 MaxUseCount,
				UpdateInterval:              time.Second,
				UpdateIntervalWhenExpecting: 250 * time.Millisecond,
				PluginConfig: config.PluginConfig{
					"name":         "demo",
					"max_size":     MaxInstances,
					"boot_delay":   BootDelay.String(),
					"base_address": fmt.Sprintf("127.77.%d.1", rand.IntN(250)),
				},
				ConnectorConfig: config.ConnectorConfig{Keepalive: 5 * time.Second},
				StateStorage:    config.StateStorage{Dir: filepath.Join(work, "state")},
				Policy: []config.AutoscalerPolicyConfig{{
					IdleCount: IdleCount, IdleTime: IdleTime, PreemptiveMode: &preemptive,
				}},
			},
		}},
	}
}
