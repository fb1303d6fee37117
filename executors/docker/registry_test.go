package docker_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/pkg/jsonmessage"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// fakeRegistry is a Docker registry (go-containerregistry's in-memory one) on loopback behind basic
// auth. The engine talks to it with its own registry client, as it would to a private registry; the
// engine treats 127.0.0.0/8 as an insecure registry, so plain HTTP is accepted.
type fakeRegistry struct {
	host       string // 127.0.0.1:PORT
	user, pass string
	// manifestReads counts authorised manifest requests: one or more per pull, none when the engine
	// uses its local copy.
	manifestReads atomic.Int64
}

func startRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	r := &fakeRegistry{user: "ci-puller", pass: "pw-" + hex.EncodeToString(b)}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="fleetrunner-test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		if strings.Contains(req.URL.Path, "/manifests/") && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
			r.manifestReads.Add(1)
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *fakeRegistry) auth() string {
	s, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: r.user, Password: r.pass, ServerAddress: r.host})
	if err != nil {
		panic(err)
	}
	return s
}

// push puts the rig's local image into the registry as repo:tag through the engine (docker push), then
// drops the local tag, so that a job can only get repo:tag by pulling it. It returns the reference.
func (r *fakeRegistry) push(t *testing.T, rg *rig, repo string) string {
	t.Helper()
	ctx := t.Context()
	ref := r.host + "/" + repo + ":1"
	if err := rg.cli.ImageTag(ctx, rg.image, ref); err != nil {
		t.Fatal(err)
	}
	rc, err := rg.cli.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: r.auth()})
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	err = jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
	_ = rc.Close()
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	untag(t, rg, ref)
	t.Cleanup(func() { untag(t, rg, ref) })
	return ref
}

// untag removes ref from the engine if it is there; the image's layers stay with the rig's own tag.
func untag(t *testing.T, rg *rig, ref string) {
	t.Helper()
	if _, err := rg.cli.ImageInspect(context.Background(), ref); err != nil {
		return
	}
	if _, err := rg.cli.ImageRemove(context.Background(), ref, image.RemoveOptions{}); err != nil {
		t.Errorf("untag %s: %v", ref, err)
	}
}

func dockerAuthConfig(host, user, pass string) string {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	return fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
}

// A job's image comes from a private registry with the credentials GitLab sends in the payload or with
// DOCKER_AUTH_CONFIG; without them, or with a wrong password, the job fails as image_pull_failure with
// one line. The password never reaches the job log.
func TestPullFromPrivateRegistry(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	reg := startRegistry(t)
	ref := reg.push(t, rg, "group/private")
	tests := []struct {
		name  string
		setup func(j *job.Job)
		ok    bool
	}{
		{name: "payload credentials", ok: true, setup: func(j *job.Job) {
			j.Credentials = []job.Credential{{Type: "registry", URL: reg.host, Username: reg.user, Password: reg.pass}}
		}},
		{name: "DOCKER_AUTH_CONFIG", ok: true, setup: func(j *job.Job) {
			j.Variables = append(j.Variables, job.Variable{Key: "DOCKER_AUTH_CONFIG", Value: dockerAuthConfig(reg.host, reg.user, reg.pass)})
		}},
		{name: "DOCKER_AUTH_CONFIG wins over payload credentials", ok: true, setup: func(j *job.Job) {
			j.Credentials = []job.Credential{{Type: "registry", URL: reg.host, Username: reg.user, Password: "wrong"}}
			j.Variables = append(j.Variables, job.Variable{Key: "DOCKER_AUTH_CONFIG", Value: dockerAuthConfig(reg.host, reg.user, reg.pass)})
		}},
		{name: "no credentials", setup: func(*job.Job) {}},
		{name: "wrong password", setup: func(j *job.Job) {
			j.Credentials = []job.Credential{{Type: "registry", URL: reg.host, Username: reg.user, Password: "wrong"}}
		}},
		{name: "credentials for another registry", setup: func(j *job.Job) {
			j.Credentials = []job.Credential{{Type: "registry", URL: "registry.example.test", Username: reg.user, Password: reg.pass}}
		}},
	}
	rg.runner.Docker.PullPolicy = []string{"always"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer untag(t, rg, ref)
			j := rg.newJob("echo pulled-and-ran")
			j.Image.Name = ref
			tt.setup(j)
			before := reg.manifestReads.Load()
			l, err := rg.run(t, j)
			if strings.Contains(l.String(), reg.pass) {
				t.Errorf("the registry password is in the job log:\n%s", l)
			}
			if tt.ok {
				if err != nil {
					t.Fatalf("job failed: %v\n%s", err, l)
				}
				if !strings.Contains(l.String(), "pulled-and-ran\n") {
					t.Fatalf("script output missing:\n%s", l)
				}
				if reg.manifestReads.Load() == before {
					t.Fatalf("the job ran without pulling %s from the registry", ref)
				}
				return
			}
			wantReason(t, err, job.ImagePullFailure, 0)
			if !strings.Contains(err.Error(), ref) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not one line naming %s", err, ref)
			}
		})
	}
}

// pull_policy against a real registry: always asks the registry on every job, if-not-present only
// when the engine lacks the image, never not at all.
func TestPullPolicyAgainstRegistry(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	reg := startRegistry(t)
	ref := reg.push(t, rg, "group/policy")
	runWith := func(policy string) int64 {
		t.Helper()
		j := rg.newJob("echo ran")
		j.Image = job.Image{Name: ref, PullPolicy: []string{policy}}
		j.Credentials = []job.Credential{{Type: "registry", URL: reg.host, Username: reg.user, Password: reg.pass}}
		before := reg.manifestReads.Load()
		if l, err := rg.run(t, j); err != nil {
			t.Fatalf("pull_policy %s: %v\n%s", policy, err, l)
		}
		return reg.manifestReads.Load() - before
	}
	rg.runner.Docker.AllowedPullPolicies = []string{"always", "if-not-present", "never"}
	defer untag(t, rg, ref)
	if n := runWith("if-not-present"); n == 0 {
		t.Errorf("if-not-present without the image locally did not pull")
	}
	if n := runWith("if-not-present"); n != 0 {
		t.Errorf("if-not-present with the image locally asked the registry %d times", n)
	}
	if n := runWith("never"); n != 0 {
		t.Errorf("never asked the registry %d times", n)
	}
	if n := runWith("always"); n == 0 {
		t.Errorf("always did not ask the registry")
	}
}

// The image's docker.platform reaches the pull: the engine's own platform runs, another one fails the
// job as image_pull_failure since the registry has no image for it.
func TestImagePlatform(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	reg := startRegistry(t)
	ref := reg.push(t, rg, "group/platform")
	local, err := rg.cli.ImageInspect(t.Context(), rg.image)
	if err != nil {
		t.Fatal(err)
	}
	native := local.Os + "/" + local.Architecture
	other := "linux/arm64"
	if local.Architecture == "arm64" {
		other = "linux/amd64"
	}
	rg.runner.Docker.PullPolicy = []string{"always"}
	for _, tc := range []struct {
		platform string
		ok       bool
	}{{native, true}, {other, false}} {
		t.Run(strings.ReplaceAll(tc.platform, "/", "-"), func(t *testing.T) {
			defer untag(t, rg, ref)
			j := rg.newJob("echo ran-on-platform")
			j.Image = job.Image{Name: ref, ExecutorOpts: &job.ExecutorOpts{Docker: job.DockerOpts{Platform: tc.platform}}}
			j.Credentials = []job.Credential{{Type: "registry", URL: reg.host, Username: reg.user, Password: reg.pass}}
			l, err := rg.run(t, j)
			if tc.ok {
				if err != nil || !strings.Contains(l.String(), "ran-on-platform\n") {
					t.Fatalf("platform %s: %v\n%s", tc.platform, err, l)
				}
				return
			}
			wantReason(t, err, job.ImagePullFailure, 0)
			if !strings.Contains(err.Error(), ref) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not one line naming %s", err, ref)
			}
		})
	}
}

// The user the job's script runs as: the runner's docker.user, overridden by the image's docker.user
// when allowed_users permits it. A non-root script can work in its project directory and read its file
// variables: by default everything is world-writable (umask 0000, as upstream), with
// FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR the directories are given to the user instead.
func TestScriptUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		runnerUser string
		imageUser  string
		noUmask    bool
		want       string // id -u:id -g
		wantOwner  string // owner of the project directory
		wantMode   string // of a file the script creates
	}{
		{name: "image default", want: "0:0", wantOwner: "0:0", wantMode: "666"},
		{name: "runner docker.user", runnerUser: "1000:1000", want: "1000:1000", wantOwner: "0:0", wantMode: "666"},
		{name: "image docker.user overrides", runnerUser: "1000:1000", imageUser: "2000:3000", want: "2000:3000", wantOwner: "0:0", wantMode: "666"},
		{name: "root without umask", noUmask: true, want: "0:0", wantOwner: "0:0", wantMode: "644"},
		{name: "non-root without umask owns its directory", runnerUser: "1000:1000", noUmask: true, want: "1000:1000", wantOwner: "1000:1000", wantMode: "644"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rg := newRig(t)
			rg.runner.Docker.User = tt.runnerUser
			if tt.noUmask {
				rg.runner.FeatureFlags = map[string]bool{"FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR": true}
			}
			j := rg.newJob(
				`echo "uid:gid=$(id -u):$(id -g)"`,
				`echo "owner=$(stat -c %u:%g .)"`,
				`echo built > out.txt && echo "mode=$(stat -c %a out.txt)"`,
				`echo "secret=$(cat "$SECRET_FILE")"`,
			)
			j.Variables = append(j.Variables, job.Variable{Key: "SECRET_FILE", Value: "file-content", File: true})
			if tt.imageUser != "" {
				j.Image.ExecutorOpts = &job.ExecutorOpts{Docker: job.DockerOpts{User: job.StringOrInt(tt.imageUser)}}
			}
			l, err := rg.run(t, j)
			if err != nil {
				t.Fatalf("job failed: %v\n%s", err, l)
			}
			for _, want := range []string{"uid:gid=" + tt.want + "\n", "owner=" + tt.wantOwner + "\n", "mode=" + tt.wantMode + "\n", "secret=file-content\n"} {
				if !strings.Contains(l.String(), want) {
					t.Errorf("log does not show %q:\n%s", want, l)
				}
			}
		})
	}
}
