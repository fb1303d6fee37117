package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds config.toml bytes to Parse and Load and asserts:
//   - a rejected file yields no config; every problem is a *FieldError naming its key or a
//     *SyntaxError naming its line, and Load's error is a *FileError naming the file;
//   - every warning names its key;
//   - an accepted file validates, Saves, and Loads back with the same values and no warning it did
//     not have before, and a second Save writes the same bytes.
func FuzzParse(f *testing.F) {
	f.Add([]byte(validDA))
	for _, variant := range [][2]string{
		{"concurrent = 2", "concurrent = 0"},
		{"concurrent = 2", `concurrent = "four"`},
		{"concurrent = 2", "concurrent = 2\ncheck_interval = 5\nlog_level = \"debug\"\nlisten_address = \"[::1]\"\nconnection_max_age = \"0s\"\nsentry_dsn = \"\"\n[labels]\n  team = \"platform\"\n[session_server]\n  session_timeout = 60"},
		{`  token = "glrt-abc"`, "  token = \"glrt-abc\"\n  token_obtained_at = 2024-05-14T09:21:33+02:00\n  token_expires_at = 2025-05-14T09:21:33Z\n  id = 4711"},
		{`  token = "glrt-abc"`, "  token = \"glrt-abc\"\n  token_obtained_at = \"yesterday\""},
		{`  executor = "docker-autoscaler"`, "  executor = \"docker-autoscaler\"\n  environment = [\"A=1\", \"FF_NETWORK_PER_BUILD=yes\"]\n  unhealthy_interval = 3600000000000\n  clean_git_config = false\n  [runners.feature_flags]\n    FF_NETWORK_PER_BUILD = true\n  [runners.custom_build_dir]\n    enabled = false\n  [runners.cache]\n    Type = \"s3\"\n    [runners.cache.s3]\n      BucketName = \"b\"\n      SecretKey = \"k\""},
		{`  executor = "docker-autoscaler"`, "  executor = \"docker-autoscaler\"\n  builds_dir = \"builds\"\n  [runners.machine]\n    OffPeakPeriods = [\"* * 9-17 * * mon-fri *\"]"},
		{`image = "alpine"`, "image = \"alpine\"\n    pull_policy = [\"always\", 3]\n    memory = \"4g\"\n    cpus = \"1.5\"\n    services_limit = -1\n    [[runners.docker.services]]\n      name = \"postgres\"\n      alias = \"db\""},
		{`image = "alpine"`, "image = \"alpine\"\n    pull_policy = \"if-not-present\"\n    helper_image = \"x\"\n    volumes = [\"/cache\", \"/certs/client\"]\n    [runners.docker.sysctls]\n      \"net.ipv4.ip_forward\" = \"1\""},
		{`    plugin = "aws"`, "    plugin = \"aws\"\n    capacity_per_instance = 2\n    max_instances = 10\n    instance_acquire_timeout = \"5m\"\n    instance_operation_time_buckets = [1.0, 5.0, 30.0]\n    [runners.autoscaler.connector_config]\n      username = \"ec2-user\"\n      timeout = 600000000000\n    [runners.autoscaler.state_storage]\n      enabled = false\n    [runners.autoscaler.scale_throttle]\n      limit = -1"},
		{`      name = "asg"`, "      name = \"asg\"\n      count = 3\n      ratio = 0.5\n      since = 2024-05-14T09:21:33Z\n      day = 2024-05-14\n      at = 09:21:33\n      networks = [ { uuid = \"n1\" }, { uuid = \"n2\" } ]\n      user_data = \"\"\"line1\nline2\n\"\"\"\n      [runners.autoscaler.plugin_config.nested]\n        list = [\"a\", 1, true]"},
		{`      idle_time = "20m0s"`, "      idle_time = \"500ms\"\n      scale_factor = -0.5\n      timezone = \"Mars/Olympus\""},
		{`periods = ["* 8-17 * * mon-fri"]`, "periods = [\"* * *\"]\n      timezone = \"Europe/Berlin\"\n      preemptive_mode = true"},
	} {
		f.Add([]byte(replace(variant[0], variant[1])))
	}
	f.Add([]byte("concurrent = 2\n[[runners]]\n  url = \n"))
	f.Add([]byte("concurrent = 1\n[runners]\nurl = \"https://x\"\n"))
	f.Add([]byte(validDA + "\n[[runners]]\n  token = \"glrt-abc\"\n  url = \"https://gitlab.example.com\"\n  executor = \"shell\"\n  shell = \"powershell\"\n"))
	if example, err := os.ReadFile(examplePath); err == nil {
		f.Add(example)
		// With every optional setting of the example on (see commentedSetting).
		uncomment := regexp.MustCompile("(?m)" + commentedSetting.String())
		f.Add([]byte(uncomment.ReplaceAllString(string(example), "$1$2")))
	}
	// The corpus of real-world files.
	for _, file := range corpusFiles(f) {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}

	// Save syncs the file and its directory: on tmpfs that is free, on a disk it halves the inputs
	// tried per second.
	dir := f.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "config-fuzz-"); err == nil {
		dir = shm
		f.Cleanup(func() { _ = os.RemoveAll(shm) })
	}
	path := filepath.Join(dir, "config.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, warns, err := Parse(data)
		checkWarnings(t, warns)
		if err != nil {
			if cfg != nil {
				t.Fatalf("a config came back with the error %v", err)
			}
			checkProblems(t, err)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(path)
			var fe *FileError
			if !errors.As(err, &fe) || fe.File != path || !strings.HasPrefix(err.Error(), path+": ") {
				t.Fatalf("Load error does not name the file %s: %#v", path, err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}

		saved, again, warns2 := saveAndLoad(t, path, cfg)
		if diff := valueDiff("", reflect.ValueOf(cfg), reflect.ValueOf(again)); diff != "" {
			t.Fatalf("values changed by Save and Load: %s\nsaved:\n%s", diff, saved)
		}
		for _, w := range warns2 {
			if !slices.Contains(warns, Warning{Key: w.Key, Message: w.Message}) {
				t.Fatalf("Save and Load added the warning %v (before: %v)\nsaved:\n%s", w, warns, saved)
			}
		}
		if saved2, _, _ := saveAndLoad(t, path, again); string(saved2) != string(saved) {
			t.Fatalf("second Save differs:\n%s\n---\n%s", saved, saved2)
		}
	})
}

// saveAndLoad Saves cfg to path and Loads it back; it returns the bytes written too.
func saveAndLoad(t *testing.T, path string, cfg *Config) ([]byte, *Config, []Warning) {
	t.Helper()
	if err := Save(path, cfg); err != nil {
		t.Fatalf("accepted config cannot be saved: %v", err)
	}
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	again, warns, err := Load(path)
	if err != nil {
		t.Fatalf("saved config does not load: %v\nsaved:\n%s", err, saved)
	}
	return saved, again, warns
}

func checkWarnings(t *testing.T, warns []Warning) {
	t.Helper()
	for _, w := range warns {
		if w.Key == "" || w.Message == "" || w.File != "" {
			t.Fatalf("warning without key or message, or with a file from Parse: %#v", w)
		}
	}
}

func checkProblems(t *testing.T, err error) {
	t.Helper()
	problems := Problems(err)
	if len(problems) == 0 {
		t.Fatalf("error without problems: %#v", err)
	}
	for _, p := range problems {
		var fe *FieldError
		var se *SyntaxError
		switch {
		case errors.As(p, &fe):
			if fe.Key == "" || !strings.HasPrefix(p.Error(), fe.Key+": ") {
				t.Fatalf("problem does not name its key: %q", p)
			}
		case errors.As(p, &se):
			if se.Line < 1 || !strings.HasPrefix(p.Error(), "line ") {
				t.Fatalf("syntax error does not name its line: %q", p)
			}
		default:
			t.Fatalf("problem names neither key nor line: %#v (%v)", p, p)
		}
	}
}

// valueDiff compares two decoded configs as values and describes the first difference, or returns
// "". What Save cannot keep does not count: an empty table or array equals an absent one, and an
// array of inline tables equals an array of tables (plugin_config holds []any or []map[string]any).
// Date-times must keep instant and offset; NaN equals NaN.
func valueDiff(path string, a, b reflect.Value) string {
	a, b = unwrap(a), unwrap(b)
	differ := func() string { return fmt.Sprintf("%s: %s became %s", path, describe(a), describe(b)) }
	if a.Kind() != b.Kind() {
		return differ()
	}
	switch a.Kind() {
	case reflect.Invalid:
		return ""
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return differ()
			}
			return ""
		}
		return valueDiff(path, a.Elem(), b.Elem())
	case reflect.Struct:
		if a.Type() == timeType {
			at, bt := a.Interface().(time.Time), b.Interface().(time.Time)
			if !at.Equal(bt) || at.Format(time.RFC3339Nano) != bt.Format(time.RFC3339Nano) {
				return differ()
			}
			return ""
		}
		for i := range a.NumField() {
			if d := valueDiff(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i)); d != "" {
				return d
			}
		}
		return ""
	case reflect.Slice, reflect.Array:
		if a.Len() != b.Len() {
			return differ()
		}
		for i := range a.Len() {
			if d := valueDiff(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i)); d != "" {
				return d
			}
		}
		return ""
	case reflect.Map:
		if a.Len() != b.Len() {
			return differ()
		}
		for _, k := range a.MapKeys() {
			if d := valueDiff(fmt.Sprintf("%s[%q]", path, k), a.MapIndex(k), b.MapIndex(k)); d != "" {
				return d
			}
		}
		return ""
	case reflect.Float32, reflect.Float64:
		if x, y := a.Float(), b.Float(); x != y && !(math.IsNaN(x) && math.IsNaN(y)) {
			return differ()
		}
		return ""
	}
	if a.Type() != b.Type() || !a.Equal(b) {
		return differ()
	}
	return ""
}

// unwrap returns the value an interface holds; a nil interface becomes the invalid Value.
func unwrap(v reflect.Value) reflect.Value {
	for v.Kind() == reflect.Interface {
		if v.IsNil() {
			return reflect.Value{}
		}
		v = v.Elem()
	}
	return v
}

func describe(v reflect.Value) string {
	if !v.IsValid() {
		return "nothing"
	}
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		return "&" + describe(v.Elem())
	}
	return fmt.Sprintf("%#v", v.Interface())
}

// valueDiff must see what matters and only that, or the round trip proves nothing.
func TestValueDiff(t *testing.T) {
	base := func() *Config {
		return &Config{Concurrent: 2, Runners: []*RunnerConfig{{Name: "r", RunnerCredentials: RunnerCredentials{Token: "glrt-a"},
			Autoscaler: &AutoscalerConfig{PluginConfig: PluginConfig{"nets": []map[string]any{{"id": int64(1)}}}}}}}
	}
	at := time.Date(2024, 5, 14, 9, 21, 33, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		change func(*Config)
		same   bool
	}{
		{"unchanged", func(*Config) {}, true},
		{"empty labels", func(c *Config) { c.Labels = map[string]string{} }, true},
		{"inline tables as []any", func(c *Config) { c.Runners[0].Autoscaler.PluginConfig["nets"] = []any{map[string]any{"id": int64(1)}} }, true},
		{"token", func(c *Config) { c.Runners[0].Token = "glrt-b" }, false},
		{"plugin value", func(c *Config) { c.Runners[0].Autoscaler.PluginConfig["nets"] = []any{map[string]any{"id": int64(2)}} }, false},
		{"plugin value type", func(c *Config) { c.Runners[0].Autoscaler.PluginConfig["nets"] = []any{map[string]any{"id": 1.0}} }, false},
		{"offset", func(c *Config) { c.Runners[0].TokenExpiresAt = at.In(time.FixedZone("", 3600)) }, false},
		{"pointer set", func(c *Config) { c.SentryDSN = new(string) }, false},
	} {
		a, b := base(), base()
		a.Runners[0].TokenExpiresAt, b.Runners[0].TokenExpiresAt = at, at
		tc.change(b)
		if d := valueDiff("", reflect.ValueOf(a), reflect.ValueOf(b)); (d == "") != tc.same {
			t.Errorf("%s: valueDiff = %q", tc.name, d)
		}
	}
}
