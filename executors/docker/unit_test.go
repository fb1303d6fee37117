package docker

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/registry"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

func TestPullPolicies(t *testing.T) {
	tests := []struct {
		name       string
		configured []string
		allowed    []string
		requested  []string
		want       []string
		wantReason job.FailureReason
		wantErr    bool
	}{
		{name: "default is always", want: []string{"always"}},
		{name: "configured fallback order", configured: []string{"always", "if-not-present"}, want: []string{"always", "if-not-present"}},
		{name: "job asks for an allowed one", configured: []string{"always"}, allowed: []string{"always", "never"}, requested: []string{"never"}, want: []string{"never"}},
		{name: "job asks for a disallowed one", configured: []string{"if-not-present"}, requested: []string{"always"}, wantReason: job.ConfigurationError},
		{name: "configured filtered by allowed", configured: []string{"always", "never"}, allowed: []string{"never"}, want: []string{"never"}},
		{name: "nothing allowed", configured: []string{"always"}, allowed: []string{"never"}, wantReason: job.ConfigurationError},
		{name: "unknown policy", configured: []string{"sometimes"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pullPolicies(&config.DockerConfig{PullPolicy: tt.configured, AllowedPullPolicies: tt.allowed}, tt.requested)
			var be *job.BuildError
			switch {
			case tt.wantReason != "":
				if !errors.As(err, &be) || be.Reason != tt.wantReason {
					t.Fatalf("err = %v, want reason %s", err, tt.wantReason)
				}
			case tt.wantErr:
				if err == nil || errors.As(err, &be) {
					t.Fatalf("err = %v, want a runner configuration error", err)
				}
			case err != nil:
				t.Fatal(err)
			case !slices.Equal(got, tt.want):
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestImageAllowed(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		want     bool
	}{
		{"ruby:3.3", nil, true},
		{"ruby:3.3", []string{"ruby:*"}, true},
		{"python:3", []string{"ruby:*"}, false},
		{"registry.test/group/img:1", []string{"registry.test/*/*:*"}, true},
		{"registry.test/group/img:1", []string{"*:*"}, false},
	}
	for _, tt := range tests {
		if got := imageAllowed(tt.name, tt.patterns); got != tt.want {
			t.Errorf("imageAllowed(%q, %v) = %v, want %v", tt.name, tt.patterns, got, tt.want)
		}
	}
}

func TestServiceAliases(t *testing.T) {
	tests := []struct {
		name, alias string
		want        []string
	}{
		{"postgres:16", "", []string{"postgres"}},
		{"postgres:16", "db", []string{"db", "postgres"}},
		{"registry.test:5000/group/redis:7", "cache, kv", []string{"cache", "kv", "registry.test:5000__group__redis", "registry.test:5000-group-redis"}},
		{"redis@sha256:abc", "", []string{"redis"}},
	}
	for _, tt := range tests {
		if got := serviceAliases(tt.name, tt.alias); !slices.Equal(got, tt.want) {
			t.Errorf("serviceAliases(%q, %q) = %v, want %v", tt.name, tt.alias, got, tt.want)
		}
	}
}

func TestArtifactPath(t *testing.T) {
	r := &run{projectDir: "/builds/group/project"}
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "bin/", want: "bin/"},
		{in: "/builds/group/project/out/x", want: "out/x"},
		{in: "/builds/group/project", want: "."},
		{in: "../other", bad: true},
		{in: "a/../../x", bad: true},
		{in: "/etc/passwd", bad: true},
		{in: "/builds/group/project2/x", bad: true},
	}
	for _, tt := range tests {
		got, err := r.artifactPath(tt.in)
		if tt.bad {
			var be *job.BuildError
			if !errors.As(err, &be) || be.Reason != job.ConfigurationError {
				t.Errorf("artifactPath(%q) err = %v, want configuration error", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("artifactPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestShellScriptQuotesValues(t *testing.T) {
	r := &run{tmpDir: "/builds/p.tmp", vars: job.Variables{
		{Key: "PLAIN", Value: "it's $HOME"},
		{Key: "KEYFILE", Value: "line1\nline2", File: true},
		{Key: "bad-name", Value: "x"},
	}}
	s := r.shellScript(scriptOptions{dir: "/builds/p", commands: []string{"echo hi"}, trace: true})
	for _, want := range []string{
		`export PLAIN='it'\''s $HOME'`,
		`printf '%s' 'line1` + "\n" + `line2' > '/builds/p.tmp/KEYFILE'`,
		`export KEYFILE='/builds/p.tmp/KEYFILE'`,
		"cd '/builds/p'\n",
		"echo hi\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "bad-name") {
		t.Errorf("script exports an invalid name:\n%s", s)
	}
}

func TestBuildHostConfig(t *testing.T) {
	oom := &config.DockerConfig{Memory: "512m", MemorySwap: "1g", CPUs: "1.5", CPUShares: 512, Ulimit: map[string]string{"nofile": "1024:2048"},
		Devices: []string{"/dev/fuse:/dev/fuse:rw"}, OomKillDisable: true, NetworkMode: "host", CapAdd: []string{"NET_ADMIN"}}
	hc, err := buildHostConfig(oom)
	if err != nil {
		t.Fatal(err)
	}
	if hc.Memory != 512<<20 || hc.MemorySwap != 1<<30 || hc.NanoCPUs != 1_500_000_000 || hc.CPUShares != 512 {
		t.Errorf("resources = %+v", hc.Resources)
	}
	if len(hc.Ulimits) != 1 || hc.Ulimits[0].Soft != 1024 || hc.Ulimits[0].Hard != 2048 {
		t.Errorf("ulimits = %+v", hc.Ulimits)
	}
	if len(hc.Devices) != 1 || hc.Devices[0].CgroupPermissions != "rw" || hc.OomKillDisable == nil || !*hc.OomKillDisable {
		t.Errorf("devices/oom = %+v %v", hc.Devices, hc.OomKillDisable)
	}
	// "-1" is refused as upstream refuses it, and as loading config.toml does.
	for _, bad := range []string{"lots", "-1"} {
		if _, err := buildHostConfig(&config.DockerConfig{MemorySwap: bad}); err == nil {
			t.Errorf("memory_swap %q accepted", bad)
		}
	}
}

type nopLog struct{ strings.Builder }

func (l *nopLog) SectionStart(string, string) {}
func (l *nopLog) SectionEnd(string)           {}
func (l *nopLog) Infof(string, ...any)        {}
func (l *nopLog) Warnf(f string, a ...any)    { l.WriteString("WARNING: " + f) }
func (l *nopLog) Errorf(string, ...any)       {}

func TestRegistryAuth(t *testing.T) {
	dockerAuth := `{"auths": {"https://index.docker.io/v1/": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("hub:pw")) + `"},
		"registry.example.test:5000": {"username": "u", "password": "p"}}}`
	r := &run{log: &nopLog{}, j: &job.Job{Credentials: []job.Credential{
		{Type: "registry", URL: "gitlab.example.test:5050", Username: "gitlab-ci-token", Password: "jobtoken"},
	}}, vars: job.Variables{{Key: "DOCKER_AUTH_CONFIG", Value: dockerAuth}}}
	tests := []struct{ image, user, password string }{
		{"busybox", "hub", "pw"},
		{"registry.example.test:5000/team/img:1", "u", "p"},
		{"gitlab.example.test:5050/group/project/img", "gitlab-ci-token", "jobtoken"},
		{"quay.io/other/img", "", ""},
	}
	for _, tt := range tests {
		enc, err := r.registryAuth(tt.image)
		if err != nil {
			t.Fatalf("%s: %v", tt.image, err)
		}
		if enc == "" {
			if tt.user != "" {
				t.Errorf("%s: no credentials, want %s", tt.image, tt.user)
			}
			continue
		}
		raw, err := base64.URLEncoding.DecodeString(enc)
		if err != nil {
			t.Fatal(err)
		}
		var ac registry.AuthConfig
		if err := json.Unmarshal(raw, &ac); err != nil {
			t.Fatal(err)
		}
		if ac.Username != tt.user || ac.Password != tt.password {
			t.Errorf("%s: got %s/%s, want %s/%s", tt.image, ac.Username, ac.Password, tt.user, tt.password)
		}
	}
}
