package config

import (
	"fmt"
	"reflect"
	"strings"
)

// [runners.cache] values and the defaults of the S3 cache, as upstream's cache/s3v2 resolves them.
const (
	CacheTypeS3    = "s3"
	CacheTypeGCS   = "gcs"
	CacheTypeAzure = "azure"

	// S3AuthAccessKey signs with AccessKey/SecretKey (and SessionToken); S3AuthIAM with the AWS SDK's
	// default credential chain (environment, shared files, instance profile, IRSA).
	S3AuthAccessKey = "access-key"
	S3AuthIAM       = "iam"

	// DefaultS3BucketLocation is the region signed for when BucketLocation is unset.
	DefaultS3BucketLocation = "us-east-1"
	// AWSS3ServerAddress is AWS's own endpoint; ServerAddress unset or set to it lets the SDK pick the
	// regional (and dual-stack or accelerated) endpoint.
	AWSS3ServerAddress = "s3.amazonaws.com"
)

// S3Cache returns the runner's S3 cache settings ([runners.cache.s3] merged with the older flat keys),
// or nil when the runner has no usable S3 cache: then jobs keep their cache in the local cache volume.
func (r *RunnerConfig) S3Cache() *CacheS3 {
	if r.Cache == nil || r.Cache.Type != CacheTypeS3 {
		return nil
	}
	s := r.Cache.GetS3()
	if s.BucketName == "" {
		return nil
	}
	return s
}

// GetMaxUploadedArchiveSize is the largest cache archive uploaded, in bytes; 0 is no limit.
func (c *CacheConfig) GetMaxUploadedArchiveSize() int64 {
	return max(c.MaxUploadedArchiveSize, 0)
}

// GetS3 returns [runners.cache.s3] with the older flat keys under [runners.cache] filling what it does
// not set; never nil.
func (c *CacheConfig) GetS3() *CacheS3 {
	s := CacheS3{}
	if c.S3 != nil {
		s = *c.S3
	}
	fill := func(dst *string, legacy string) {
		if *dst == "" {
			*dst = legacy
		}
	}
	fill(&s.ServerAddress, c.LegacyServerAddress)
	fill(&s.AccessKey, c.LegacyAccessKey)
	fill(&s.SecretKey, c.LegacySecretKey)
	fill(&s.BucketName, c.LegacyBucketName)
	fill(&s.BucketLocation, c.LegacyBucketLocation)
	s.Insecure = s.Insecure || c.LegacyInsecure
	return &s
}

// legacyS3Keys names the flat keys under [runners.cache] that are set, for the load warning.
func (c *CacheConfig) legacyS3Keys() []string {
	var set []string
	for _, k := range []struct {
		name string
		set  bool
	}{
		{"ServerAddress", c.LegacyServerAddress != ""}, {"AccessKey", c.LegacyAccessKey != ""},
		{"SecretKey", c.LegacySecretKey != ""}, {"BucketName", c.LegacyBucketName != ""},
		{"BucketLocation", c.LegacyBucketLocation != ""}, {"Insecure", c.LegacyInsecure},
	} {
		if k.set {
			set = append(set, k.name)
		}
	}
	return set
}

// GetAuthenticationType is S3AuthAccessKey or S3AuthIAM. Unset, it is access-key when ServerAddress,
// AccessKey and SecretKey are all set and iam otherwise, as upstream decides.
func (s *CacheS3) GetAuthenticationType() string {
	switch t := strings.ToLower(s.AuthenticationType); t {
	case S3AuthAccessKey, S3AuthIAM:
		return t
	}
	if s.ServerAddress == "" || s.AccessKey == "" || s.SecretKey == "" {
		return S3AuthIAM
	}
	return S3AuthAccessKey
}

// GetBucketLocation is the bucket's region.
func (s *CacheS3) GetBucketLocation() string {
	if s.BucketLocation == "" {
		return DefaultS3BucketLocation
	}
	return s.BucketLocation
}

// GetEndpoint is the URL of a custom S3 endpoint (MinIO, moto, a VPC endpoint): ServerAddress with
// https, or http when Insecure. It is "" for AWS's own endpoint, which the SDK resolves by region.
func (s *CacheS3) GetEndpoint() string {
	if s.ServerAddress == "" || s.ServerAddress == AWSS3ServerAddress {
		return ""
	}
	if strings.Contains(s.ServerAddress, "://") {
		return s.ServerAddress
	}
	if s.Insecure {
		return "http://" + s.ServerAddress
	}
	return "https://" + s.ServerAddress
}

// GetPathStyle says whether the bucket goes in the URL path (host/bucket/key) rather than the host
// name. Unset, it is used for custom endpoints and not for AWS's, as upstream does.
func (s *CacheS3) GetPathStyle() bool {
	if s.PathStyle != nil {
		return *s.PathStyle
	}
	return s.GetEndpoint() != ""
}

// GetDualStack says whether AWS's dual-stack (IPv4 and IPv6) endpoint is used; upstream's default is
// on. It has no effect with a custom endpoint.
func (s *CacheS3) GetDualStack() bool {
	return s.DualStack == nil || *s.DualStack
}

// lint warns about cache settings that load but are not used as written.
func (c *CacheConfig) lint(p string) []Warning {
	var w []Warning
	warn := func(key, format string, args ...any) {
		w = append(w, Warning{Key: p + key, Message: fmt.Sprintf(format, args...)})
	}
	switch {
	case c.Type == CacheTypeGCS || c.Type == CacheTypeAzure:
		warn(".Type", "the %s cache is not supported yet (fleetrunner supports s3); jobs keep their cache in the local cache volume of the instance", c.Type)
	case c.Type == CacheTypeS3 && c.GetS3().BucketName == "":
		warn(".s3.BucketName", "missing, so the s3 cache is disabled; jobs keep their cache in the local cache volume of the instance")
	case c.Type == CacheTypeS3:
		if s := c.GetS3(); s.GetAuthenticationType() == S3AuthAccessKey && (s.AccessKey == "" || s.SecretKey == "") {
			warn(".s3.AuthenticationType", "access-key without AccessKey and SecretKey: jobs will warn that the cache is unavailable; set both, or use iam")
		}
	}
	for _, k := range c.legacyS3Keys() {
		if c.S3 != nil && !reflect.ValueOf(*c.S3).FieldByName(k).IsZero() {
			warn("."+k, "older flat layout, and [runners.cache.s3] %s is also set; that one is used. Remove this key", k)
			continue
		}
		warn("."+k, "older flat layout; read as [runners.cache.s3] %s. Move it into [runners.cache.s3]", k)
	}
	if s := c.S3; s != nil {
		for _, k := range []struct{ name, v string }{{"RoleARN", s.RoleARN}, {"UploadRoleARN", s.UploadRoleARN}} {
			if k.v != "" {
				warn(".s3."+k.name, "not supported yet: the manager signs cache URLs with its own credentials (AuthenticationType); ignored")
			}
		}
	}
	return w
}

// GetServerSideEncryption is the x-amz-server-side-encryption value for uploads, from upstream's
// spellings (S3, KMS, DSSE-KMS) or S3's own (AES256, aws:kms, aws:kms:dsse); "" is none, and so is an
// unknown value, which validation refuses.
func (s *CacheS3) GetServerSideEncryption() string {
	switch strings.ToUpper(s.ServerSideEncryption) {
	case "S3", "AES256":
		return "AES256"
	case "KMS", "AWS:KMS":
		return "aws:kms"
	case "DSSE-KMS", "AWS:KMS:DSSE":
		return "aws:kms:dsse"
	}
	return ""
}
