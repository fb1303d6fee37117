// Package job holds the job payload GitLab hands a runner, its variables and the failure reasons a
// runner may report. Decoding is lenient: unknown keys and nulls are accepted, `user` may be a string
// or a number, so a newer GitLab does not break an older runner.
package job

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Job is the payload of a 201 answer to POST /api/v4/jobs/request.
type Job struct {
	ID            int64        `json:"id"`
	Token         string       `json:"token"`
	AllowGitFetch bool         `json:"allow_git_fetch"`
	JobInfo       JobInfo      `json:"job_info"`
	GitInfo       GitInfo      `json:"git_info"`
	RunnerInfo    RunnerInfo   `json:"runner_info"`
	Variables     Variables    `json:"variables"`
	Steps         []Step       `json:"steps"`
	Hooks         []Hook       `json:"hooks"`
	Image         Image        `json:"image"`
	Services      []Image      `json:"services"`
	Artifacts     []Artifact   `json:"artifacts"`
	Cache         []Cache      `json:"cache"`
	Credentials   []Credential `json:"credentials"`
	Dependencies  []Dependency `json:"dependencies"`
	Features      Features     `json:"features"`
	// Run carries step-runner steps as a JSON string for `run:` jobs; fleetrunner does not run them.
	Run string `json:"run,omitempty"`
}

// JobInfo describes the job and its project.
type JobInfo struct {
	ID              int64   `json:"id"`
	Name            string  `json:"name"`
	Stage           string  `json:"stage"`
	ProjectID       int64   `json:"project_id"`
	ProjectName     string  `json:"project_name"`
	TimeInQueueSecs float64 `json:"time_in_queue_seconds"`
	// ProjectJobsRunningOnInstanceRunners is a number, "N+" or "+Inf" (for runners that are not instance
	// runners); [runners.monitoring] job_queuing_durations match it with jobs_running_for_project.
	ProjectJobsRunningOnInstanceRunners string `json:"project_jobs_running_on_instance_runners_count,omitempty"`
	ProjectFullPath                     string `json:"project_full_path,omitempty"`
}

// GitInfo says what to clone.
type GitInfo struct {
	RepoURL          string   `json:"repo_url"`
	RepoObjectFormat string   `json:"repo_object_format,omitempty"`
	Ref              string   `json:"ref"`
	Sha              string   `json:"sha"`
	BeforeSha        string   `json:"before_sha"`
	RefType          string   `json:"ref_type"`
	Refspecs         []string `json:"refspecs"`
	Depth            int      `json:"depth"`
	Protected        *bool    `json:"protected,omitempty"`
}

// RunnerInfo carries the job timeout in seconds.
type RunnerInfo struct {
	Timeout          int     `json:"timeout"`
	RunnerSessionURL *string `json:"runner_session_url,omitempty"`
}

// Step is one of `script`, `after_script` or `release`.
type Step struct {
	Name         string     `json:"name"`
	Script       StringList `json:"script"`
	Timeout      int        `json:"timeout"`
	When         string     `json:"when"`
	AllowFailure bool       `json:"allow_failure"`
}

// Step names and conditions used by GitLab.
const (
	StepScript      = "script"
	StepAfterScript = "after_script"
	StepRelease     = "release"

	WhenOnSuccess = "on_success"
	WhenOnFailure = "on_failure"
	WhenAlways    = "always"
)

// Hook is pre_get_sources_script or post_get_sources_script from the job definition.
type Hook struct {
	Name   string     `json:"name"`
	Script StringList `json:"script"`
}

// Image is the job image or one service.
type Image struct {
	Name         string        `json:"name"`
	Alias        string        `json:"alias,omitempty"`
	Entrypoint   []string      `json:"entrypoint,omitempty"`
	Command      []string      `json:"command,omitempty"`
	Ports        []Port        `json:"ports,omitempty"`
	Variables    Variables     `json:"variables,omitempty"`
	PullPolicy   []string      `json:"pull_policy,omitempty"`
	ExecutorOpts *ExecutorOpts `json:"executor_opts,omitempty"`
}

// Port is an exposed port of an image.
type Port struct {
	Number   int    `json:"number"`
	Protocol string `json:"protocol,omitempty"`
	Name     string `json:"name,omitempty"`
}

// ExecutorOpts are per-image executor options.
type ExecutorOpts struct {
	Docker DockerOpts `json:"docker"`
}

// DockerOpts are the docker executor's per-image options.
type DockerOpts struct {
	Platform string      `json:"platform,omitempty"`
	User     StringOrInt `json:"user,omitempty"`
}

// Artifact is one artifact archive (the first) or report to upload.
type Artifact struct {
	Name           string   `json:"name"`
	Untracked      bool     `json:"untracked"`
	Paths          []string `json:"paths"`
	Exclude        []string `json:"exclude,omitempty"`
	When           string   `json:"when"`
	ExpireIn       string   `json:"expire_in"`
	ArtifactType   string   `json:"artifact_type"`
	ArtifactFormat string   `json:"artifact_format"`
}

// Cache is one cache entry.
type Cache struct {
	Key          string   `json:"key"`
	Untracked    bool     `json:"untracked"`
	Policy       string   `json:"policy"`
	Paths        []string `json:"paths"`
	When         string   `json:"when"`
	FallbackKeys []string `json:"fallback_keys,omitempty"`
}

// Cache policies.
const (
	CachePolicyPullPush = "pull-push"
	CachePolicyPull     = "pull"
	CachePolicyPush     = "push"
)

// Credential is a registry login.
type Credential struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// Dependency is a job whose artifacts this job downloads.
type Dependency struct {
	ID            int64          `json:"id"`
	Name          string         `json:"name"`
	Token         string         `json:"token"`
	ArtifactsFile *ArtifactsFile `json:"artifacts_file,omitempty"`
}

// ArtifactsFile describes a dependency's archive.
type ArtifactsFile struct {
	Filename string `json:"filename"`
	Size     int64  `json:"size"`
}

// Features are what GitLab tells the runner about itself.
type Features struct {
	TraceSections     bool     `json:"trace_sections"`
	FailureReasons    []string `json:"failure_reasons"`
	TokenMaskPrefixes []string `json:"token_mask_prefixes,omitempty"`
}

// Decode parses a job payload. The error names the job ID when it could be read, so a malformed
// payload can be failed by ID instead of being lost.
func Decode(data []byte) (*Job, error) {
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		var head struct {
			ID    int64  `json:"id"`
			Token string `json:"token"`
		}
		_ = json.Unmarshal(data, &head)
		return &Job{ID: head.ID, Token: head.Token}, fmt.Errorf("malformed job payload (job %d): %w", head.ID, err)
	}
	if j.JobInfo.ID == 0 {
		j.JobInfo.ID = j.ID
	}
	return &j, nil
}

// StepByName returns the named step, or nil.
func (j *Job) StepByName(name string) *Step {
	for i := range j.Steps {
		if j.Steps[i].Name == name {
			return &j.Steps[i]
		}
	}
	return nil
}

// StringOrInt accepts `"1000"` or `1000` (GitLab sends the docker user either way).
type StringOrInt string

// UnmarshalJSON implements json.Unmarshaler.
func (s *StringOrInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*s = ""
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = StringOrInt(v)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("user must be a string or a number: %w", err)
	}
	*s = StringOrInt(n.String())
	return nil
}

// StringList accepts an array of strings or a single string (older payloads), and null.
type StringList []string

// UnmarshalJSON implements json.Unmarshaler.
func (l *StringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*l = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*l = StringList{v}
		return nil
	}
	var v []string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*l = v
	return nil
}

// Timeout returns the job timeout in seconds, with upstream's default of two hours when GitLab sent none.
func (j *Job) TimeoutSeconds() int {
	if j.RunnerInfo.Timeout <= 0 {
		return DefaultTimeoutSeconds
	}
	return j.RunnerInfo.Timeout
}

// DefaultTimeoutSeconds is the job timeout when GitLab sends none.
const DefaultTimeoutSeconds = 7200
