package docker

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/workdir"
)

// helperEnvAllowed says which job variables reach the helper container: git and transfer settings and
// proxies, never secrets (the helper reads the job token from its stdin).
func helperEnvAllowed(v job.Variable) bool {
	if v.Masked || v.File || !varName.MatchString(v.Key) {
		return false
	}
	k := strings.ToUpper(v.Key)
	switch k {
	case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ARTIFACT_COMPRESSION_LEVEL", "CACHE_COMPRESSION_LEVEL", "TRANSFER_METER_FREQUENCY":
		return true
	}
	return strings.HasPrefix(k, "GIT_") || strings.HasPrefix(k, "FF_")
}

// helper runs one fleetrunner-helper subcommand in a helper container sharing the build volume. A
// token is handed over on stdin ("--token -"): a container's command line and environment can be read
// by anyone allowed to inspect containers on the engine.
func (r *run) helper(ctx context.Context, stage string, args []string, token string) error {
	stdin := ""
	if token != "" {
		args = append(args, "--token", "-")
		stdin = token + "\n"
	}
	return r.helperStdin(ctx, stage, args, stdin)
}

// helperStdin runs a helper subcommand with stdin written to it: secrets (a token, presigned URLs)
// travel this way, never on the command line or in the environment.
func (r *run) helperStdin(ctx context.Context, stage string, args []string, stdin string) error {
	var env []string
	if r.umask {
		env = append(env, workdir.UmaskEnv+"=0000")
	}
	for _, v := range r.vars {
		if helperEnvAllowed(v) {
			env = append(env, v.Key+"="+v.Value)
		}
	}
	binds := []string{r.buildVolume + ":" + r.buildsDir}
	if r.cacheBind != "" {
		binds = append(binds, r.cacheBind)
	}
	hc := &container.HostConfig{
		Binds:       binds,
		NetworkMode: r.networkMode(),
		DNS:         r.dc.DNS,
		DNSSearch:   r.dc.DNSSearch,
		ExtraHosts:  r.dc.ExtraHosts,
		LogConfig:   logConfig(r.dc.LogOptions),
	}
	spec := containerSpec{role: "helper", stage: stage, host: hc, output: r.log, stdin: stdin}
	spec.config = &container.Config{Image: r.helperImage, Cmd: args, Env: env}
	code, err := r.runContainer(ctx, spec)
	if err != nil {
		return err
	}
	if code != 0 {
		return &job.BuildError{Reason: job.ScriptFailure, Err: fmt.Errorf("%s failed (helper exit code %d)", args[0], code)}
	}
	return nil
}

func (r *run) gitStrategy() string {
	switch s := r.vars.Get("GIT_STRATEGY"); s {
	case "clone", "fetch", "none", "empty":
		return s
	}
	if r.j.AllowGitFetch {
		return "fetch"
	}
	return "clone"
}

// gitCheckout reads GIT_CHECKOUT as upstream: strconv.ParseBool, on when unset or unparsable.
func (r *run) gitCheckout() bool {
	on, err := strconv.ParseBool(r.vars.Get("GIT_CHECKOUT"))
	return on || err != nil
}

// repoURL is git_info.repo_url, moved to [[runners]] clone_url's scheme and host when that is set.
func (r *run) repoURL() string {
	repo := r.j.GitInfo.RepoURL
	if r.rc.CloneURL == "" {
		return repo
	}
	u, err := url.Parse(repo)
	c, err2 := url.Parse(r.rc.CloneURL)
	if err != nil || err2 != nil {
		return repo
	}
	u.Scheme, u.Host = c.Scheme, c.Host
	u.Path = strings.TrimRight(c.Path, "/") + u.Path
	return u.String()
}

// splitPassword takes the password (the job token) out of a repository URL's user info.
func splitPassword(repo string) (string, string) {
	u, err := url.Parse(repo)
	if err != nil || u.User == nil {
		return repo, ""
	}
	pw, ok := u.User.Password()
	if !ok {
		return repo, ""
	}
	u.User = url.User(u.User.Username())
	return u.String(), pw
}

func (r *run) hookScript(name string) []string {
	for _, h := range r.j.Hooks {
		if h.Name == name {
			return h.Script
		}
	}
	return nil
}

// getSourcesScripts are the commands run before and after the checkout: the runner's
// pre_get_sources_script (or the deprecated pre_clone_script in its place) before the job's hook, and
// the job's post_get_sources_script hook before the runner's post_get_sources_script (or
// post_clone_script).
func (r *run) getSourcesScripts() (pre, post []string) {
	return slices.Concat(configScript(r.rc.GetPreGetSourcesScript()), r.hookScript("pre_get_sources_script")),
		slices.Concat(r.hookScript("post_get_sources_script"), configScript(r.rc.GetPostGetSourcesScript()))
}

func (r *run) getSources(ctx context.Context) error {
	pre, post := r.getSourcesScripts()
	strategy := r.gitStrategy()
	return r.section("get_sources", "Getting source from Git repository", func() error {
		if err := r.openWorkdir(ctx); err != nil {
			return err
		}
		if len(pre) > 0 {
			if err := r.shellStage(ctx, "pre-get-sources", scriptOptions{dir: r.buildsDir, commands: pre, trace: true}); err != nil {
				return err
			}
		}
		if strategy == "none" {
			r.log.Infof("Skipping Git repository setup (GIT_STRATEGY=none)")
		} else {
			gi := r.j.GitInfo
			refType := gi.RefType
			if refType == "" {
				refType = "branch"
			}
			depth := gi.Depth
			if d := r.vars.Get("GIT_DEPTH"); d != "" {
				if n, err := strconv.Atoi(d); err == nil {
					depth = n
				}
			}
			checkout := strconv.FormatBool(r.gitCheckout())
			submodules := r.vars.Get("GIT_SUBMODULE_STRATEGY")
			if submodules == "" {
				submodules = "none"
			}
			repo, token := splitPassword(r.repoURL())
			args := []string{"get-sources", "--dir", r.projectDir, "--repo-url", repo, "--sha", gi.Sha,
				"--ref", gi.Ref, "--ref-type", refType, "--depth", strconv.Itoa(depth), "--strategy", strategy,
				"--checkout=" + checkout, "--submodules", submodules}
			for _, rs := range gi.Refspecs {
				args = append(args, "--refspec", rs)
			}
			if err := r.helper(ctx, "get-sources", args, token); err != nil {
				return err
			}
		}
		if len(post) > 0 {
			return r.shellStage(ctx, "post-get-sources", scriptOptions{dir: r.projectDir, commands: post, trace: true})
		}
		return nil
	})
}

// dependencies are the dependency jobs that have an archive to download.
func (r *run) dependencies() []job.Dependency {
	var out []job.Dependency
	for _, d := range r.j.Dependencies {
		if d.ArtifactsFile != nil && d.ArtifactsFile.Filename != "" {
			out = append(out, d)
		}
	}
	return out
}

func (r *run) downloadArtifacts(ctx context.Context) error {
	deps := r.dependencies()
	if len(deps) == 0 {
		return nil
	}
	return r.section("download_artifacts", "Downloading artifacts", func() error {
		for _, d := range deps {
			r.log.Infof("Downloading artifacts for %s (%d)...", d.Name, d.ID)
			token := d.Token
			if token == "" {
				token = r.j.Token
			}
			if err := r.helper(ctx, "artifacts-download", []string{"artifacts-download", "--url", r.rc.URL,
				"--id", strconv.FormatInt(d.ID, 10), "--dir", r.projectDir}, token); err != nil {
				return err
			}
		}
		return nil
	})
}

// artifactPath checks that an artifacts path stays inside the project directory and returns it
// relative to it.
func (r *run) artifactPath(p string) (string, error) {
	p = r.vars.Expand(p)
	if path.IsAbs(p) {
		rel := strings.TrimPrefix(path.Clean(p), r.projectDir)
		if rel == path.Clean(p) || (rel != "" && rel[0] != '/') {
			return "", configErr("artifacts path %q is outside the project directory %s", p, r.projectDir)
		}
		p = strings.TrimPrefix(rel, "/")
		if p == "" {
			p = "."
		}
	}
	if c := path.Clean(p); c == ".." || strings.HasPrefix(c, "../") {
		return "", configErr("artifacts path %q is outside the project directory %s", p, r.projectDir)
	}
	return p, nil
}

func (r *run) checkArtifactPaths() error {
	for _, a := range r.j.Artifacts {
		for _, p := range a.Paths {
			if _, err := r.artifactPath(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *run) uploadArtifacts(ctx context.Context, succeeded bool) error {
	var selected []job.Artifact
	for _, a := range r.j.Artifacts {
		if (len(a.Paths) > 0 || a.Untracked) && cacheWhen(job.Cache{When: a.When}, succeeded) {
			selected = append(selected, a)
		}
	}
	if len(selected) == 0 {
		return nil
	}
	name, header := "upload_artifacts_on_success", "Uploading artifacts for successful job"
	if !succeeded {
		name, header = "upload_artifacts_on_failure", "Uploading artifacts for failed job"
	}
	return r.section(name, header, func() error {
		for _, a := range selected {
			typ, format := a.ArtifactType, a.ArtifactFormat
			if typ == "" {
				typ = "archive"
			}
			if format == "" {
				format = "zip"
			}
			artName := r.vars.Expand(a.Name)
			if artName == "" {
				artName = "artifacts"
			}
			args := []string{"artifacts-upload", "--url", r.rc.URL, "--id", strconv.FormatInt(r.j.ID, 10),
				"--dir", r.projectDir, "--name", artName, "--type", typ, "--format", format}
			if a.ExpireIn != "" {
				args = append(args, "--expire-in", a.ExpireIn)
			}
			for _, p := range a.Paths {
				rel, err := r.artifactPath(p)
				if err != nil {
					return err
				}
				args = append(args, "--path", rel)
			}
			for _, e := range a.Exclude {
				args = append(args, "--exclude", r.vars.Expand(e))
			}
			if a.Untracked {
				args = append(args, "--untracked")
			}
			r.log.Infof("Uploading artifacts (%s)...", typ)
			if err := r.helper(ctx, "artifacts-upload", args, r.j.Token); err != nil {
				return err
			}
		}
		return nil
	})
}
