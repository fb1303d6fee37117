package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// warnsAbout reports whether warns hold one for key whose message mentions every part of sub.
func warnsAbout(warns []Warning, key string, sub ...string) bool {
	return slices.ContainsFunc(warns, func(w Warning) bool {
		if w.Key != key {
			return false
		}
		for _, s := range sub {
			if !strings.Contains(w.Message, s) {
				return false
			}
		}
		return true
	})
}

func TestS3CacheKeys(t *testing.T) {
	cfg, warns, err := Load(writeConfig(t, replace(`  [runners.docker]`, `  [runners.cache]
    Type = "s3"
    Path = "ci"
    Shared = true
    MaxUploadedArchiveSize = 1048576
    [runners.cache.s3]
      ServerAddress = "127.0.0.1:9000"
      AccessKey = "AKIAEXAMPLE"
      SecretKey = "secret"
      SessionToken = "session"
      BucketName = "cache"
      BucketLocation = "eu-west-1"
      Insecure = true
      AuthenticationType = "access-key"
      ServerSideEncryption = "KMS"
      ServerSideEncryptionKeyID = "alias/cache"
      PathStyle = true
      DualStack = false
      Accelerate = false
  [runners.docker]`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	r := cfg.Runners[0]
	s := r.S3Cache()
	if s == nil {
		t.Fatal("S3Cache() = nil for Type s3 with a bucket")
	}
	c := r.Cache
	for _, chk := range []struct {
		what      string
		got, want any
	}{
		{"Path", c.Path, "ci"},
		{"Shared", c.Shared, true},
		{"MaxUploadedArchiveSize", c.GetMaxUploadedArchiveSize(), int64(1 << 20)},
		{"endpoint", s.GetEndpoint(), "http://127.0.0.1:9000"},
		{"AccessKey", s.AccessKey, "AKIAEXAMPLE"},
		{"SecretKey", s.SecretKey, "secret"},
		{"SessionToken", s.SessionToken, "session"},
		{"BucketName", s.BucketName, "cache"},
		{"region", s.GetBucketLocation(), "eu-west-1"},
		{"auth", s.GetAuthenticationType(), S3AuthAccessKey},
		{"SSE", s.GetServerSideEncryption(), "aws:kms"},
		{"SSE key", s.ServerSideEncryptionKeyID, "alias/cache"},
		{"path style", s.GetPathStyle(), true},
		{"dual stack", s.GetDualStack(), false},
		{"accelerate", s.Accelerate, false},
	} {
		if chk.got != chk.want {
			t.Errorf("%s = %v, want %v", chk.what, chk.got, chk.want)
		}
	}
}

func TestS3CacheDefaults(t *testing.T) {
	yes := true
	for _, c := range []struct {
		name                   string
		s                      CacheS3
		endpoint, auth, region string
		pathStyle, dualStack   bool
	}{
		{"AWS with the default chain", CacheS3{BucketName: "b"}, "", S3AuthIAM, "us-east-1", false, true},
		{"AWS's address named", CacheS3{ServerAddress: AWSS3ServerAddress, AccessKey: "a", SecretKey: "s"}, "", S3AuthAccessKey, "us-east-1", false, true},
		{"keys without an address sign with the default chain, as upstream", CacheS3{AccessKey: "a", SecretKey: "s"}, "", S3AuthIAM, "us-east-1", false, true},
		{"MinIO over https", CacheS3{ServerAddress: "minio:9000", AccessKey: "a", SecretKey: "s"}, "https://minio:9000", S3AuthAccessKey, "us-east-1", true, true},
		{"iam asked for", CacheS3{ServerAddress: "minio:9000", AccessKey: "a", SecretKey: "s", AuthenticationType: "IAM"}, "https://minio:9000", S3AuthIAM, "us-east-1", true, true},
		{"explicit path style on AWS", CacheS3{PathStyle: &yes, BucketLocation: "ap-south-1"}, "", S3AuthIAM, "ap-south-1", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			if s.GetEndpoint() != c.endpoint || s.GetAuthenticationType() != c.auth || s.GetBucketLocation() != c.region ||
				s.GetPathStyle() != c.pathStyle || s.GetDualStack() != c.dualStack {
				t.Errorf("endpoint %q auth %q region %q path style %v dual stack %v; want %q %q %q %v %v",
					s.GetEndpoint(), s.GetAuthenticationType(), s.GetBucketLocation(), s.GetPathStyle(), s.GetDualStack(),
					c.endpoint, c.auth, c.region, c.pathStyle, c.dualStack)
			}
		})
	}
	if (&RunnerConfig{}).S3Cache() != nil || (&RunnerConfig{Cache: &CacheConfig{Type: "s3"}}).S3Cache() != nil {
		t.Error("no [runners.cache], or one without a bucket, must keep the local cache")
	}
}

// Corpus file 16 writes the S3 keys directly under [runners.cache], as upstream did before
// [runners.cache.s3]: they are read, with a warning per key naming where it belongs.
func TestLegacyFlatCacheKeys(t *testing.T) {
	cfg, warns, err := Load(filepath.Join("testdata", "corpus", "16-redmic-project-service-deployment.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Runners[0].S3Cache()
	if s == nil {
		t.Fatal("the flat keys did not make an S3 cache")
	}
	if s.ServerAddress != "minio.redmic.net" || s.AccessKey != "minio-access-key" || s.SecretKey != "minio-secret-key-0123456789" ||
		s.BucketName != "cache" || s.Insecure || !cfg.Runners[0].Cache.Shared {
		t.Errorf("read %+v", s)
	}
	for _, k := range []string{"ServerAddress", "AccessKey", "SecretKey", "BucketName"} {
		if !warnsAbout(warns, "runners[0].cache."+k, "[runners.cache.s3] "+k, "older flat layout") {
			t.Errorf("no warning for the flat %s naming [runners.cache.s3] %s: %v", k, k, warns)
		}
	}

	// [runners.cache.s3] wins over a flat key, which is then only warned about.
	cfg, warns, err = Load(writeConfig(t, replace(`  [runners.docker]`, `  [runners.cache]
    Type = "s3"
    BucketName = "old"
    BucketLocation = "eu-west-1"
    [runners.cache.s3]
      BucketName = "new"
  [runners.docker]`)))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Runners[0].S3Cache(); s.BucketName != "new" || s.GetBucketLocation() != "eu-west-1" {
		t.Errorf("bucket %q region %q, want new (from [runners.cache.s3]) and eu-west-1 (flat)", s.BucketName, s.GetBucketLocation())
	}
	if !warnsAbout(warns, "runners[0].cache.BucketName", "is also set", "Remove") {
		t.Errorf("no warning that the flat BucketName is overridden: %v", warns)
	}
}

func TestUnsupportedCacheTypesAreNamed(t *testing.T) {
	for _, typ := range []string{"gcs", "azure"} {
		cfg, warns, err := Load(writeConfig(t, replace(`  [runners.docker]`, `  [runners.cache]
    Type = "`+typ+`"
    [runners.cache.`+typ+`]
      BucketName = "x"
  [runners.docker]`)))
		if err != nil {
			t.Fatal(err)
		}
		if !warnsAbout(warns, "runners[0].cache.Type", "the "+typ+" cache is not supported yet", "local cache volume") {
			t.Errorf("%s: no warning naming it as not supported yet: %v", typ, warns)
		}
		if cfg.Runners[0].S3Cache() != nil {
			t.Errorf("%s: used as an S3 cache", typ)
		}
	}
}

func TestS3CacheProblems(t *testing.T) {
	for _, c := range []struct{ line, key, sub string }{
		{`ServerSideEncryption = "rot13"`, "ServerSideEncryption", "unsupported ServerSideEncryption"},
		{`AuthenticationType = "token"`, "AuthenticationType", "unsupported AuthenticationType"},
	} {
		_, _, err := Load(writeConfig(t, replace(`  [runners.docker]`, "  [runners.cache]\n    Type = \"s3\"\n    [runners.cache.s3]\n      BucketName = \"b\"\n      "+c.line+"\n  [runners.docker]")))
		if err == nil || !strings.Contains(err.Error(), "runners[0].cache.s3."+c.key+": "+c.sub) {
			t.Errorf("%s: err = %v", c.line, err)
		}
	}
	_, warns, err := Load(writeConfig(t, replace(`  [runners.docker]`, "  [runners.cache]\n    Type = \"s3\"\n    [runners.cache.s3]\n      BucketName = \"b\"\n      AuthenticationType = \"access-key\"\n  [runners.docker]")))
	if err != nil || !warnsAbout(warns, "runners[0].cache.s3.AuthenticationType", "without AccessKey and SecretKey") {
		t.Errorf("access-key without keys: err %v, warnings %v", err, warns)
	}
	_, warns, err = Load(writeConfig(t, replace(`  [runners.docker]`, "  [runners.cache]\n    Type = \"s3\"\n    [runners.cache.s3]\n      BucketName = \"b\"\n      RoleARN = \"arn:aws:iam::1:role/x\"\n  [runners.docker]")))
	if err != nil || !warnsAbout(warns, "runners[0].cache.s3.RoleARN", "not supported yet") {
		t.Errorf("RoleARN: err %v, warnings %v", err, warns)
	}
}
