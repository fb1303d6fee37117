package docker

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/workdir"
)

// isRoot tells whether a container user ("", "root", "0", "0:0", "root:wheel", …) is root.
func isRoot(user string) bool {
	name, _, _ := strings.Cut(user, ":")
	return name == "" || name == "0" || name == "root"
}

var numericOwner = regexp.MustCompile(`^[0-9]+:[0-9]+$`)

// openWorkdir runs before get_sources under umask 0000: it makes the project and file-variable
// directories world-writable, which a non-root script could not create in the root-owned build volume.
func (r *run) openWorkdir(ctx context.Context) error {
	if !r.umask || isRoot(r.scriptUser) {
		return nil
	}
	return r.helper(ctx, "workdir", []string{"workdir", "--base", r.buildsDir, "--dir", r.projectDir, "--dir", r.tmpDir}, "")
}

// chownWorkdir runs before step_script with FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR: with no umask 0000,
// the project (sources, cache, artifacts) and file-variable directories are given to the script's user.
func (r *run) chownWorkdir(ctx context.Context) error {
	if r.umask || isRoot(r.scriptUser) {
		return nil
	}
	owner, err := r.scriptOwner(ctx)
	if err != nil {
		return err
	}
	return r.helper(ctx, "workdir", []string{"workdir", "--base", r.buildsDir, "--dir", r.projectDir, "--dir", r.tmpDir, "--owner", owner}, "")
}

// scriptOwner is the script user's numeric uid:gid: as configured when numeric, else what `id` says in
// the job image (upstream asks the image the same way).
func (r *run) scriptOwner(ctx context.Context) (string, error) {
	if numericOwner.MatchString(r.scriptUser) {
		return r.scriptUser, nil
	}
	var out bytes.Buffer
	spec := r.buildSpec("id", "id -u\nid -g\n")
	spec.output = &out
	code, err := r.runContainer(ctx, spec)
	if err != nil {
		return "", err
	}
	fields := strings.Fields(out.String())
	owner := strings.Join(fields, ":")
	if code != 0 || len(fields) != 2 {
		return "", &job.BuildError{Reason: job.ScriptFailure, Err: fmt.Errorf(
			"FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR needs `id -u` and `id -g` in the job image to find user %q's uid and gid; they gave %q (exit code %d)",
			r.scriptUser, strings.TrimSpace(out.String()), code)}
	}
	if _, err := workdir.ParseOwner(owner); err != nil {
		return "", &job.BuildError{Reason: job.ScriptFailure, Err: fmt.Errorf("user %q in the job image: %w", r.scriptUser, err)}
	}
	return owner, nil
}
