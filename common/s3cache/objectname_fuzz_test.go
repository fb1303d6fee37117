package s3cache

import (
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

// A job's cache key is user input: whatever it is, the object stays under the project's prefix.
func FuzzObjectName(f *testing.F) {
	for _, k := range []string{"default", "a/../b", "../x", "a/../..", ".", "/abs", "deps-main", "a//b/./c", ""} {
		f.Add(k, "ci", false)
		f.Add(k, "/", true)
	}
	f.Fuzz(func(t *testing.T, key, prefix string, shared bool) {
		c := &config.CacheConfig{Path: prefix, Shared: shared}
		got, err := ObjectName(c, "abcd1234", 7, key)
		if err != nil {
			return
		}
		base, _ := ObjectName(c, "abcd1234", 7, "x")
		base = strings.TrimSuffix(base, "x")
		if !strings.HasPrefix(got, base) || len(got) == len(base) {
			t.Fatalf("key %q under Path %q gave %q, outside %q", key, prefix, got, base)
		}
		if strings.HasPrefix(got, "/") || strings.Contains(got, "//") {
			t.Fatalf("key %q gave the unclean object name %q", key, got)
		}
	})
}
