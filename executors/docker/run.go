package docker

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// errScriptTimeout ends step_script's context at RUNNER_SCRIPT_TIMEOUT, a job variable this executor
// owns; the job's own timeout and cancel come from the caller's contexts (executors.NewJobContext).
var errScriptTimeout = errors.New("script timeout")

// jobImage is the resolved job image.
type jobImage struct {
	name       string
	entrypoint []string
	policies   []string
	platform   *ocispec.Platform
	user       string
}

// run is the state of one job on one engine.
type run struct {
	cli    client.APIClient
	b      *executors.Build
	j      *job.Job
	rc     *config.RunnerConfig
	dc     *config.DockerConfig
	log    executors.JobLog
	logger logrus.FieldLogger
	opts   Options

	uid, short                              string
	baseLabels                              map[string]string
	buildsDir, projectDir, tmpDir, cacheDir string
	vars                                    job.Variables

	image    jobImage
	imageID  string
	services []*service
	hostTmpl *container.HostConfig

	buildVolume string
	buildBinds  []string     // [runners.docker] volumes as binds, plus the build volume
	cacheBind   string       // source:/cache for helper containers; "" when caching is disabled
	remote      *remoteCache // the S3 cache; nil keeps the cache in the local cache volume
	volumes     []volumeSpec
	network     string // per-build network name, when one is used
	links       []string

	needHelper  bool
	helperImage string
	// scriptUser is who the job's scripts run as: docker.user, else the image's USER ("" is root).
	scriptUser string
	// umask: every stage runs under umask 0000, as upstream does unless
	// FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR is on, so that files stay writable whoever the script runs as.
	umask bool

	created created
	seq     int
}

// volumeSpec is a volume to create in prepare_executor.
type volumeSpec struct {
	name      string
	labels    map[string]string
	temporary bool
}

func newUID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func configErr(format string, args ...any) error {
	return &job.BuildError{Reason: job.ConfigurationError, Err: fmt.Errorf(format, args...)}
}

// newRun checks the job against the runner's configuration before anything is created on the engine.
func newRun(cli client.APIClient, b *executors.Build, opts Options) (*run, error) {
	r := &run{cli: cli, b: b, j: b.Job, rc: b.Runner, log: b.Log, logger: logging.Or(b.Logger), opts: opts, uid: newUID()}
	r.dc = r.rc.Docker
	if r.dc == nil {
		r.dc = &config.DockerConfig{}
	}
	r.short = config.ShortToken(r.rc.Token)

	r.buildsDir = r.rc.GetBuildsDir()
	r.cacheDir = r.rc.GetCacheDir()
	project := r.j.JobInfo.ProjectFullPath
	if project == "" {
		project = fmt.Sprintf("project-%d", r.j.JobInfo.ProjectID)
	}
	r.projectDir = path.Join(r.buildsDir, project)
	if p := r.j.Variables.Get("GIT_CLONE_PATH"); p != "" {
		if !r.rc.GetCustomBuildDirEnabled() {
			return nil, configErr("GIT_CLONE_PATH is set but custom_build_dir is disabled for this runner")
		}
		p = path.Clean(p)
		if !strings.HasPrefix(p, r.buildsDir+"/") {
			return nil, configErr("GIT_CLONE_PATH %q is not inside the builds directory %s", p, r.buildsDir)
		}
		r.projectDir = p
	}
	r.tmpDir = r.projectDir + ".tmp"

	// Upstream's precedence: [[runners]] environment, then the runner's CI_* variables, then the job's
	// (which override both), then the runner version variables.
	r.vars = append(append(append(runnerEnvironment(r.rc.Environment), r.predefined()...), r.j.Variables...), r.runnerVersion()...)
	if r.j.Image.Name != "" {
		// First, as upstream: the job's variables may override it.
		r.vars = append(job.Variables{{Key: "CI_JOB_IMAGE", Value: r.j.Image.Name, Public: true}}, r.vars...)
	}
	r.baseLabels = map[string]string{}
	for k, v := range r.dc.ContainerLabels {
		r.baseLabels[k] = r.vars.Expand(v)
	}
	// Ours are set last so container_labels cannot hide a job's resources from cleanup.
	r.baseLabels[LabelManaged] = "true"
	r.baseLabels[LabelBuild] = r.uid
	r.baseLabels[LabelJobID] = strconv.FormatInt(r.j.ID, 10)
	r.baseLabels[LabelProjectID] = strconv.FormatInt(r.j.JobInfo.ProjectID, 10)
	r.baseLabels[LabelRunner] = r.short
	r.baseLabels[LabelSystemID] = r.b.SystemID

	if err := r.resolveImage(); err != nil {
		return nil, err
	}
	var err error
	if r.services, err = r.collectServices(); err != nil {
		return nil, err
	}
	if r.hostTmpl, err = buildHostConfig(r.dc); err != nil {
		return nil, fmt.Errorf("[runners.docker] of runner %q: %w", r.rc.Name, err)
	}
	r.hostTmpl.Privileged = r.dc.Privileged && imageAllowed(r.image.name, r.dc.AllowedPrivilegedImages)
	r.remote = newRemoteCache(r.rc)
	r.planVolumes()
	if err := r.checkArtifactPaths(); err != nil {
		return nil, err
	}
	r.umask = !r.rc.FeatureFlag(config.FFDisableUmaskForDockerExecutor)
	r.needHelper = r.gitStrategy() != "none" || len(r.j.Cache) > 0 || len(r.j.Artifacts) > 0 || len(r.dependencies()) > 0 ||
		(len(r.services) > 0 && r.dc.GetWaitForServicesTimeout() > 0) // the helper checks that services listen
	return r, nil
}

func (r *run) resolveImage() error {
	img := &r.image
	img.name = r.vars.Expand(r.j.Image.Name)
	fromJob := img.name != ""
	if !fromJob {
		img.name = r.vars.Expand(r.dc.Image)
	}
	if img.name == "" {
		return configErr("no image: set image in the job or image in [runners.docker]")
	}
	if fromJob && !imageAllowed(img.name, r.dc.AllowedImages) {
		return configErr("image %q is not allowed by allowed_images %v", img.name, r.dc.AllowedImages)
	}
	var err error
	if img.policies, err = pullPolicies(r.dc, r.j.Image.PullPolicy); err != nil {
		return err
	}
	if !r.dc.DisableEntrypointOverwrite {
		img.entrypoint = r.j.Image.Entrypoint
	}
	img.user = r.dc.User
	if o := r.j.Image.ExecutorOpts; o != nil {
		if img.platform, err = parsePlatform(o.Docker.Platform); err != nil {
			return err
		}
		if u := string(o.Docker.User); u != "" {
			if len(r.dc.AllowedUsers) > 0 && !slices.Contains(r.dc.AllowedUsers, u) {
				return configErr("user %q is not allowed by allowed_users %v", u, r.dc.AllowedUsers)
			}
			img.user = u
		}
	}
	return nil
}

// planVolumes decides the build volume, the [runners.docker] volumes and where the cache lives.
func (r *run) planVolumes() {
	r.buildVolume = r.name("builds")
	r.volumes = append(r.volumes, volumeSpec{name: r.buildVolume, labels: r.labels("volume"), temporary: true})
	r.buildBinds = append(r.buildBinds, r.buildVolume+":"+r.buildsDir)

	persistent := func(suffix string) string {
		name := fmt.Sprintf("fleetrunner-cache-%s-%d%s", r.short, r.j.JobInfo.ProjectID, suffix)
		r.volumes = append(r.volumes, volumeSpec{name: name, labels: map[string]string{
			LabelManaged: "true", LabelRunner: r.short, LabelProjectID: strconv.FormatInt(r.j.JobInfo.ProjectID, 10), LabelRole: "cache",
		}})
		return name
	}
	cacheConfigured := false
	for _, v := range r.dc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) > 1 {
			r.buildBinds = append(r.buildBinds, v)
			if path.Clean(parts[1]) == r.cacheDir {
				r.cacheBind, cacheConfigured = v, true
			}
			continue
		}
		p := path.Clean(parts[0])
		var name string
		switch {
		case p == r.cacheDir && !r.dc.DisableCache:
			name, cacheConfigured = persistent(""), true
			r.cacheBind = name + ":" + r.cacheDir
		case r.dc.DisableCache:
			name = r.name("vol")
			r.volumes = append(r.volumes, volumeSpec{name: name, labels: r.labels("volume"), temporary: true})
		default:
			sum := md5.Sum([]byte(p))
			name = persistent("-" + hex.EncodeToString(sum[:4]))
		}
		r.buildBinds = append(r.buildBinds, name+":"+p)
	}
	switch {
	case cacheConfigured:
	case r.dc.CacheDir != "":
		r.cacheBind = fmt.Sprintf("%s/%s/project-%d:%s", strings.TrimRight(r.dc.CacheDir, "/"), r.short, r.j.JobInfo.ProjectID, r.cacheDir)
	case !r.dc.DisableCache && len(r.j.Cache) > 0 && r.remote == nil:
		r.cacheBind = persistent("") + ":" + r.cacheDir
	}
}

// perBuildNetwork: services need one (aliases), and FF_NETWORK_PER_BUILD asks for one; an explicit
// network_mode wins.
func (r *run) perBuildNetwork() bool {
	if r.dc.NetworkMode != "" {
		return false
	}
	return len(r.services) > 0 || r.rc.FeatureFlag(config.FFNetworkPerBuild) || r.vars.Bool(config.FFNetworkPerBuild)
}

// networkMode is the network every job container (build, helper) joins.
func (r *run) networkMode() container.NetworkMode {
	if r.network != "" {
		return container.NetworkMode(r.network)
	}
	return container.NetworkMode(r.dc.NetworkMode)
}

// execute runs the stages and the cleanup, and decides the job's result. ctx ends when the job is
// aborted or timed out; the stages a graceful cancel stops (prepare to step_script) run under buildCtx,
// which also ends with b.Canceling's cause.
func (r *run) execute(ctx context.Context) error {
	defer r.cleanup(ctx)
	buildCtx, cancelBuild := context.WithCancelCause(ctx)
	defer cancelBuild(nil)
	if r.b.Canceling != nil {
		stop := context.AfterFunc(r.b.Canceling, func() {
			if buildCtx.Err() == nil {
				r.log.Warnf("Job cancel requested: stopping the script; after_script and on_failure stages still run")
			}
			cancelBuild(context.Cause(r.b.Canceling))
		})
		defer stop()
	}

	err := r.section("prepare_executor", fmt.Sprintf("Preparing the %q executor", "docker"), func() error { return r.prepare(buildCtx) })
	if err == nil {
		err = r.section("prepare_script", "Preparing environment", func() error { return r.prepareScript(buildCtx) })
	}
	if err != nil {
		return r.outcome(ctx, buildCtx, err)
	}

	buildErr := r.buildStages(buildCtx)
	if ctx.Err() != nil {
		return r.outcome(ctx, buildCtx, buildErr)
	}
	status := "success"
	switch {
	case errors.Is(context.Cause(buildCtx), executors.ErrCanceled):
		status = "canceled"
	case buildErr != nil:
		status = "failed"
	}
	r.afterScript(ctx, status)
	succeeded := buildErr == nil
	postErr := errors.Join(r.archiveCache(ctx, succeeded), r.uploadArtifacts(ctx, succeeded))
	r.cleanupFileVariables(ctx)
	if buildErr == nil {
		buildErr = postErr
	}
	return r.outcome(ctx, buildCtx, buildErr)
}

// outcome turns a stage error into the job's result: job timeout, abort and cancel (the causes the
// caller's contexts end with) take precedence over whatever error the interrupted stage reported.
func (r *run) outcome(ctx, buildCtx context.Context, err error) error {
	var timeout *executors.TimeoutError
	switch {
	case err == nil:
		return nil
	case errors.As(context.Cause(ctx), &timeout):
		return &job.BuildError{Reason: job.JobExecutionTimeout, Err: fmt.Errorf("%w (job timeout)", timeout)}
	case ctx.Err() != nil:
		return fmt.Errorf("job aborted: %w", context.Cause(ctx))
	case errors.Is(context.Cause(buildCtx), executors.ErrCanceled):
		return &job.BuildError{Reason: job.JobCanceled, Err: executors.ErrCanceled}
	case errors.Is(err, errScriptTimeout):
		return &job.BuildError{Reason: job.JobExecutionTimeout, Err: fmt.Errorf("script took longer than RUNNER_SCRIPT_TIMEOUT=%s", r.vars.Get("RUNNER_SCRIPT_TIMEOUT"))}
	}
	return err
}

// section runs fn inside a trace section.
func (r *run) section(name, header string, fn func() error) error {
	r.log.SectionStart(name, header)
	defer r.log.SectionEnd(name)
	err := fn()
	if err != nil {
		r.logger.WithField("stage", name).WithError(err).Debug("stage failed")
	}
	return err
}

// prepare is prepare_executor: reach the engine, images, volumes, network, services.
func (r *run) prepare(ctx context.Context) error {
	r.log.Infof("Using Docker executor with image %s on %s ...", r.image.name, r.opts.EngineName)
	if _, err := r.cli.Ping(ctx); err != nil {
		return fmt.Errorf("cannot reach the Docker Engine (%s): %w", r.opts.EngineName, err)
	}
	img, err := r.ensureImage(ctx, r.image.name, r.image.policies, r.image.platform)
	if err != nil {
		return err
	}
	r.imageID = img.ID
	r.log.Infof("Using docker image %s for %s ...", img.ID, r.image.name)
	r.scriptUser = r.image.user
	if r.scriptUser == "" && img.Config != nil {
		r.scriptUser = img.Config.User
	}
	if !isRoot(r.scriptUser) {
		r.needHelper = true // it makes the job's directories usable by that user
	}
	if r.needHelper {
		hi, err := r.opts.HelperImage(ctx, r.cli, r.logger)
		if err != nil {
			return fmt.Errorf("prepare the helper image on %s: %w", r.opts.EngineName, err)
		}
		r.helperImage = hi
	}

	for _, v := range r.volumes {
		if _, err := r.cli.VolumeCreate(ctx, volume.CreateOptions{Name: v.name, Labels: v.labels, Driver: r.dc.VolumeDriver, DriverOpts: r.dc.VolumeDriverOps}); err != nil {
			return fmt.Errorf("create volume %s: %w", v.name, err)
		}
		if v.temporary {
			r.created.add(&r.created.volumes, v.name)
		}
	}
	if r.perBuildNetwork() {
		name := r.name("network")
		opts := network.CreateOptions{Driver: "bridge", Labels: r.labels("network"), EnableIPv6: &r.dc.EnableIPv6}
		if r.dc.NetworkMTU > 0 {
			opts.Options = map[string]string{"com.docker.network.driver.mtu": strconv.Itoa(r.dc.NetworkMTU)}
		}
		resp, err := r.cli.NetworkCreate(ctx, name, opts)
		if err != nil {
			return fmt.Errorf("create per-build network: %w", err)
		}
		r.created.add(&r.created.networks, resp.ID)
		r.network = name
	}
	if len(r.services) > 0 {
		return r.startServices(ctx)
	}
	return nil
}

// buildSpec is a script container from the job image.
func (r *run) buildSpec(stage, script string) containerSpec {
	hc := *r.hostTmpl
	hc.Binds = r.buildBinds
	hc.NetworkMode = r.networkMode()
	hc.Links = append(append([]string{}, r.hostTmpl.Links...), r.links...)
	cfg := &container.Config{
		Image:      r.imageID,
		Entrypoint: r.image.entrypoint,
		Cmd:        []string{"sh", "-c", shellDetect},
		User:       r.image.user,
		Hostname:   r.dc.Hostname,
	}
	return containerSpec{role: "build", stage: stage, config: cfg, host: &hc, platform: r.image.platform, stdin: script, output: r.log}
}

// shell runs one shell session in the job image and returns its exit code.
func (r *run) shell(ctx context.Context, stage string, o scriptOptions) (int, error) {
	return r.runContainer(ctx, r.buildSpec(stage, r.shellScript(o)))
}

// shellStage runs a shell session whose non-zero exit fails the job as a script failure.
func (r *run) shellStage(ctx context.Context, stage string, o scriptOptions) error {
	code, err := r.shell(ctx, stage, o)
	if err != nil {
		return err
	}
	if code != 0 {
		return &job.BuildError{Reason: job.ScriptFailure, ExitCode: code, Err: fmt.Errorf("exit code %d", code)}
	}
	return nil
}

// prepareScript says where the job runs. Upstream starts a container just to print this; here the
// line comes from the runner, which saves one container per job (the shell is tried by step_script).
func (r *run) prepareScript(context.Context) error {
	host := r.b.SystemID
	if host == "" {
		host = "fleetrunner"
	}
	r.log.Infof("Running on %s via %s...", r.opts.EngineName, host)
	return nil
}

// buildStages are the stages a graceful cancel interrupts: get_sources to step_script.
func (r *run) buildStages(ctx context.Context) error {
	if err := r.getSources(ctx); err != nil {
		return err
	}
	if err := r.restoreCache(ctx); err != nil {
		return err
	}
	if err := r.downloadArtifacts(ctx); err != nil {
		return err
	}
	if err := r.chownWorkdir(ctx); err != nil {
		return err
	}
	return r.stepScript(ctx)
}

func (r *run) stepScript(ctx context.Context) error {
	var commands []string
	commands = append(commands, configScript(r.rc.PreBuildScript)...)
	if s := r.j.StepByName(job.StepScript); s != nil {
		commands = append(commands, s.Script...)
	}
	commands = append(commands, configScript(r.rc.PostBuildScript)...)
	if d, ok, err := durationVar(r.vars, "RUNNER_SCRIPT_TIMEOUT"); err != nil {
		r.log.Warnf("%v; ignoring it", err)
	} else if ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d, errScriptTimeout)
		defer cancel()
	}
	return r.section("step_script", `Executing "step_script" stage of the job script`, func() error {
		err := r.shellStage(ctx, "script", scriptOptions{dir: r.projectDir, commands: commands, trace: true})
		if errors.Is(context.Cause(ctx), errScriptTimeout) {
			return fmt.Errorf("step_script: %w", errScriptTimeout)
		}
		return err
	})
}

func durationVar(vs job.Variables, key string) (time.Duration, bool, error) {
	v := vs.Get(key)
	if v == "" {
		return 0, false, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, false, fmt.Errorf("%s=%q is not a positive duration (e.g. 10m)", key, v)
	}
	return d, true, nil
}

// afterScript runs after_script in its own shell with its own timeout; its failure only warns.
func (r *run) afterScript(ctx context.Context, status string) {
	s := r.j.StepByName(job.StepAfterScript)
	if s == nil || len(s.Script) == 0 {
		return
	}
	timeout := DefaultAfterScriptTimeout
	if d, ok, err := durationVar(r.vars, "RUNNER_AFTER_SCRIPT_TIMEOUT"); err != nil {
		r.log.Warnf("%v; ignoring it", err)
	} else if ok {
		timeout = d
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_ = r.section("after_script", "Running after_script", func() error {
		code, err := r.shell(ctx, "after-script", scriptOptions{dir: r.projectDir, commands: s.Script, trace: true,
			extra: job.Variables{{Key: "CI_JOB_STATUS", Value: status, Public: true}}})
		switch {
		case ctx.Err() == context.DeadlineExceeded:
			r.log.Warnf("after_script timed out after %s", timeout)
		case err != nil:
			r.log.Warnf("after_script failed: %v", err)
		case code != 0:
			r.log.Warnf("after_script failed with exit code %d", code)
		}
		return nil
	})
}

// cleanupFileVariables removes the file variables' directory (the build volume goes at cleanup too,
// but a volume kept by the operator's engine settings must not keep secrets).
func (r *run) cleanupFileVariables(ctx context.Context) {
	if !r.hasFileVariables() {
		return
	}
	_ = r.section("cleanup_file_variables", "Cleaning up project directory and file based variables", func() error {
		spec := r.buildSpec("cleanup", "rm -rf "+quote(r.tmpDir)+"\n")
		if code, err := r.runContainer(ctx, spec); err != nil || code != 0 {
			r.log.Warnf("Could not remove file variables from %s", r.tmpDir)
		}
		return nil
	})
}
