// Package demo is `make demo`: on a machine with Docker and OpenSSH it starts a GitLab simulator with a
// sample pipeline, runs the real `fleetrunner run` binary as a child process with the docker-autoscaler
// executor on the local fleeting plugin (sshd "instances" on loopback), and shows jobs spreading over
// instances as they are created and retired, ending with a summary. It watches the runner only from
// outside, as an operator would: the metrics server (/metrics, /debug/autoscaler/instances), the job
// logs in the simulator, and the local plugin's state directory.
package demo

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helperimage"
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
	// Instances boot as on EC2, shortened: running after BootDelay, sshd SSHDDelay later, Docker
	// DockerDelay after that (the Docker stage is simulated only as root).
	BootDelay   = 2 * time.Second
	SSHDDelay   = time.Second
	DockerDelay = 500 * time.Millisecond
)

// Bounds of the demo's waits, so that a broken runner ends the demo with an error instead of a hang.
const (
	// pipelineTimeout bounds the whole pipeline, from the runner's start to its last job.
	pipelineTimeout = 5 * time.Minute
	// shutdownTimeout is the runner's shutdown_timeout: the time its executor has to delete the
	// instances once it stops.
	shutdownTimeout = 30 * time.Second
	// stopWait bounds the wait for the runner to exit after the demo's signal; then it is killed.
	stopWait = shutdownTimeout + 15*time.Second
)

// ErrPrerequisite is wrapped by the error Run returns when Docker, sshd, busybox-static or the Go
// toolchain (to build fleetrunner) is missing.
var ErrPrerequisite = errors.New("the demo cannot run on this machine")

// Options configure a demo run.
type Options struct {
	// Out receives the live view and the summary.
	Out io.Writer
	// LogPath receives the runner's own log (its stdout and stderr) and the simulator's; empty means
	// fleetrunner-demo.log in the temp dir.
	LogPath string
	// Fleetrunner is the fleetrunner binary to run; empty builds one from this checkout with
	// `go build ./cmd/fleetrunner`.
	Fleetrunner string
}

// Summary is how the demo went.
type Summary struct {
	Jobs, Succeeded, Failed int
	// InstancesCreated and InstancesRetired count what the autoscaler did while jobs ran; the
	// instances left at the end are deleted when the runner stops (delete_instances_on_shutdown).
	InstancesCreated, InstancesRetired int
	// LeftRunning counts sshd instances still running after the runner stopped; the demo kills them.
	LeftRunning int
	Wall        time.Duration
}

// Run runs the demo until the pipeline is done and the fleet has scaled in, or ctx ends; then it
// stops the runner (SIGQUIT, or SIGTERM when ctx ended or something failed) and checks that no
// instance is left running.
func Run(ctx context.Context, o Options) (Summary, error) {
	start := time.Now()
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	pre, err := checkPrerequisites(ctx, o.Fleetrunner)
	if err != nil {
		return Summary{}, err
	}
	defer pre.docker.Close()

	logPath := o.LogPath
	if logPath == "" {
		logPath = filepath.Join(os.TempDir(), "fleetrunner-demo.log")
	}
	// O_APPEND: the runner and the simulator write to the same file through their own descriptors.
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return Summary{}, fmt.Errorf("create the demo log: %w", err)
	}
	defer logFile.Close()
	log := logrus.New()
	log.SetOutput(logFile)
	log.SetLevel(logrus.DebugLevel)
	fmt.Fprintf(out, "fleetrunner demo (the runner's own log: %s)\n", logPath)

	work, err := os.MkdirTemp("", "fleetrunner-demo-*")
	if err != nil {
		return Summary{}, err
	}
	defer os.RemoveAll(work)

	bin := o.Fleetrunner
	if bin == "" {
		fmt.Fprintf(out, "Building fleetrunner (go build ./cmd/fleetrunner in %s)...\n", pre.moduleRoot)
		if bin, err = buildFleetrunner(ctx, pre.gobin, pre.moduleRoot, work); err != nil {
			return Summary{}, err
		}
	}

	fmt.Fprintln(out, "Building the job image (static busybox) and the helper image on the local Docker Engine...")
	if err := buildJobImage(ctx, pre.docker); err != nil {
		return Summary{}, err
	}
	if _, err := helperimage.Ensure(ctx, pre.docker, log); err != nil {
		return Summary{}, fmt.Errorf("helper image: %w", err)
	}

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

	listen, err := freeAddress()
	if err != nil {
		return Summary{}, err
	}
	pluginDir := filepath.Join(work, "plugin")
	configPath := filepath.Join(work, "config.toml")
	if err := config.Save(configPath, demoConfig(sim.URL(), token, listen, work, pluginDir)); err != nil {
		return Summary{}, err
	}
	fmt.Fprintf(out, "GitLab simulator at %s with pipeline #%d (%d jobs); config %s\n", sim.URL(), pipeline.ID, len(pipeline.JobIDs), configPath)
	fmt.Fprintf(out, "Fleet: local plugin, capacity_per_instance=%d, max_instances=%d, max_use_count=%d, idle_count=%d, idle_time=%s, boot: running after %s, sshd +%s, Docker +%s\n",
		CapacityPerInstance, MaxInstances, MaxUseCount, IdleCount, IdleTime, BootDelay, SSHDDelay, DockerDelay)

	runner, err := startRunner(bin, configPath, logFile)
	if err != nil {
		return Summary{}, err
	}
	fmt.Fprintf(out, "Started %s run (pid %d); watching its metrics server at http://%s\n\n", bin, runner.pid(), listen)

	// From here on every path stops the runner and looks for leftovers before returning.
	fleet := newFleetClient("http://" + listen)
	v := newView(out, sim, fleet, pipeline.JobIDs, start)
	watchErr := waitHealthy(ctx, fleet, runner, logPath)
	if watchErr == nil {
		watchErr = v.watch(ctx, runner.exited)
	}
	if watchErr == nil {
		v.operatorCounters(ctx)
	}

	sig := syscall.SIGQUIT
	if watchErr != nil {
		// Interrupted or broken: abort the running jobs instead of waiting for them.
		sig = syscall.SIGTERM
	}
	v.say("stopping fleetrunner (%s); with delete_instances_on_shutdown it deletes the instances left", sigName(sig))
	stopErr := runner.stop(sig, stopWait)
	left, leftErr := killLeftovers(pluginDir)

	sum := v.summary()
	sum.LeftRunning = len(left)
	sum.Wall = time.Since(start)
	if len(left) == 0 && leftErr == nil {
		v.say("fleetrunner exited; no instance is left running")
	}
	fmt.Fprintf(out, "\nSummary: %d jobs: %d succeeded, %d failed; instances: %d created, %d retired by the autoscaler, %d left running; wall time %s\n",
		sum.Jobs, sum.Succeeded, sum.Failed, sum.InstancesCreated, sum.InstancesRetired, sum.LeftRunning, sum.Wall.Round(100*time.Millisecond))

	var errs []error
	switch {
	case errors.Is(watchErr, context.Canceled):
		errs = append(errs, watchErr)
	case watchErr != nil:
		errs = append(errs, fmt.Errorf("%w (log: %s)", watchErr, logPath))
	}
	if stopErr != nil {
		errs = append(errs, fmt.Errorf("%w (log: %s)", stopErr, logPath))
	}
	if leftErr != nil {
		errs = append(errs, leftErr)
	}
	// After an interruption the runner may not have finished deleting; only a clean run must leave
	// nothing behind.
	if len(left) > 0 && watchErr == nil {
		errs = append(errs, fmt.Errorf("fleetrunner stopped but left instances running (%s); the demo killed them (log: %s)",
			strings.Join(left, ", "), logPath))
	}
	return sum, errors.Join(errs...)
}

// prerequisites is what checkPrerequisites found.
type prerequisites struct {
	docker     *client.Client
	gobin      string // empty when a fleetrunner binary was given
	moduleRoot string
}

// checkPrerequisites returns a client of a Docker Engine that answers and, unless a fleetrunner binary
// is given, the Go toolchain and the checkout to build one from; or says everything that is missing.
func checkPrerequisites(ctx context.Context, fleetrunner string) (prerequisites, error) {
	var pre prerequisites
	var missing []string
	if _, err := os.Stat(local.SSHDPath); err != nil {
		missing = append(missing, fmt.Sprintf("OpenSSH's sshd is not at %s (apt-get install openssh-server)", local.SSHDPath))
	}
	if _, err := os.Stat(BusyboxPath); err != nil {
		missing = append(missing, fmt.Sprintf("no static busybox at %s for the job image (apt-get install busybox-static)", BusyboxPath))
	}
	if fleetrunner != "" {
		if fi, err := os.Stat(fleetrunner); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, fmt.Sprintf("--fleetrunner %s is not an executable file", fleetrunner))
		}
	} else {
		var err error
		if pre.gobin, err = exec.LookPath("go"); err != nil {
			missing = append(missing, "no Go toolchain (go) on PATH: the demo builds fleetrunner from this checkout; install Go or pass --fleetrunner PATH")
		} else if pre.moduleRoot, err = moduleRoot(ctx, pre.gobin); err != nil {
			missing = append(missing, err.Error())
		}
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
		return prerequisites{}, fmt.Errorf("%w:\n  - %s", ErrPrerequisite, strings.Join(missing, "\n  - "))
	}
	pre.docker = cli
	return pre, nil
}

// freeAddress picks a free loopback port for the runner's metrics server.
func freeAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port on 127.0.0.1 for the metrics server: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// demoConfig is the config.toml the demo's runner runs: one docker-autoscaler runner on the local
// plugin, job containers on the host network so that they reach the simulator on loopback, the
// metrics server on listen, and every instance deleted when the runner stops.
func demoConfig(url, token, listen, work, pluginDir string) *config.Config {
	preemptive := false
	return &config.Config{
		Concurrent:      CapacityPerInstance * MaxInstances,
		CheckInterval:   1,
		ShutdownTimeout: int(shutdownTimeout / time.Second),
		ListenAddress:   listen,
		Runners: []*config.RunnerConfig{{
			Name:               "fleetrunner-demo",
			RunnerCredentials:  config.RunnerCredentials{URL: url, Token: token},
			Executor:           config.ExecutorDockerAutoscaler,
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
				DeleteInstancesOnShutdown:   true,
				// The local plugin deletes at once; the default 10 s before checking would only wait.
				ShutdownDeletionInterval: time.Second,
				PluginConfig: config.PluginConfig{
					"name":         "demo",
					"max_size":     MaxInstances,
					"boot_delay":   BootDelay.String(),
					"sshd_delay":   SSHDDelay.String(),
					"docker_delay": DockerDelay.String(),
					"base_address": fmt.Sprintf("127.77.%d.1", rand.IntN(250)),
					// A state dir the demo can look into after the runner stopped.
					"state_dir": pluginDir,
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
