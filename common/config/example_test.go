package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const examplePath = "../../config.toml.example"

func TestExampleLoadsCleanly(t *testing.T) {
	cfg, warns, err := Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Fatalf("config.toml.example gives warnings: %v", warns)
	}
	if len(cfg.Runners) != 1 || cfg.Runners[0].Executor != ExecutorDockerAutoscaler {
		t.Fatalf("example runners: %+v", cfg.Runners)
	}
}

// commentedSetting matches the optional settings of the example ("# key = value", "# [table]").
var commentedSetting = regexp.MustCompile(`^(\s*)#\s+((\[\[?[A-Za-z0-9_.]+\]\]?)|(([A-Za-z0-9_.-]+|"[^"]*") = .*))$`)

// uncommentExample turns every optional setting of the example on.
func uncommentExample(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		if m := commentedSetting.FindStringSubmatch(l); m != nil {
			lines[i] = m[1] + m[2]
		}
	}
	return strings.Join(lines, "\n")
}

// Every optional setting in the example must be valid too.
func TestExampleWithEverySettingOnLoadsCleanly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(uncommentExample(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, warns, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Fatalf("warnings: %v", warns)
	}
}

// notInExample are keys the types parse for compatibility that fleetrunner does not use (loading them
// gives a warning, or upstream deprecated them), so the example does not offer them.
var notInExample = map[string]bool{
	"sentry_dsn": true, "user": true, "session_server": true,
	"runners.pre_clone_script": true, "runners.post_clone_script": true,
	"runners.cache.gcs": true, "runners.cache.azure": true,
	// Upstream's older flat layout of the S3 keys; read with a warning to move them.
	"runners.cache.ServerAddress": true, "runners.cache.AccessKey": true, "runners.cache.SecretKey": true,
	"runners.cache.BucketName": true, "runners.cache.BucketLocation": true, "runners.cache.Insecure": true,
	"runners.docker.isolation": true,
	// fleetrunner builds its own helper image; these load with a warning.
	"runners.docker.helper_image": true, "runners.docker.helper_image_flavor": true,
	"runners.docker.helper_image_autoset_arch_and_os": true,
	"runners.autoscaler.vm_isolation":                 true,
}

// The example documents every key fleetrunner supports.
func TestExampleDocumentsEveryKey(t *testing.T) {
	var raw map[string]any
	if _, err := toml.Decode(uncommentExample(t), &raw); err != nil {
		t.Fatal(err)
	}
	var missing []string
	var walk func(prefix string, m map[string]any, typ reflect.Type)
	walk = func(prefix string, m map[string]any, typ reflect.Type) {
		for _, f := range tomlFields(typ) {
			key := prefix + f.name
			if notInExample[key] {
				continue
			}
			v, ok := m[f.name]
			if !ok {
				missing = append(missing, key)
				continue
			}
			ft := f.typ
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				if ft.Kind() == reflect.Slice {
					switch tables := v.(type) {
					case []map[string]any:
						v = tables[0]
					case []any:
						if len(tables) > 0 {
							v = tables[0]
						}
					}
				}
				ft = ft.Elem()
			}
			if sub, ok := v.(map[string]any); ok && ft.Kind() == reflect.Struct && ft != timeType {
				walk(key+".", sub, ft)
			}
		}
	}
	walk("", raw, reflect.TypeFor[Config]())
	if len(missing) > 0 {
		t.Fatalf("config.toml.example does not document: %s", strings.Join(missing, ", "))
	}
}
