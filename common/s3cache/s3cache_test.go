package s3cache

import (
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

func TestObjectName(t *testing.T) {
	for _, c := range []struct {
		name   string
		cfg    config.CacheConfig
		key    string
		want   string
		refuse bool
	}{
		{name: "runner-scoped", key: "default", want: "runner/abcd1234/project/42/default"},
		{name: "with Path", cfg: config.CacheConfig{Path: "ci/cache"}, key: "deps-main", want: "ci/cache/runner/abcd1234/project/42/deps-main"},
		{name: "Path with slashes", cfg: config.CacheConfig{Path: "/ci/"}, key: "k", want: "ci/runner/abcd1234/project/42/k"},
		{name: "Shared", cfg: config.CacheConfig{Shared: true}, key: "default", want: "project/42/default"},
		{name: "Shared with Path", cfg: config.CacheConfig{Shared: true, Path: "p"}, key: "a/b", want: "p/project/42/a/b"},
		{name: "dot segments inside", key: "a/../b", want: "runner/abcd1234/project/42/b"},
		{name: "climbs out", key: "../other", refuse: true},
		{name: "climbs to the project", key: "a/../..", refuse: true},
		{name: "is the project", key: ".", refuse: true},
		{name: "empty", key: "", refuse: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ObjectName(&c.cfg, "abcd1234", 42, c.key)
			if c.refuse {
				if err == nil {
					t.Fatalf("ObjectName(%q) = %q, want an error", c.key, got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ObjectName(%q) = %q, %v; want %q", c.key, got, err, c.want)
			}
		})
	}
}

func boolPtr(b bool) *bool { return &b }

func TestPresignedURLs(t *testing.T) {
	const accessKey, secret = "AKIAEXAMPLEKEY123456", "secret/example+key"
	for _, c := range []struct {
		name               string
		s3                 config.CacheS3
		wantHost, wantPath string
	}{
		{name: "custom endpoint, path-style by default",
			s3:       config.CacheS3{ServerAddress: "127.0.0.1:9000", Insecure: true, BucketName: "cache"},
			wantHost: "http://127.0.0.1:9000", wantPath: "/cache/runner/x/project/1/default"},
		{name: "custom endpoint over https, virtual-host when asked",
			s3:       config.CacheS3{ServerAddress: "minio.example.com", BucketName: "cache", PathStyle: boolPtr(false)},
			wantHost: "https://cache.minio.example.com", wantPath: "/runner/x/project/1/default"},
		{name: "AWS, dual-stack by default",
			s3:       config.CacheS3{BucketName: "cache", BucketLocation: "eu-west-1"},
			wantHost: "https://cache.s3.dualstack.eu-west-1.amazonaws.com", wantPath: "/runner/x/project/1/default"},
		{name: "AWS, accelerated",
			s3:       config.CacheS3{ServerAddress: config.AWSS3ServerAddress, BucketName: "cache", Accelerate: true, DualStack: boolPtr(false)},
			wantHost: "https://cache.s3-accelerate.amazonaws.com", wantPath: "/runner/x/project/1/default"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s3
			s.AccessKey, s.SecretKey, s.AuthenticationType = accessKey, secret, config.S3AuthAccessKey
			sg, err := New(t.Context(), &s)
			if err != nil {
				t.Fatal(err)
			}
			get, err := sg.GetURL(t.Context(), "runner/x/project/1/default")
			if err != nil {
				t.Fatal(err)
			}
			put, err := sg.PutRequest(t.Context(), "runner/x/project/1/default")
			if err != nil {
				t.Fatal(err)
			}
			for _, raw := range []string{get, put.URL} {
				u, err := url.Parse(raw)
				if err != nil {
					t.Fatal(err)
				}
				if host := u.Scheme + "://" + u.Host; host != c.wantHost || u.Path != c.wantPath {
					t.Errorf("URL %s: host %s path %s; want %s %s", raw, host, u.Path, c.wantHost, c.wantPath)
				}
				q := u.Query()
				if exp, _ := strconv.Atoi(q.Get("X-Amz-Expires")); time.Duration(exp)*time.Second != Expiry {
					t.Errorf("X-Amz-Expires = %q, want %s", q.Get("X-Amz-Expires"), Expiry)
				}
				if !strings.HasPrefix(q.Get("X-Amz-Credential"), accessKey+"/") || q.Get("X-Amz-Signature") == "" {
					t.Errorf("URL %s is not signed by %s", raw, accessKey)
				}
				if strings.Contains(raw, secret) || strings.Contains(raw, url.QueryEscape(secret)) {
					t.Errorf("URL %s holds the secret key", raw)
				}
				if q.Has("x-amz-checksum-crc32") || q.Has("x-amz-sdk-checksum-algorithm") {
					t.Errorf("URL %s asks for a checksum of a body it cannot know", raw)
				}
			}
		})
	}
}

func TestPutCarriesServerSideEncryption(t *testing.T) {
	s := &config.CacheS3{ServerAddress: "127.0.0.1:9000", Insecure: true, BucketName: "cache",
		AccessKey: "AKIAEXAMPLE", SecretKey: "s", ServerSideEncryption: "KMS", ServerSideEncryptionKeyID: "alias/cache"}
	sg, err := New(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	req, err := sg.PutRequest(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Header.Get("X-Amz-Server-Side-Encryption"); got != "aws:kms" {
		t.Errorf("signed SSE header %q, want aws:kms (headers %v)", got, req.Header)
	}
	if got := req.Header.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"); got != "alias/cache" {
		t.Errorf("signed KMS key header %q, want alias/cache (headers %v)", got, req.Header)
	}
	if req.Header.Get("Host") != "" {
		t.Error("Host is in the headers to send; net/http sets it from the URL")
	}
}

func TestNewRefusesAccessKeyWithoutKeys(t *testing.T) {
	_, err := New(t.Context(), &config.CacheS3{BucketName: "b", AuthenticationType: "access-key"})
	if err == nil || !strings.Contains(err.Error(), "AccessKey and SecretKey") {
		t.Fatalf("err = %v, want one naming AccessKey and SecretKey", err)
	}
}

func TestForReusesTheSigner(t *testing.T) {
	s := config.CacheS3{ServerAddress: "127.0.0.1:1", BucketName: "b", AccessKey: "a", SecretKey: "s"}
	a, err := For(t.Context(), &s)
	if err != nil {
		t.Fatal(err)
	}
	same := s
	b, _ := For(t.Context(), &same)
	other := s
	other.BucketName = "c"
	c, _ := For(t.Context(), &other)
	if a != b || a == c {
		t.Fatalf("For: same settings gave a new signer (%v) or other settings the same one (%v)", a != b, a == c)
	}
}

// AuthenticationType iam signs with the SDK's default chain, here its environment step, as the
// manager's instance profile or IRSA would provide on AWS.
func TestIAMSignsWithTheDefaultChain(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAFROMTHECHAIN")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	sg, err := New(t.Context(), &config.CacheS3{ServerAddress: "127.0.0.1:9000", BucketName: "b", AuthenticationType: "iam"})
	if err != nil {
		t.Fatal(err)
	}
	u, err := sg.GetURL(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(u, "X-Amz-Credential=AKIAFROMTHECHAIN%2F") {
		t.Fatalf("URL %s is not signed with the chain's key", u)
	}
}
