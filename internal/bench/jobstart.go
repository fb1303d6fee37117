package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/common/trace"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

func init() {
	Register(Bench{Name: "1 warm job start", Run: warmJobStart})
}

// marker is the first script line every benchmark job prints; its arrival in the job log is when the
// job "runs its script".
const marker = "first-line"

// stages names the job log's sections by the stage of the breakdown they belong to.
var stages = []struct{ section, stage string }{
	{"prepare_executor", "prepare"},
	{"prepare_script", "helper"},
	{"get_sources", "get_sources"},
	{"step_script", "script"},
	{"after_script", "after_script"},
	{"upload_artifacts_on_success", "upload"},
	{"cleanup_file_variables", "cleanup"},
}

// warmJobStart runs jobs one after another on one warm instance, each through the provider (job
// received → first script line over the pooled SSH tunnel), and the same container bare through an
// already-open SSH connection, which no executor can beat: the ratio is what the executor's stages
// before the script cost. It does so on the local plugin and on the aws plugin against awssim, whose
// connections need an EC2 Instance Connect key push each.
func warmJobStart(t *testing.T, p Profile) []Row {
	jobs := 10
	if p.Short {
		jobs = 2
	}
	var rows []Row
	t.Run("local", func(t *testing.T) {
		w := measureWarm(t, newAutoscalerRig(t, 1), jobs)
		rows = append(rows, w.rows("local")...)
		rows = append(rows, breakdown("acquire + connect", w.ms(w.before)))
		for _, s := range stages {
			// A stage the job did not run, or that took no measurable time, has no row.
			if d := w.stages[s.section]; d > 0 {
				rows = append(rows, breakdown(s.stage, w.ms(d)))
			}
		}
		rows = append(rows, breakdown("container removal", w.ms(w.after)))
	})
	t.Run("aws", func(t *testing.T) {
		r := newAutoscalerRig(t, 1)
		onAWSSim(t, r)
		rows = append(rows, measureWarm(t, r, jobs).rows("aws on awssim, Instance Connect")...)
	})
	return rows
}

// warmTimes are the sums over the warm jobs, and the fresh job's and its bare limit's times.
type warmTimes struct {
	jobs                         int
	toFirst, bare, before, after time.Duration
	stages                       map[string]time.Duration
	fresh, freshBare             time.Duration
}

// ms is d per warm job in milliseconds.
func (w warmTimes) ms(d time.Duration) float64 { return ms(d) / float64(w.jobs) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rows are the warm and the fresh job's rows, for the plugin named by plugin.
func (w warmTimes) rows(plugin string) []Row {
	return []Row{{
		Name: "warm job start, " + plugin + ": received → first script line", Value: w.ms(w.toFirst), Unit: "ms",
		Limit: w.ms(w.bare), LimitName: "bare container over an open SSH connection", Goal: "≤ 1.3×",
		Note: fmt.Sprintf("mean of %d jobs through the pooled SSH tunnel", w.jobs),
	}, {
		Name: "first job on a fresh instance, " + plugin + ": received → first script line", Value: ms(w.fresh), Unit: "ms",
		Limit: ms(w.freshBare), LimitName: "ConnectInfo + SSH dial + bare container", Goal: "≤ 1.3×",
		Note: "one job; the instance's SSH connection was dialled when it was readied",
	}}
}

// measureWarm keeps one instance warm on r's fleet and runs a fresh job and then jobs warm jobs on it,
// and their bare limits.
func measureWarm(t *testing.T, r *autoscalerRig, jobs int) warmTimes {
	r.runner.Autoscaler.Policy = []config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: time.Hour}}
	prov := r.start(t)
	testrig.WaitFor(t, time.Minute, "a warm instance", func() bool { return len(readyInstances(prov)) == 1 })
	id := readyInstances(prov)[0]

	// The first job on the fresh instance: its connection was dialled, and its host key pinned, when
	// the instance was readied, so the job finds the tunnel open but the instance's Docker cold.
	r.sim.Enqueue(r.spec("fresh"))
	fresh := r.mustRun(t, prov)
	w := warmTimes{jobs: jobs, stages: map[string]time.Duration{}, fresh: fresh.first.Sub(fresh.received)}
	for i := range jobs {
		r.sim.Enqueue(r.spec(fmt.Sprintf("warm-%d", i)))
		j := r.mustRun(t, prov)
		w.toFirst += j.first.Sub(j.received)
		for _, s := range j.sections {
			w.stages[s.name] += s.end.Sub(s.start)
		}
		if len(j.sections) > 0 {
			w.before += j.sections[0].start.Sub(j.received)
			w.after += j.done.Sub(j.sections[len(j.sections)-1].end)
		}
	}

	// The bare limit of the fresh job: connection details (with a key push on AWS), a new SSH
	// connection as the pool dials it, and the container through it.
	dialStart := time.Now()
	info, err := r.group.ConnectInfo(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	c, err := connector.Dial(t.Context(), info, connector.Config{Timeout: 10 * time.Second, DockerHost: r.runner.Docker.Host})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	cli, err := connector.NewDockerClient(c.DialDocker)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cli.Close() }()
	dialled := time.Since(dialStart)
	firstBare, err := bareContainer(t.Context(), cli, r.image, r.runner.Docker.NetworkMode)
	if err != nil {
		t.Fatal(err)
	}
	w.freshBare = dialled + firstBare
	for range jobs {
		d, err := bareContainer(t.Context(), cli, r.image, r.runner.Docker.NetworkMode)
		if err != nil {
			t.Fatal(err)
		}
		w.bare += d
	}
	return w
}

// breakdown is one stage of the warm job as a row without a limit.
func breakdown(stage string, ms float64) Row {
	return Row{Name: "  warm job stage: " + stage, Value: ms, Unit: "ms", Goal: "breakdown"}
}

// bareContainer runs `echo first-line` in image through cli, on the job's network mode as the job's
// container is, and returns how long create, attach and start took until the line arrived; the removal
// afterwards is not counted, as the job's is not.
func bareContainer(ctx context.Context, cli client.APIClient, image, network string) (time.Duration, error) {
	start := time.Now()
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Cmd: []string{"sh", "-c", "echo " + marker},
		AttachStdout: true, AttachStderr: true}, &container.HostConfig{NetworkMode: container.NetworkMode(network)}, nil, nil, "")
	if err != nil {
		return 0, err
	}
	defer func() {
		_ = cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
	}()
	att, err := cli.ContainerAttach(ctx, created.ID, container.AttachOptions{Stream: true, Stdout: true})
	if err != nil {
		return 0, err
	}
	defer att.Close()
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return 0, err
	}
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for !bytes.Contains(seen.Bytes(), []byte(marker)) {
		n, err := att.Reader.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			return 0, fmt.Errorf("container output ended before its first line: %w", err)
		}
	}
	return time.Since(start), nil
}

// autoscalerRig is a gitlabsim with one runner and a docker-autoscaler runner config on the local
// plugin, whose instances all share this machine's Docker Engine. Job containers use host networking
// to reach the simulator on loopback.
type autoscalerRig struct {
	sim    *gitlabsim.Server
	gl     *gitlab.Client
	image  string
	runner *config.RunnerConfig
	dir    string
	// group is the plugin the provider made, for the instances' connection details.
	group fleeting.InstanceGroup
}

// newAutoscalerRig makes the rig for up to maxInstances instances that boot at once.
func newAutoscalerRig(t *testing.T, maxInstances int) *autoscalerRig {
	t.Helper()
	testenv.RequireSSHD(t)
	cli, image := testrig.Engine(t)
	sim, gl, token := testrig.SimRunner(t, "bench", dockerautoscaler.Name, docker.Features())
	dir := t.TempDir()
	r := &autoscalerRig{sim: sim, gl: gl, image: image, dir: dir, runner: &config.RunnerConfig{
		Name:              "bench",
		RunnerCredentials: config.RunnerCredentials{URL: sim.URL(), Token: token},
		Executor:          dockerautoscaler.Name,
		Docker:            &config.DockerConfig{Image: image, PullPolicy: config.StringOrSlice{"if-not-present"}, NetworkMode: "host"},
		Autoscaler: &config.AutoscalerConfig{
			Plugin:                      "local",
			CapacityPerInstance:         2,
			MaxInstances:                maxInstances,
			UpdateInterval:              time.Second,
			UpdateIntervalWhenExpecting: 200 * time.Millisecond,
			DeletionRetryInterval:       time.Second,
			PluginConfig: config.PluginConfig{
				"max_size":     maxInstances,
				"boot_delay":   "0s",
				"sshd_delay":   "0s",
				"docker_delay": "0s",
				// A loopback /24 of its own, so that a concurrent test's instances do not collide.
				"base_address":  fmt.Sprintf("127.%d.%d.1", 150+rand.IntN(50), rand.IntN(256)),
				"docker_socket": testenv.DockerSocket(),
			},
			// No row measures how fast a dead instance is noticed; a keepalive as short as the tests' (1 s)
			// takes a busy machine's late answers for dead instances in a burst.
			ConnectorConfig: config.ConnectorConfig{Keepalive: 10 * time.Second, Timeout: 10 * time.Second},
			StateStorage:    config.StateStorage{Dir: filepath.Join(dir, "state")},
		},
	}}
	// A job whose container outlived the provider's shutdown must not stay on the shared engine.
	t.Cleanup(func() { testrig.RemoveJobLeftovers(t, cli, r.runner.Token, true) })
	return r
}

// spec is a job whose script prints the marker first, with an after_script and an artifact so that
// every stage of the breakdown runs.
func (r *autoscalerRig) spec(name string) gitlabsim.JobSpec {
	return gitlabsim.JobSpec{Name: name, Image: r.image, Script: []string{"echo " + marker, "echo out > out.txt"},
		AfterScript: []string{"true"}, Artifacts: []job.Artifact{{Paths: []string{"out.txt"}, When: "on_success"}}}
}

// start makes the provider as the manager would and shuts it down at the end of the test.
func (r *autoscalerRig) start(t *testing.T) *dockerautoscaler.Provider {
	t.Helper()
	plugins := fleeting.Registry{
		"local": func() fleeting.InstanceGroup {
			r.group = &local.InstanceGroup{}
			return r.group
		},
		"aws": func() fleeting.InstanceGroup {
			r.group = &aws.InstanceGroup{}
			return r.group
		},
	}
	made, err := dockerautoscaler.New(plugins)(r.runner, executors.Deps{Logger: logging.Discard(), ConfigDir: r.dir, SystemID: "s_bench"})
	if err != nil {
		t.Fatalf("new provider: %v", err)
	}
	p, ok := made.(*dockerautoscaler.Provider)
	if !ok {
		t.Fatalf("provider is %T", made)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return p
}

// readyInstances are the IDs of the provider's ready instances.
func readyInstances(p *dockerautoscaler.Provider) []string {
	var ids []string
	for _, in := range p.Instances() {
		if in.State == "ready" {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

// run does what the manager does for one job: reserve a slot, ask GitLab, run it with a real trace,
// report. It returns what the job log saw when, or why the job did not succeed.
func (r *autoscalerRig) run(ctx context.Context, p *dockerautoscaler.Provider) (jobTimes, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var res executors.Reservation
	var j *job.Job
	for j == nil {
		var err error
		if res, err = p.Reserve(ctx); err != nil {
			if ctx.Err() != nil {
				return jobTimes{}, fmt.Errorf("reserve: %w", err)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		got := r.gl.RequestJob(ctx, r.runner.Token, "s_bench")
		if got.Err != nil {
			res.Unreserve()
			return jobTimes{}, fmt.Errorf("request job: %w", got.Err)
		}
		if j = got.Job; j == nil {
			res.Unreserve()
			time.Sleep(50 * time.Millisecond)
		}
	}
	w := &watchLog{jobTimes: jobTimes{received: time.Now()}}
	tr := trace.New(r.gl, gitlab.JobCredentials{ID: j.ID, Token: j.Token}, trace.Options{
		MaskPhrases: j.Variables.MaskedValues(), UpdateInterval: 200 * time.Millisecond,
		ForceSendInterval: time.Second, Logger: logging.Discard(),
	})
	tr.Start()
	w.JobLog = tr
	jobCtx, canceling, stop := executors.NewJobContext(ctx, time.Duration(j.TimeoutSeconds())*time.Second, tr.Canceling(), nil)
	defer stop()
	runErr := p.Run(jobCtx, res, &executors.Build{Job: j, Runner: r.runner, Log: w, Logger: logging.Discard(),
		Canceling: canceling, SystemID: "s_bench"})
	w.mu.Lock()
	w.done = time.Now()
	w.mu.Unlock()
	if err := testrig.FinishJob(ctx, tr, j, runErr); err != nil {
		return jobTimes{}, fmt.Errorf("finish job %d: %w", j.ID, err)
	}
	if runErr != nil {
		return jobTimes{}, fmt.Errorf("job %d: %w\n%s", j.ID, runErr, tr.Bytes())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.first.IsZero() {
		return jobTimes{}, fmt.Errorf("job %d never printed %q:\n%s", j.ID, marker, tr.Bytes())
	}
	return w.jobTimes, nil
}

// mustRun is run on the test's goroutine: a job that does not succeed fails the test.
func (r *autoscalerRig) mustRun(t *testing.T, p *dockerautoscaler.Provider) jobTimes {
	t.Helper()
	times, err := r.run(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	return times
}

// section is one section of the job log and when it started and ended.
type section struct {
	name       string
	start, end time.Time
}

// watchLog passes the job log through and notes when each section started and ended and when the
// script first printed the marker.
type watchLog struct {
	executors.JobLog

	mu     sync.Mutex
	script bytes.Buffer
	jobTimes
}

// jobTimes is when one job was received, printed the marker and ended, and its sections.
type jobTimes struct {
	received, first, done time.Time
	sections              []section
}

func (w *watchLog) Write(p []byte) (int, error) {
	n, err := w.JobLog.Write(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if k := len(w.sections); k > 0 && w.sections[k-1].name == "step_script" && w.sections[k-1].end.IsZero() && w.first.IsZero() {
		w.script.Write(p)
		if bytes.Contains(w.script.Bytes(), []byte(marker)) {
			w.first = time.Now()
		}
	}
	return n, err
}

func (w *watchLog) SectionStart(name, header string) {
	w.JobLog.SectionStart(name, header)
	w.mu.Lock()
	w.sections = append(w.sections, section{name: name, start: time.Now()})
	w.mu.Unlock()
}

func (w *watchLog) SectionEnd(name string) {
	w.JobLog.SectionEnd(name)
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.sections) - 1; i >= 0; i-- {
		if w.sections[i].name == name && w.sections[i].end.IsZero() {
			w.sections[i].end = time.Now()
			return
		}
	}
}
