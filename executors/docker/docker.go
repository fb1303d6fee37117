// Package docker runs one GitLab job in containers on a Docker Engine reached through any API client:
// the local socket for executor "docker", or an SSH tunnel that the docker-autoscaler executor hands in.
// Nothing here assumes the engine is local: images, volumes and networks are made through the API, and
// git, cache and artifact work runs in a helper container on the same engine.
//
// One job is a sequence of stages (upstream's names, each a trace section): prepare_executor,
// prepare_script, get_sources, restore_cache, download_artifacts, step_script, after_script,
// archive_cache / archive_cache_on_failure, upload_artifacts_on_success / _on_failure,
// cleanup_file_variables; then a cleanup that always runs with a fresh context.
package docker

import (
	"context"
	"time"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helperimage"
)

// Labels put on every container, network and volume a job creates, so leftovers can be found by job.
const (
	LabelManaged   = "fleetrunner.managed" // always "true"
	LabelBuild     = "fleetrunner.build"   // unique per RunJob call
	LabelJobID     = "fleetrunner.job.id"
	LabelProjectID = "fleetrunner.project.id"
	LabelRunner    = "fleetrunner.runner" // runner short token
	LabelRole      = "fleetrunner.role"   // build, helper, service, probe, network, volume, cache
	// LabelSystemID is the system_id of the runner manager that ran the job: several managers may share
	// a runner token and an engine, and each removes only its own leftovers.
	LabelSystemID = "fleetrunner.system_id"
)

// CleanupTimeout bounds the removal of a job's containers, networks and volumes. Cleanup runs on a
// context of its own (never the job's, which may be cancelled or timed out: gitlab-runner#38725).
const CleanupTimeout = 2 * time.Minute

// DefaultAfterScriptTimeout is after_script's own timeout when RUNNER_AFTER_SCRIPT_TIMEOUT is unset.
const DefaultAfterScriptTimeout = 5 * time.Minute

// killTimeout bounds killing one container after its stage was cancelled.
const killTimeout = 15 * time.Second

// HelperImageFunc makes sure the helper image exists on the engine and returns its reference.
type HelperImageFunc func(ctx context.Context, cli client.APIClient, log logrus.FieldLogger) (string, error)

// Options tune how a job runs.
type Options struct {
	// HelperImage defaults to helperimage.Ensure.
	HelperImage HelperImageFunc
	// EngineName says which engine runs the job ("local", an instance ID), for the job log.
	EngineName string
}

// Executor runs jobs on the engine Client talks to. It is safe for concurrent jobs.
type Executor struct {
	Client  client.APIClient
	Options Options
}

// RunJob runs every stage of b on the engine cli talks to. A nil error means success; a *job.BuildError
// carries the failure reason and exit code; any other error is a runner_system_failure. Cancelling ctx
// aborts at once (no after_script), and a *executors.TimeoutError cause makes it a job timeout; the end
// of b.Canceling stops the script gracefully. RunJob sets no deadline of its own. All containers,
// networks and volumes of the job are gone when RunJob returns (cache volumes are kept on purpose).
func RunJob(ctx context.Context, cli client.APIClient, b *executors.Build, opts Options) error {
	return (&Executor{Client: cli, Options: opts}).Run(ctx, b)
}

// Run implements RunJob for e.Client.
func (e *Executor) Run(ctx context.Context, b *executors.Build) error {
	opts := e.Options
	if opts.HelperImage == nil {
		opts.HelperImage = helperimage.Ensure
	}
	if opts.EngineName == "" {
		opts.EngineName = "docker"
	}
	r, err := newRun(e.Client, b, opts)
	if err != nil {
		return err
	}
	// Marked before anything is created and unmarked once cleanup returned: RemoveLeftovers relies on it.
	defer track(r.uid)()
	return r.execute(ctx)
}
