package docker

import (
	"slices"
	"testing"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// planRun builds a run for j on a runner with dc, without touching an engine (newRun only plans), to
// see what the runner's settings and the job make of it.
func planRun(t *testing.T, rc *config.RunnerConfig, j *job.Job) *run {
	t.Helper()
	if rc.Token == "" {
		rc.Token = "glrt-abcdefgh12345"
	}
	if rc.Docker == nil {
		rc.Docker = &config.DockerConfig{}
	}
	if j.Image.Name == "" && rc.Docker.Image == "" {
		j.Image.Name = "busybox:latest"
	}
	if j.RunnerInfo.Timeout == 0 {
		j.RunnerInfo.Timeout = 600
	}
	r, err := newRun(nil, &executors.Build{Job: j, Runner: rc, Log: &nopLog{}, Logger: logrus.New()}, Options{})
	if err != nil {
		t.Fatalf("newRun: %v", err)
	}
	return r
}

// TestAllowedPrivilegedImages: privileged = true applies only to images matching
// allowed_privileged_images (and services to allowed_privileged_services) when those lists are set.
func TestAllowedPrivilegedImages(t *testing.T) {
	tests := []struct {
		name           string
		dc             config.DockerConfig
		image, service string
		wantBuild      bool
		wantService    bool
	}{
		{name: "no lists", dc: config.DockerConfig{Privileged: true}, image: "docker:27", service: "docker:27-dind", wantBuild: true, wantService: true},
		{name: "allowed", dc: config.DockerConfig{Privileged: true, AllowedPrivilegedImages: []string{"docker:*"}, AllowedPrivilegedServices: []string{"docker:*-dind"}},
			image: "docker:27", service: "docker:27-dind", wantBuild: true, wantService: true},
		{name: "not allowed", dc: config.DockerConfig{Privileged: true, AllowedPrivilegedImages: []string{"docker:*"}, AllowedPrivilegedServices: []string{"docker:*-dind"}},
			image: "alpine:3", service: "postgres:16", wantBuild: false, wantService: false},
		{name: "not privileged at all", dc: config.DockerConfig{AllowedPrivilegedImages: []string{"*"}}, image: "alpine:3", service: "postgres:16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dc := tt.dc
			r := planRun(t, &config.RunnerConfig{Docker: &dc}, &job.Job{Image: job.Image{Name: tt.image}, Services: []job.Image{{Name: tt.service}}})
			if got := r.buildSpec("script", "").host.Privileged; got != tt.wantBuild {
				t.Errorf("build container privileged = %v, want %v", got, tt.wantBuild)
			}
			hc, err := serviceHostConfig(r.dc, r.services[0].name)
			if err != nil {
				t.Fatal(err)
			}
			if hc.Privileged != tt.wantService {
				t.Errorf("service container privileged = %v, want %v", hc.Privileged, tt.wantService)
			}
		})
	}
}

// TestServiceEntrypointOverwriteDisabled: disable_entrypoint_overwrite applies to services as well as
// to the job image, as upstream.
func TestServiceEntrypointOverwriteDisabled(t *testing.T) {
	j := func() *job.Job {
		return &job.Job{Image: job.Image{Name: "alpine:3", Entrypoint: []string{"/bin/sh"}},
			Services: []job.Image{{Name: "postgres:16", Entrypoint: []string{"/evil"}}}}
	}
	r := planRun(t, &config.RunnerConfig{Docker: &config.DockerConfig{DisableEntrypointOverwrite: true}}, j())
	if r.image.entrypoint != nil || r.services[0].entrypoint != nil {
		t.Errorf("entrypoints kept with disable_entrypoint_overwrite: image %v, service %v", r.image.entrypoint, r.services[0].entrypoint)
	}
	r = planRun(t, &config.RunnerConfig{}, j())
	if !slices.Equal(r.services[0].entrypoint, []string{"/evil"}) {
		t.Errorf("service entrypoint = %v, want the job's", r.services[0].entrypoint)
	}
}

// TestGetSourcesScripts: pre_clone_script and post_clone_script are upstream's deprecated names of
// pre_get_sources_script and post_get_sources_script: the old name runs only when the new one is unset,
// never both. The runner's script comes before the job's pre hook and after its post hook.
func TestGetSourcesScripts(t *testing.T) {
	hooks := []job.Hook{{Name: "pre_get_sources_script", Script: []string{"job-pre"}}, {Name: "post_get_sources_script", Script: []string{"job-post"}}}
	tests := []struct {
		name      string
		rc        config.RunnerConfig
		pre, post []string
	}{
		{name: "none"},
		{name: "new names", rc: config.RunnerConfig{PreGetSourcesScript: "new-pre", PostGetSourcesScript: "new-post"},
			pre: []string{"new-pre"}, post: []string{"new-post"}},
		{name: "deprecated names alone", rc: config.RunnerConfig{PreCloneScript: "old-pre", PostCloneScript: "old-post"},
			pre: []string{"old-pre"}, post: []string{"old-post"}},
		{name: "both: the new name wins", rc: config.RunnerConfig{PreGetSourcesScript: "new-pre", PreCloneScript: "old-pre",
			PostGetSourcesScript: "new-post", PostCloneScript: "old-post"}, pre: []string{"new-pre"}, post: []string{"new-post"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pre, post := planRun(t, &tt.rc, &job.Job{}).getSourcesScripts()
			if !slices.Equal(pre, tt.pre) || !slices.Equal(post, tt.post) {
				t.Errorf("without job hooks: pre %q post %q; want %q %q", pre, post, tt.pre, tt.post)
			}
			pre, post = planRun(t, &tt.rc, &job.Job{Hooks: hooks}).getSourcesScripts()
			if want := append(slices.Clone(tt.pre), "job-pre"); !slices.Equal(pre, want) {
				t.Errorf("with job hooks: pre %q; want %q", pre, want)
			}
			if want := append([]string{"job-post"}, tt.post...); !slices.Equal(post, want) {
				t.Errorf("with job hooks: post %q; want %q", post, want)
			}
		})
	}
}
