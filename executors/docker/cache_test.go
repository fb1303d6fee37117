package docker

import (
	"slices"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// Without [runners.cache] the cache lives in a volume on the instance, as before; with an S3 cache no
// such volume is made, and a gcs or azure cache (not supported yet) keeps the local one.
func TestCachePlan(t *testing.T) {
	s3 := &config.CacheS3{ServerAddress: "127.0.0.1:9000", BucketName: "b", AccessKey: "a", SecretKey: "s"}
	for _, c := range []struct {
		name       string
		cache      *config.CacheConfig
		wantRemote bool
	}{
		{"no [runners.cache]", nil, false},
		{"s3", &config.CacheConfig{Type: config.CacheTypeS3, S3: s3}, true},
		{"s3 without a bucket", &config.CacheConfig{Type: config.CacheTypeS3}, false},
		{"gcs", &config.CacheConfig{Type: config.CacheTypeGCS}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := planRun(t, &config.RunnerConfig{Cache: c.cache}, &job.Job{Cache: []job.Cache{{Key: "k", Paths: []string{"p"}}}})
			cacheVolume := slices.ContainsFunc(r.volumes, func(v volumeSpec) bool { return v.labels[LabelRole] == "cache" })
			if (r.remote != nil) != c.wantRemote || cacheVolume == c.wantRemote || (r.cacheBind != "") == c.wantRemote {
				t.Errorf("remote %v, cache volume %v, cache bind %q; want remote %v and a local cache only without it",
					r.remote != nil, cacheVolume, r.cacheBind, c.wantRemote)
			}
		})
	}
}

func TestRestoreKeysInOrder(t *testing.T) {
	r := planRun(t, &config.RunnerConfig{}, &job.Job{Variables: job.Variables{
		{Key: "CI_COMMIT_REF_SLUG", Value: "main"}, {Key: "CACHE_FALLBACK_KEY", Value: "global"},
	}})
	for _, c := range []struct {
		cache job.Cache
		want  []string
	}{
		{job.Cache{Key: "deps-$CI_COMMIT_REF_SLUG", FallbackKeys: []string{"$UNSET", "deps-default"}}, []string{"deps-main", "deps-default", "global"}},
		{job.Cache{}, []string{"default", "global"}},
	} {
		if got := r.restoreKeys(c.cache); !slices.Equal(got, c.want) {
			t.Errorf("restoreKeys(%+v) = %v, want %v", c.cache, got, c.want)
		}
	}
}
