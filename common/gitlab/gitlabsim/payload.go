package gitlabsim

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// serverFailureReasons is the CE enum of failure reasons (spec §3.1), sent as features.failure_reasons
// and used to validate PUT /jobs/:id.
var serverFailureReasons = []string{
	"unknown_failure", "script_failure", "api_failure", "stuck_or_timeout_failure", "runner_system_failure",
	"missing_dependency_failure", "runner_unsupported", "stale_schedule", "job_execution_timeout",
	"archived_failure", "unmet_prerequisites", "scheduler_failure", "data_integrity_failure",
	"forward_deployment_failure", "user_blocked", "project_deleted", "ci_quota_exceeded",
	"pipeline_loop_detected", "no_matching_runner", "trace_size_exceeded", "builds_disabled",
	"environment_creation_failure", "deployment_rejected", "failed_outdated_deployment_job",
	"job_execution_server_timeout", "stuck_pending_with_matching_runners", "stuck_pending_no_matching_runners",
	"no_updates_running", "no_updates_canceling", "server_timeout_running", "server_timeout_canceling",
	"runner_configuration_error", "runner_external_dependency_failure", "runner_interrupted",
	"protected_environment_failure", "insufficient_bridge_permissions", "job_router_failure", "job_token_expired",
}

// tokenMaskPrefixes are the token prefixes GitLab asks runners to mask (at most 10 are honoured).
var tokenMaskPrefixes = []string{"glpat-", "glrt-", "glrtr-", "glcbt-", "gldt-", "glptt-", "glft-", "glimt-", "GR1348941"}

const (
	defaultJobTimeout = time.Hour
	zeroSHA           = "0000000000000000000000000000000000000000"
	simVersion        = "17.11.0"
)

// payloadLocked builds the 201 body of POST /jobs/request for j, now assigned to rn (spec §2).
func (s *Server) payloadLocked(j *jobRecord, rn *runner) *job.Job {
	p := j.pipeline
	proj := p.project
	spec := j.spec

	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = defaultJobTimeout
	}
	secs := int(timeout / time.Second)
	if rn.maximumTimeout > 0 && secs > rn.maximumTimeout {
		secs = rn.maximumTimeout
	}

	repoURL := s.cloneURL(proj.path, j.token)
	depth := spec.GitDepth
	if depth <= 0 {
		if v, ok := job.Variables(spec.Variables).Lookup("GIT_DEPTH"); ok {
			depth, _ = strconv.Atoi(v)
		}
	}

	out := &job.Job{
		ID:            j.id,
		Token:         j.token,
		AllowGitFetch: true,
		JobInfo: job.JobInfo{
			ID: j.id, Name: spec.Name, Stage: spec.Stage, ProjectID: proj.id, ProjectName: proj.name,
			TimeInQueueSecs: (time.Since(j.queuedAt) + spec.QueuedFor).Seconds(), ProjectFullPath: proj.path,
			ProjectJobsRunningOnInstanceRunners: spec.ProjectJobsRunning,
		},
		GitInfo: job.GitInfo{
			RepoURL: repoURL, RepoObjectFormat: "sha1", Ref: p.ref, Sha: p.sha, BeforeSha: zeroSHA,
			RefType: "branch", Refspecs: refspecs(p.id, p.ref, depth), Depth: depth,
		},
		RunnerInfo: job.RunnerInfo{Timeout: secs},
		Variables:  s.variablesLocked(j, rn, repoURL, secs),
		Steps: []job.Step{{
			Name: job.StepScript, Script: append(append([]string{}, spec.BeforeScript...), spec.Script...),
			Timeout: secs, When: job.WhenOnSuccess,
		}},
		Image:     job.Image{Name: spec.Image},
		Services:  spec.Services,
		Artifacts: normalizeArtifacts(spec.Artifacts),
		Cache:     normalizeCache(spec.Cache),
		Features: job.Features{
			TraceSections: true, FailureReasons: serverFailureReasons, TokenMaskPrefixes: tokenMaskPrefixes,
		},
		Dependencies: s.dependenciesLocked(j),
	}
	if len(spec.AfterScript) > 0 {
		out.Steps = append(out.Steps, job.Step{
			Name: job.StepAfterScript, Script: spec.AfterScript, Timeout: secs, When: job.WhenAlways, AllowFailure: true,
		})
	}
	protected := true
	out.GitInfo.Protected = &protected
	return out
}

// cloneURL is the project's HTTP clone URL; with a token it carries gitlab-ci-token credentials.
func (s *Server) cloneURL(path, token string) string {
	u, _ := url.Parse(s.url + "/" + path + ".git")
	if token != "" {
		u.User = url.UserPassword("gitlab-ci-token", token)
	}
	return u.String()
}

// refspecs follow spec §2.1: the pipeline ref always, then the branch alone (shallow) or everything.
func refspecs(pipelineID int64, ref string, depth int) []string {
	pid := strconv.FormatInt(pipelineID, 10)
	out := []string{"+refs/pipelines/" + pid + ":refs/pipelines/" + pid}
	if depth > 0 {
		return append(out, "+refs/heads/"+ref+":refs/remotes/origin/"+ref)
	}
	return append(out, "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
}

// variablesLocked lists predefined variables, then the job's own with $VAR references expanded the way
// GitLab does server-side (unknown references and file/raw variables left as written).
func (s *Server) variablesLocked(j *jobRecord, rn *runner, repoURL string, timeoutSecs int) job.Variables {
	p := j.pipeline
	proj := p.project
	su, _ := url.Parse(s.url)
	pub := func(k, v string) job.Variable { return job.Variable{Key: k, Value: v, Public: true} }
	shortSHA := p.sha
	if len(shortSHA) > 8 {
		shortSHA = shortSHA[:8]
	}
	namespace, _, _ := strings.Cut(proj.path, "/")
	projectURL := s.url + "/" + proj.path
	jobID := strconv.FormatInt(j.id, 10)
	pipelineID := strconv.FormatInt(p.id, 10)
	vs := job.Variables{
		pub("CI", "true"),
		pub("GITLAB_CI", "true"),
		pub("CI_SERVER", "yes"),
		pub("CI_SERVER_NAME", "GitLab"),
		pub("CI_SERVER_VERSION", simVersion),
		pub("CI_SERVER_URL", s.url),
		pub("CI_SERVER_HOST", su.Hostname()),
		pub("CI_SERVER_PORT", su.Port()),
		pub("CI_SERVER_PROTOCOL", su.Scheme),
		pub("CI_API_V4_URL", s.url+"/api/v4"),
		pub("CI_JOB_ID", jobID),
		pub("CI_JOB_URL", projectURL+"/-/jobs/"+jobID),
		{Key: "CI_JOB_TOKEN", Value: j.token, Masked: true},
		pub("CI_JOB_NAME", j.spec.Name),
		pub("CI_JOB_NAME_SLUG", slug(j.spec.Name)),
		pub("CI_JOB_STAGE", j.spec.Stage),
		pub("CI_JOB_TIMEOUT", strconv.Itoa(timeoutSecs)),
		pub("CI_NODE_TOTAL", "1"),
		pub("CI_PIPELINE_ID", pipelineID),
		pub("CI_PIPELINE_IID", strconv.FormatInt(p.id-500, 10)),
		pub("CI_PIPELINE_SOURCE", "push"),
		pub("CI_PIPELINE_URL", projectURL+"/-/pipelines/"+pipelineID),
		pub("CI_PROJECT_ID", strconv.FormatInt(proj.id, 10)),
		pub("CI_PROJECT_NAME", proj.name),
		pub("CI_PROJECT_TITLE", proj.name),
		pub("CI_PROJECT_PATH", proj.path),
		pub("CI_PROJECT_PATH_SLUG", slug(proj.path)),
		pub("CI_PROJECT_NAMESPACE", namespace),
		pub("CI_PROJECT_ROOT_NAMESPACE", namespace),
		pub("CI_PROJECT_URL", projectURL),
		pub("CI_PROJECT_VISIBILITY", "private"),
		pub("CI_DEFAULT_BRANCH", defaultBranch),
		{Key: "CI_REPOSITORY_URL", Value: repoURL},
		pub("CI_COMMIT_SHA", p.sha),
		pub("CI_COMMIT_SHORT_SHA", shortSHA),
		pub("CI_COMMIT_BEFORE_SHA", zeroSHA),
		pub("CI_COMMIT_REF_NAME", p.ref),
		pub("CI_COMMIT_REF_SLUG", slug(p.ref)),
		pub("CI_COMMIT_BRANCH", p.ref),
		pub("CI_COMMIT_REF_PROTECTED", "true"),
		pub("CI_COMMIT_MESSAGE", commitMessage),
		pub("CI_COMMIT_TITLE", commitMessage),
		pub("CI_RUNNER_ID", strconv.FormatInt(rn.id, 10)),
		pub("CI_RUNNER_DESCRIPTION", rn.description),
		pub("CI_RUNNER_TAGS", "[]"),
		pub("GITLAB_USER_ID", "1"),
		pub("GITLAB_USER_LOGIN", "root"),
		pub("GITLAB_USER_EMAIL", "admin@example.com"),
		pub("GITLAB_USER_NAME", "Administrator"),
	}
	if !proj.hasRepo() && j.spec.GitStrategy == "" {
		if _, ok := job.Variables(j.spec.Variables).Lookup("GIT_STRATEGY"); !ok {
			vs = append(vs, pub("GIT_STRATEGY", "none"))
		}
	}
	if j.spec.GitStrategy != "" {
		vs = append(vs, pub("GIT_STRATEGY", j.spec.GitStrategy))
	}
	if j.spec.GitDepth > 0 {
		vs = append(vs, pub("GIT_DEPTH", strconv.Itoa(j.spec.GitDepth)))
	}
	for _, v := range j.spec.Variables {
		if !v.Raw && !v.File {
			v.Value = expandKnown(v.Value, vs)
		}
		vs = append(vs, v)
	}
	return vs
}

var varRef = regexp.MustCompile(`\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))`)

// expandKnown replaces $VAR and ${VAR} with the values of known plain variables; unknown references,
// references to file or raw variables and $$ stay as written.
func expandKnown(s string, vs job.Variables) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		sub := varRef.FindStringSubmatch(m)
		name := sub[2] + sub[3]
		if name == "" {
			return m
		}
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].Key == name {
				if vs[i].File || vs[i].Raw {
					return m
				}
				return vs[i].Value
			}
		}
		return m
	})
}

var slugInvalid = regexp.MustCompile(`[^a-z0-9]+`)

// slug is GitLab's CI_*_SLUG: lowercase, non-alphanumerics to '-', at most 63 bytes, no edge dashes.
func slug(s string) string {
	v := slugInvalid.ReplaceAllString(strings.ToLower(s), "-")
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Trim(v, "-")
}

// normalizeArtifacts fills GitLab's defaults: archive/zip, when on_success.
func normalizeArtifacts(in []job.Artifact) []job.Artifact {
	out := make([]job.Artifact, 0, len(in))
	for _, a := range in {
		if a.ArtifactType == "" {
			a.ArtifactType = "archive"
		}
		if a.ArtifactFormat == "" {
			a.ArtifactFormat = "zip"
		}
		if a.When == "" {
			a.When = job.WhenOnSuccess
		}
		out = append(out, a)
	}
	return out
}

// normalizeCache fills GitLab's defaults: key "default", pull-push, on_success.
func normalizeCache(in []job.Cache) []job.Cache {
	out := make([]job.Cache, 0, len(in))
	for _, c := range in {
		if c.Key == "" {
			c.Key = "default"
		}
		if c.Policy == "" {
			c.Policy = job.CachePolicyPullPush
		}
		if c.When == "" {
			c.When = job.WhenOnSuccess
		}
		out = append(out, c)
	}
	return out
}

// dependenciesLocked lists the jobs whose artifacts j downloads, each with j's own token (newer GitLab)
// and artifacts_file when the dependency stored an archive.
func (s *Server) dependenciesLocked(j *jobRecord) []job.Dependency {
	var deps []*jobRecord
	p := j.pipeline
	switch {
	case p.single:
		for _, name := range j.spec.Dependencies {
			if d := s.latestJobLocked(name, j.id); d != nil {
				deps = append(deps, d)
			}
		}
	case j.spec.Dependencies == nil:
		for _, d := range p.jobs {
			if p.stageIndex(d.spec.Stage) < p.stageIndex(j.spec.Stage) {
				deps = append(deps, d)
			}
		}
	default:
		for _, name := range j.spec.Dependencies {
			if d := p.jobByName(name); d != nil {
				deps = append(deps, d)
			}
		}
	}
	out := make([]job.Dependency, 0, len(deps))
	for _, d := range deps {
		dep := job.Dependency{ID: d.id, Name: d.spec.Name, Token: j.token}
		if a := d.archive(); a != nil {
			dep.ArtifactsFile = &job.ArtifactsFile{Filename: a.Filename, Size: int64(len(a.Data))}
		}
		out = append(out, dep)
	}
	return out
}

// latestJobLocked is the newest job named name other than self.
func (s *Server) latestJobLocked(name string, self int64) *jobRecord {
	for i := len(s.jobOrder) - 1; i >= 0; i-- {
		if j := s.jobs[s.jobOrder[i]]; j.id != self && j.spec.Name == name {
			return j
		}
	}
	return nil
}
