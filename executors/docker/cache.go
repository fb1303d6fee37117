package docker

import (
	"context"
	"path"
	"strings"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// cacheFile is where a cache key's archive lives in the cache volume; "" for a key that would escape it.
func (r *run) cacheFile(key string) string {
	clean := path.Clean(key)
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || clean == "." {
		return ""
	}
	return path.Join(r.cacheDir, clean, "cache.zip")
}

// cacheKey is c's key expanded, "default" when empty, as GitLab names a cache without a key.
func (r *run) cacheKey(c job.Cache) string {
	if k := r.vars.Expand(c.Key); k != "" {
		return k
	}
	return "default"
}

// restoreKeys are the keys a restore tries in order: the cache's key, its fallback_keys, then
// CACHE_FALLBACK_KEY, expanded, without the empty ones.
func (r *run) restoreKeys(c job.Cache) []string {
	keys := []string{r.cacheKey(c)}
	for _, k := range append(append([]string(nil), c.FallbackKeys...), r.vars.Get("CACHE_FALLBACK_KEY")) {
		if k = r.vars.Expand(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

func cacheWhen(c job.Cache, succeeded bool) bool {
	switch c.When {
	case job.WhenAlways:
		return true
	case job.WhenOnFailure:
		return !succeeded
	}
	return succeeded
}

// cacheWarn reports a cache step that failed: a warning in the job log, never a job failure (as
// upstream), unless the job itself is being stopped.
func (r *run) cacheWarn(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	r.log.Warnf("%s: %v", what, err)
	return nil
}

func (r *run) restoreCache(ctx context.Context) error {
	var selected []job.Cache
	for _, c := range r.j.Cache {
		if c.Policy != job.CachePolicyPush {
			selected = append(selected, c)
		}
	}
	if len(selected) == 0 {
		return nil
	}
	return r.section("restore_cache", "Restoring cache", func() error {
		if r.remote != nil {
			return r.restoreRemote(ctx, selected)
		}
		if r.cacheBind == "" {
			r.log.Warnf("Cache is disabled for this runner (disable_cache); not restoring")
			return nil
		}
		for _, c := range selected {
			args := []string{"cache-extract", "--dir", r.projectDir}
			for _, k := range r.restoreKeys(c) {
				if f := r.cacheFile(k); f != "" {
					args = append(args, "--file", f)
				} else {
					r.log.Warnf("Cache key %q is not a valid path; skipping it", k)
				}
			}
			if len(args) == 3 {
				continue
			}
			r.log.Infof("Checking cache for %s...", r.cacheKey(c))
			if err := r.helper(ctx, "cache-extract", args, ""); err != nil {
				if err := r.cacheWarn(ctx, "Failed to extract cache", err); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (r *run) archiveCache(ctx context.Context, succeeded bool) error {
	var selected []job.Cache
	for _, c := range r.j.Cache {
		if c.Policy != job.CachePolicyPull && cacheWhen(c, succeeded) {
			selected = append(selected, c)
		}
	}
	if len(selected) == 0 {
		return nil
	}
	name, header := "archive_cache", "Saving cache for successful job"
	if !succeeded {
		name, header = "archive_cache_on_failure", "Saving cache for failed job"
	}
	return r.section(name, header, func() error {
		if r.remote != nil {
			return r.archiveRemote(ctx, selected)
		}
		if r.cacheBind == "" {
			r.log.Warnf("Cache is disabled for this runner (disable_cache); not saving")
			return nil
		}
		for _, c := range selected {
			f := r.cacheFile(r.cacheKey(c))
			if f == "" {
				r.log.Warnf("Cache key %q is not a valid path; not saving", c.Key)
				continue
			}
			args := append([]string{"cache-archive", "--dir", r.projectDir, "--file", f}, r.cachePathArgs(c)...)
			r.log.Infof("Creating cache %s...", r.cacheKey(c))
			if err := r.helper(ctx, "cache-archive", args, ""); err != nil {
				if err := r.cacheWarn(ctx, "Failed to create cache", err); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// cachePathArgs are the helper's flags for what c archives.
func (r *run) cachePathArgs(c job.Cache) []string {
	var args []string
	for _, p := range c.Paths {
		args = append(args, "--path", r.vars.Expand(p))
	}
	if c.Untracked {
		args = append(args, "--untracked")
	}
	return args
}
