package docker

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/s3cache"
)

// remoteCache is the runner's S3 cache: the manager signs a URL per object and the helper container
// transfers the archive with plain HTTP, so no cloud credential reaches the instance.
type remoteCache struct {
	cfg    *config.CacheConfig
	s3     *config.CacheS3
	signer *s3cache.Signer // made at the first use; nil when it could not be made
	err    error
}

func newRemoteCache(rc *config.RunnerConfig) *remoteCache {
	s3 := rc.S3Cache()
	if s3 == nil {
		return nil
	}
	return &remoteCache{cfg: rc.Cache, s3: s3}
}

// signer returns the signer, or an error the job log shows as a warning.
func (r *run) signer(ctx context.Context) (*s3cache.Signer, error) {
	if r.remote.signer == nil && r.remote.err == nil {
		r.remote.signer, r.remote.err = s3cache.For(ctx, r.remote.s3)
	}
	return r.remote.signer, r.remote.err
}

// object is the bucket's name for key; the job log says why when there is none.
func (r *run) object(key string) (string, bool) {
	obj, err := s3cache.ObjectName(r.remote.cfg, r.short, r.j.JobInfo.ProjectID, key)
	if err != nil {
		r.log.Warnf("Cache key %q: %v; skipping it", key, err)
		return "", false
	}
	return obj, true
}

func (r *run) restoreRemote(ctx context.Context, selected []job.Cache) error {
	signer, err := r.signer(ctx)
	if err != nil {
		r.log.Warnf("S3 cache unavailable (%v); not restoring", err)
		return nil
	}
	for _, c := range selected {
		var urls []string
		for _, k := range r.restoreKeys(c) {
			obj, ok := r.object(k)
			if !ok {
				continue
			}
			u, err := signer.GetURL(ctx, obj)
			if err != nil {
				r.log.Warnf("Cache key %q: %v; skipping it", k, err)
				continue
			}
			urls = append(urls, u)
		}
		if len(urls) == 0 {
			continue
		}
		r.log.Infof("Checking cache for %s...", r.cacheKey(c))
		args := []string{"cache-extract", "--dir", r.projectDir, "--urls", "-", "--tmp-dir", r.tmpDir}
		if err := r.helperStdin(ctx, "cache-extract", args, strings.Join(urls, "\n")+"\n"); err != nil {
			if err := r.cacheWarn(ctx, "Failed to restore cache", err); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *run) archiveRemote(ctx context.Context, selected []job.Cache) error {
	signer, err := r.signer(ctx)
	if err != nil {
		r.log.Warnf("S3 cache unavailable (%v); not saving", err)
		return nil
	}
	for _, c := range selected {
		key := r.cacheKey(c)
		obj, ok := r.object(key)
		if !ok {
			continue
		}
		req, err := signer.PutRequest(ctx, obj)
		if err != nil {
			r.log.Warnf("Cache key %q: %v; not saving", key, err)
			continue
		}
		args := []string{"cache-archive", "--dir", r.projectDir, "--url", "-", "--tmp-dir", r.tmpDir}
		if n := r.remote.cfg.GetMaxUploadedArchiveSize(); n > 0 {
			args = append(args, "--max-size", strconv.FormatInt(n, 10))
		}
		names := make([]string, 0, len(req.Header))
		for k := range req.Header {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			for _, v := range req.Header[k] {
				args = append(args, "--header", fmt.Sprintf("%s: %s", k, v))
			}
		}
		args = append(args, r.cachePathArgs(c)...)
		r.log.Infof("Creating cache %s...", key)
		if err := r.helperStdin(ctx, "cache-archive", args, req.URL+"\n"); err != nil {
			if err := r.cacheWarn(ctx, "Failed to save cache", err); err != nil {
				return err
			}
		}
	}
	return nil
}
