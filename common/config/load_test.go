package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// validDA is a minimal valid docker-autoscaler config; broken variants replace parts of it.
const validDA = `concurrent = 2

[[runners]]
  name = "r"
  url = "https://gitlab.example.com"
  token = "glrt-abc"
  executor = "docker-autoscaler"
  [runners.docker]
    image = "alpine"
  [runners.autoscaler]
    plugin = "aws"
    [runners.autoscaler.plugin_config]
      name = "asg"
    [[runners.autoscaler.policy]]
      idle_count = 1
      idle_time = "20m0s"
    [[runners.autoscaler.policy]]
      periods = ["* 8-17 * * mon-fri"]
      idle_time = "30m0s"
`

func replace(old, new string) string {
	if !strings.Contains(validDA, old) {
		panic("test setup: " + old + " not in validDA")
	}
	return strings.Replace(validDA, old, new, 1)
}

func TestValidBaseLoads(t *testing.T) {
	cfg, warns, err := Load(writeConfig(t, validDA))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Fatalf("warnings: %v", warns)
	}
	if got := cfg.Runners[0].Autoscaler.Policy[1].IdleTime; got != 30*time.Minute {
		t.Fatalf("idle_time = %v", got)
	}
}

func TestBrokenConfigs(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{"syntax error has a line number", "concurrent = 2\n[[runners]]\n  url = \n", []string{"line 3", "invalid TOML"}},
		{"duplicate key", "concurrent = 2\nconcurrent = 3\n", []string{"line 2", "invalid TOML"}},
		{"concurrent zero", replace("concurrent = 2", "concurrent = 0"), []string{"concurrent: must be at least 1"}},
		{"concurrent negative", replace("concurrent = 2", "concurrent = -3"), []string{"concurrent: must be at least 1"}},
		{"concurrent string", replace("concurrent = 2", `concurrent = "four"`), []string{`concurrent: got string "four", want an integer`}},
		{"check_interval as duration", replace("concurrent = 2", "concurrent = 2\ncheck_interval = \"3s\""), []string{`check_interval: got string "3s", want an integer`}},
		{"log level", replace("concurrent = 2", "concurrent = 2\nlog_level = \"verbose\""), []string{`log_level: unsupported log_level "verbose"`}},
		{"runners not an array", "concurrent = 1\n[runners]\nurl = \"https://x\"\n", []string{"runners: got a table, want an array"}},
		{"missing url", replace(`  url = "https://gitlab.example.com"`+"\n", ""), []string{"runners[0].url: missing"}},
		{"url scheme", replace("https://gitlab.example.com", "ftp://gitlab.example.com"), []string{"runners[0].url: unsupported URL scheme", "ftp://gitlab.example.com"}},
		{"url without host", replace("https://gitlab.example.com", "https://"), []string{"runners[0].url: no host"}},
		{"missing token", replace(`  token = "glrt-abc"`+"\n", ""), []string{"runners[0].token: missing"}},
		{"missing executor", replace(`  executor = "docker-autoscaler"`+"\n", ""), []string{"runners[0].executor: missing"}},
		{"unknown executor", replace(`executor = "docker-autoscaler"`, `executor = "dockr"`), []string{`runners[0].executor: unknown executor "dockr"`}},
		{"negative limit", replace(`  executor = "docker-autoscaler"`, "  executor = \"docker-autoscaler\"\n  limit = -1"), []string{"runners[0].limit: must not be negative"}},
		{"negative request_concurrency", replace(`  executor = "docker-autoscaler"`, "  executor = \"docker-autoscaler\"\n  request_concurrency = -2"), []string{"runners[0].request_concurrency: must not be negative"}},
		{"environment without =", replace(`  executor = "docker-autoscaler"`, "  executor = \"docker-autoscaler\"\n  environment = [\"A=1\", \"NOVALUE\"]"), []string{`runners[0].environment[1]: want KEY=value, got "NOVALUE"`}},
		{"relative builds_dir", replace(`  executor = "docker-autoscaler"`, "  executor = \"docker-autoscaler\"\n  builds_dir = \"builds\""), []string{`runners[0].builds_dir: must be an absolute path, got "builds"`}},
		{"bad token date", replace(`  token = "glrt-abc"`, "  token = \"glrt-abc\"\n  token_obtained_at = \"yesterday\""), []string{`runners[0].token_obtained_at: invalid date-time "yesterday"`}},
		{"feature flag not bool", replace(`  executor = "docker-autoscaler"`, "  executor = \"docker-autoscaler\"\n  [runners.feature_flags]\n    FF_NETWORK_PER_BUILD = \"yes\""), []string{`runners[0].feature_flags.FF_NETWORK_PER_BUILD: got string "yes", want true or false`}},
		{"docker-autoscaler without autoscaler", strings.Split(validDA, "  [runners.autoscaler]")[0], []string{"runners[0].autoscaler: missing", "docker-autoscaler"}},
		{"docker without docker table", "concurrent = 1\n[[runners]]\nurl = \"https://x.example\"\ntoken = \"t\"\nexecutor = \"docker\"\n", []string{"runners[0].docker: missing"}},
		{"plugin missing", replace(`    plugin = "aws"`+"\n", ""), []string{"runners[0].autoscaler.plugin: missing"}},
		{"bad pull_policy", replace(`image = "alpine"`, "image = \"alpine\"\n    pull_policy = \"sometimes\""), []string{`runners[0].docker.pull_policy: unsupported pull_policy "sometimes"`}},
		{"bad pull_policy in list", replace(`image = "alpine"`, "image = \"alpine\"\n    pull_policy = [\"always\", \"nope\"]"), []string{`runners[0].docker.pull_policy: unsupported pull_policy "nope"`}},
		{"pull_policy wrong type", replace(`image = "alpine"`, "image = \"alpine\"\n    pull_policy = [\"always\", 3]"), []string{"runners[0].docker.pull_policy: element 1 is integer 3, want a string"}},
		{"bad memory", replace(`image = "alpine"`, "image = \"alpine\"\n    memory = \"lots\""), []string{`runners[0].docker.memory: invalid size "lots"`}},
		{"wait_for_services_timeout", replace(`image = "alpine"`, "image = \"alpine\"\n    wait_for_services_timeout = -2"), []string{"runners[0].docker.wait_for_services_timeout: must be -1"}},
		{"service without name", replace(`image = "alpine"`, "image = \"alpine\"\n    [[runners.docker.services]]\n      alias = \"db\""), []string{"runners[0].docker.services[0].name: missing"}},
		{"bad idle_time string", replace(`idle_time = "30m0s"`, `idle_time = "20 minutes"`), []string{`runners[0].autoscaler.policy[1].idle_time: invalid duration "20 minutes"`}},
		{"idle_time below 1s", replace(`idle_time = "20m0s"`, `idle_time = "500ms"`), []string{"runners[0].autoscaler.policy[0].idle_time: must be at least 1s"}},
		{"bad cron period", replace(`periods = ["* 8-17 * * mon-fri"]`, `periods = ["* * *"]`), []string{`runners[0].autoscaler.policy[1].periods[0]: invalid cron period "* * *"`}},
		{"docker+machine period syntax", replace(`periods = ["* 8-17 * * mon-fri"]`, `periods = ["* * 9-17 * * mon-fri *"]`), []string{`runners[0].autoscaler.policy[1].periods[0]: invalid cron period`}},
		{"unknown timezone", replace(`      idle_count = 1`, "      idle_count = 1\n      timezone = \"Mars/Olympus\""), []string{`runners[0].autoscaler.policy[0].timezone: unknown timezone "Mars/Olympus"`}},
		{"negative idle_count", replace(`idle_count = 1`, `idle_count = -1`), []string{"runners[0].autoscaler.policy[0].idle_count: must not be negative"}},
		{"negative scale_factor", replace(`      idle_count = 1`, "      idle_count = 1\n      scale_factor = -0.5"), []string{"runners[0].autoscaler.policy[0].scale_factor: must not be negative"}},
		{"nan scale_factor", replace(`      idle_count = 1`, "      idle_count = 1\n      scale_factor = nan"), []string{"runners[0].autoscaler.policy[0].scale_factor: must be a finite number"}},
		{"negative capacity", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    capacity_per_instance = -1"), []string{"runners[0].autoscaler.capacity_per_instance: must not be negative"}},
		{"infinite bucket", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    instance_creation_time_buckets = [5.0, inf]"), []string{"runners[0].autoscaler.instance_creation_time_buckets: bucket bound +Inf is not a finite number"}},
		{"negative max_use_count", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    max_use_count = -1"), []string{"runners[0].autoscaler.max_use_count: must not be negative"}},
		{"duration as bool", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    update_interval = true"), []string{"runners[0].autoscaler.update_interval: invalid duration: got boolean true"}},
		{"negative duration", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    instance_acquire_timeout = \"-5m\""), []string{"runners[0].autoscaler.instance_acquire_timeout: must not be negative"}},
		{"scale_throttle limit", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.scale_throttle]\n      limit = -5"), []string{"runners[0].autoscaler.scale_throttle.limit: must be -1"}},
		{"forecast history too short", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.forecast]\n      enabled = true\n      history = \"2h\""), []string{"runners[0].autoscaler.forecast.history: must be between 24h0m0s and 1344h0m0s"}},
		{"forecast quantile above 1", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.forecast]\n      enabled = true\n      quantile = 1.5"), []string{"runners[0].autoscaler.forecast.quantile: must be above 0 and at most 1"}},
		{"forecast negative lead", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.forecast]\n      lead = \"-1m\""), []string{"runners[0].autoscaler.forecast.lead: must not be negative"}},
		{"state backend unknown", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.state_storage]\n      backend = \"etcd\""), []string{`runners[0].autoscaler.state_storage.backend: unknown backend "etcd"`}},
		{"dynamodb without table", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.state_storage]\n      backend = \"dynamodb\""), []string{"runners[0].autoscaler.state_storage.dynamodb_table: missing"}},
		{"dynamodb with state off", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.state_storage]\n      enabled = false\n      backend = \"dynamodb\"\n      dynamodb_table = \"t\""), []string{`runners[0].autoscaler.state_storage.backend: is "dynamodb" but enabled = false`}},
		{"dynamodb key on the file backend", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.state_storage]\n      dynamodb_region = \"eu-west-1\""), []string{`runners[0].autoscaler.state_storage.dynamodb_region: is set but backend is "file"`}},
		{"lease_duration on the file backend", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.state_storage]\n      lease_duration = \"20s\""), []string{`runners[0].autoscaler.state_storage.lease_duration: is set but backend is "file"`}},
		{"lease_duration too short", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.state_storage]\n      backend = \"dynamodb\"\n      dynamodb_table = \"t\"\n      lease_duration = \"1s\""), []string{"runners[0].autoscaler.state_storage.lease_duration: must be at least 3s"}},
		{"connector protocol", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.connector_config]\n      protocol = \"winrm\""), []string{`runners[0].autoscaler.connector_config.protocol: unsupported protocol "winrm"`}},
		{"connector timeout", replace(`    plugin = "aws"`, "    plugin = \"aws\"\n    [runners.autoscaler.connector_config]\n      timeout = \"ten minutes\""), []string{`runners[0].autoscaler.connector_config.timeout: invalid duration "ten minutes"`}},
		{"cache type", replace(`  [runners.docker]`, "  [runners.cache]\n    Type = \"nfs\"\n  [runners.docker]"), []string{`runners[0].cache.Type: unsupported cache Type "nfs"`}},
		{"second runner named by index", validDA + "\n[[runners]]\n  token = \"t2\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"alpine\"\n", []string{"runners[1].url: missing"}},
		{"every problem at once", strings.NewReplacer(
			"concurrent = 2", "concurrent = 0",
			`  token = "glrt-abc"`+"\n", "",
			`idle_time = "30m0s"`, `idle_time = "20 minutes"`,
			`image = "alpine"`, "image = \"alpine\"\n    pull_policy = \"sometimes\"",
		).Replace(validDA), []string{
			"4 problems",
			"concurrent: must be at least 1",
			"runners[0].token: missing",
			`runners[0].autoscaler.policy[1].idle_time: invalid duration "20 minutes"`,
			"runners[0].docker.pull_policy: unsupported pull_policy",
		}},
	}
	if len(tests) < 20 {
		t.Fatalf("want at least 20 broken configs, have %d", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			cfg, _, err := Load(path)
			if err == nil {
				t.Fatalf("loaded without error: %+v", cfg)
			}
			if cfg != nil {
				t.Error("a config came back with the error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, path+": ") {
				t.Errorf("error does not start with the file name: %s", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			// Type problems are ours, not the decoder's raw message.
			if strings.Contains(msg, "(last key") || strings.Contains(msg, ": toml: ") {
				t.Errorf("raw decoder error leaked: %s", msg)
			}
			var fe *FileError
			if !errors.As(err, &fe) || fe.File != path || len(fe.Errs) == 0 {
				t.Errorf("not a *FileError for %s: %#v", path, err)
			}
		})
	}
}

func TestSyntaxErrorWrapsParseError(t *testing.T) {
	_, _, err := Load(writeConfig(t, "concurrent = 1\n\nlimit = = 3\n"))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 3 {
		t.Fatalf("want a *SyntaxError on line 3, got %v", err)
	}
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		t.Fatal("the toml.ParseError is not reachable with errors.As")
	}
}

func TestMissingFile(t *testing.T) {
	_, _, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want fs.ErrNotExist, got %v", err)
	}
}

func TestDefaultConcurrentWhenAbsent(t *testing.T) {
	cfg, _, err := Load(writeConfig(t, strings.Replace(validDA, "concurrent = 2\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Concurrent != 1 {
		t.Fatalf("concurrent = %d, want upstream's 1", cfg.Concurrent)
	}
}

func TestDurationsAsStringsAndNanoseconds(t *testing.T) {
	content := replace(`    plugin = "aws"`, `    plugin = "aws"
    update_interval = "1m30s"
    update_interval_when_expecting = 2000000000
    instance_acquire_timeout = "20m"
    [runners.autoscaler.connector_config]
      timeout = 1800000000000
      keepalive = "30s"`)
	content = strings.Replace(content, `  executor = "docker-autoscaler"`, "  executor = \"docker-autoscaler\"\n  unhealthy_interval = \"1h30m\"", 1)
	content = strings.Replace(content, "concurrent = 2", "concurrent = 2\nconnection_max_age = 60000000000", 1)
	cfg, warns, err := Load(writeConfig(t, content))
	if err != nil || len(warns) != 0 {
		t.Fatalf("err=%v warnings=%v", err, warns)
	}
	a := cfg.Runners[0].Autoscaler
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"update_interval", a.UpdateInterval, 90 * time.Second},
		{"update_interval_when_expecting", a.UpdateIntervalWhenExpecting, 2 * time.Second},
		{"instance_acquire_timeout", a.InstanceAcquireTimeout, 20 * time.Minute},
		{"connector_config.timeout", a.ConnectorConfig.Timeout, 30 * time.Minute},
		{"connector_config.keepalive", a.ConnectorConfig.Keepalive, 30 * time.Second},
		{"unhealthy_interval", cfg.Runners[0].GetUnhealthyInterval(), 90 * time.Minute},
		{"connection_max_age", cfg.GetConnectionMaxAge(), time.Minute},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestTokenDates(t *testing.T) {
	content := strings.Replace(validDA, `  token = "glrt-abc"`, `  token = "glrt-abc"
  token_obtained_at = 2024-05-14T09:21:33Z
  token_expires_at = "2025-05-14T09:21:33+02:00"`, 1)
	cfg, _, err := Load(writeConfig(t, content))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Runners[0]
	if want := time.Date(2024, 5, 14, 9, 21, 33, 0, time.UTC); !r.TokenObtainedAt.Equal(want) {
		t.Errorf("token_obtained_at = %v, want %v", r.TokenObtainedAt, want)
	}
	if want := time.Date(2025, 5, 14, 7, 21, 33, 0, time.UTC); !r.TokenExpiresAt.Equal(want) {
		t.Errorf("token_expires_at = %v, want %v", r.TokenExpiresAt, want)
	}
}

func TestPullPolicyStringOrArray(t *testing.T) {
	for _, c := range []struct {
		value string
		want  []string
	}{
		{`"if-not-present"`, []string{"if-not-present"}},
		{`["if-not-present", "always"]`, []string{"if-not-present", "always"}},
	} {
		cfg, _, err := Load(writeConfig(t, replace(`image = "alpine"`, "image = \"alpine\"\n    pull_policy = "+c.value)))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := cfg.Runners[0].Docker.GetPullPolicies(); err != nil || !slices.Equal(got, c.want) {
			t.Errorf("pull_policy = %s: got %v, %v; want %v", c.value, got, err, c.want)
		}
	}
}

func TestUnknownKeysAreWarnedByPath(t *testing.T) {
	content := replace(`  [runners.docker]`, `  colour = "blue"
  [runners.machine]
    IdleCount = 2
    OffPeakPeriods = ["* * 0-8 * * mon-fri *"]
  [runners.kubernetes]
  [runners.docker]
    imgae = "typo"`)
	content = strings.Replace(content, "concurrent = 2", "concurrent = 2\n[experimental.usage_logger]\nenabled = true\n", 1)
	content = strings.Replace(content, "concurrent = 2\n[experimental", "concurrent = 2\n\n[experimental", 1)
	cfg, warns, err := Load(writeConfig(t, content))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runners[0].Docker.Image != "alpine" {
		t.Fatal("known keys were not decoded")
	}
	want := map[string]string{
		"runners[0].colour":                 "unknown key",
		"runners[0].machine.IdleCount":      "docker+machine",
		"runners[0].machine.OffPeakPeriods": "OffPeak",
		"runners[0].kubernetes":             "kubernetes executor",
		"runners[0].docker.imgae":           "unknown key",
		"experimental.usage_logger.enabled": "experimental",
	}
	got := map[string]string{}
	for _, w := range warns {
		if !strings.HasPrefix(w.String(), w.File+": "+w.Key+": ") || w.File == "" {
			t.Errorf("warning does not name file and key: %q", w.String())
		}
		got[w.Key] = w.Message
	}
	for key, sub := range want {
		if !strings.Contains(got[key], sub) {
			t.Errorf("warning for %s = %q, want it to mention %q", key, got[key], sub)
		}
	}
	if len(got) != len(want) {
		t.Errorf("warnings %v, want exactly %v", got, want)
	}
}

func TestUnsupportedExecutorIsAWarning(t *testing.T) {
	for _, exec := range []string{"docker+machine", "shell", "kubernetes"} {
		content := "concurrent = 1\n[[runners]]\nurl = \"https://x.example\"\ntoken = \"t\"\nexecutor = \"" + exec + "\"\n"
		cfg, warns, err := Load(writeConfig(t, content))
		if err != nil {
			t.Fatalf("%s: %v", exec, err)
		}
		if cfg.Runners[0].ExecutorSupported() {
			t.Errorf("%s reported as supported", exec)
		}
		if !slices.ContainsFunc(warns, func(w Warning) bool {
			return w.Key == "runners[0].executor" && strings.Contains(w.Message, `"`+exec+`"`)
		}) {
			t.Errorf("%s: no warning naming the executor: %v", exec, warns)
		}
	}
}

// A runner entry whose executor fleetrunner skips is written for that executor (a Windows shell,
// an npipe Docker host, Windows paths): it must load with a warning, not fail the whole file.
func TestSkippedExecutorSettingsDoNotFail(t *testing.T) {
	content := validDA + `
[[runners]]
  name = "windows"
  url = "https://gitlab.example.com"
  token = "glrt-win"
  executor = "docker-windows"
  shell = "pwsh"
  builds_dir = "C:\\builds"
  cache_dir = "C:\\cache"
  [runners.docker]
    image = "mcr.microsoft.com/windows/servercore:ltsc2022"
    host = "npipe:////./pipe/docker_engine"
    pull_policy = "if-not-present"
  [runners.autoscaler]
    plugin = "aws"
    [runners.autoscaler.connector_config]
      os = "windows"
      protocol = "winrm"
`
	cfg, warns, err := Load(writeConfig(t, content))
	if err != nil {
		t.Fatalf("entry of a skipped executor failed the file: %v", err)
	}
	if cfg.Runners[1].ExecutorSupported() || cfg.Runners[1].Shell != "pwsh" {
		t.Fatalf("runners[1] = %+v", cfg.Runners[1])
	}
	if !slices.ContainsFunc(warns, func(w Warning) bool { return w.Key == "runners[1].executor" }) {
		t.Errorf("no warning for runners[1].executor: %v", warns)
	}
	// Credentials are still checked: the entry must identify a runner.
	_, _, err = Load(writeConfig(t, strings.Replace(content, `token = "glrt-win"`, `token = ""`, 1)))
	if err == nil || !strings.Contains(err.Error(), "runners[1].token") {
		t.Fatalf("missing token of a skipped entry: err = %v", err)
	}
}

// corpusFiles are public config.toml files kept in testdata/corpus (see its SOURCES.md).
func corpusFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no config corpus in testdata/corpus: %v", err)
	}
	return files
}

var corpusExecutor = regexp.MustCompile(`(?m)^\s*executor\s*=\s*"([^"]+)"`)

func TestCorpusLoads(t *testing.T) {
	files := corpusFiles(t)
	if len(files) != 19 {
		t.Errorf("corpus has %d files, want 19", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, warns, err := Load(f)
			if err != nil {
				t.Fatalf("does not load: %v", err)
			}
			if len(cfg.Runners) == 0 {
				t.Fatal("no runners decoded")
			}
			for _, m := range corpusExecutor.FindAllStringSubmatch(string(data), -1) {
				switch m[1] {
				case ExecutorDockerAutoscaler, ExecutorDocker:
				default:
					if !slices.ContainsFunc(warns, func(w Warning) bool {
						return strings.HasSuffix(w.Key, ".executor") && strings.Contains(w.Message, m[1])
					}) {
						t.Errorf("executor %q loaded without a warning naming it: %v", m[1], warns)
					}
				}
			}
			if strings.Contains(string(data), "[runners.machine]") &&
				!slices.ContainsFunc(warns, func(w Warning) bool { return strings.HasPrefix(w.Key, "runners[0].machine.") }) {
				t.Errorf("[runners.machine] loaded without a warning naming its keys: %v", warns)
			}
			if strings.Contains(string(data), "OffPeakPeriods") &&
				!slices.ContainsFunc(warns, func(w Warning) bool { return w.Key == "runners[0].machine.OffPeakPeriods" }) {
				t.Errorf("OffPeakPeriods loaded without a warning naming it: %v", warns)
			}
			for _, r := range cfg.Runners {
				if r.Autoscaler == nil {
					continue
				}
				if _, err := r.Autoscaler.PluginConfig.JSON(); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// The schema walk must find exactly the keys the decoder leaves undecoded, so that warnings and
// decoding agree.
func TestUnknownKeysMatchDecoderUndecoded(t *testing.T) {
	for _, f := range corpusFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cfg Config
		md, err := toml.Decode(string(data), &cfg)
		if err != nil {
			t.Fatal(err)
		}
		var undecoded []string
		for _, k := range md.Undecoded() {
			// The decoder does not mark what it hands over inside a free-form table.
			if strings.HasPrefix(k.String(), "runners.autoscaler.plugin_config.") {
				continue
			}
			if typ := md.Type(k...); typ != "Hash" && typ != "ArrayHash" {
				undecoded = append(undecoded, k.String())
			}
		}
		var raw map[string]any
		if _, err := toml.Decode(string(data), &raw); err != nil {
			t.Fatal(err)
		}
		check := &schemaCheck{}
		check.table(keyPath{}, raw, reflect.TypeFor[Config]())
		var warned []string
		for _, w := range check.warns {
			warned = append(warned, regexp.MustCompile(`\[\d+\]`).ReplaceAllString(w.Key, ""))
		}
		slices.Sort(undecoded)
		slices.Sort(warned)
		if !slices.Equal(undecoded, slices.Compact(warned)) {
			t.Errorf("%s: decoder leaves %v undecoded, schema walk warns about %v", filepath.Base(f), undecoded, warned)
		}
	}
}

func TestCorpusValues(t *testing.T) {
	files := corpusFiles(t)
	find := func(prefix string) string {
		for _, f := range files {
			if strings.HasPrefix(filepath.Base(f), prefix) {
				return f
			}
		}
		t.Fatalf("corpus file %s* missing", prefix)
		return ""
	}

	cfg, _, err := Load(find("05-"))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Runners[0]
	if r.Autoscaler.ConnectorConfig.Timeout != 30*time.Minute {
		t.Errorf("05: integer-nanosecond timeout = %v, want 30m", r.Autoscaler.ConnectorConfig.Timeout)
	}
	if !r.TokenObtainedAt.Equal(time.Date(2024, 11, 1, 9, 59, 16, 0, time.UTC)) || !r.TokenExpiresAt.IsZero() {
		t.Errorf("05: token dates %v / %v", r.TokenObtainedAt, r.TokenExpiresAt)
	}
	if r.Autoscaler.UpdateIntervalWhenExpecting != 5*time.Second {
		t.Errorf("05: update_interval_when_expecting = %v", r.Autoscaler.UpdateIntervalWhenExpecting)
	}

	cfg, _, err = Load(find("19-"))
	if err != nil {
		t.Fatal(err)
	}
	r = cfg.Runners[0]
	if !r.TokenObtainedAt.Equal(time.Date(2024, 5, 14, 9, 21, 33, 0, time.UTC)) || !r.TokenExpiresAt.IsZero() {
		t.Errorf("19: token dates %v / %v", r.TokenObtainedAt, r.TokenExpiresAt)
	}
	if !r.FeatureFlag(FFNetworkPerBuild) {
		t.Error("19: [runners.feature_flags] FF_NETWORK_PER_BUILD = true not read")
	}

	cfg, _, err = Load(find("07-"))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Runners[0].Autoscaler.Policy
	if len(p) != 2 || p[1].Timezone != "Europe/Berlin" || p[1].IdleTime != 30*time.Minute || !p[1].GetPreemptiveMode() || p[0].GetPreemptiveMode() {
		t.Errorf("07: policies %+v", p)
	}
	if !cfg.Runners[0].FeatureFlag(FFNetworkPerBuild) {
		t.Error("07: FF_NETWORK_PER_BUILD=true in environment not read")
	}

	cfg, _, err = Load(find("14-"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cfg.Runners[2].Docker.GetPullPolicies(); err != nil || !slices.Equal(got, []string{"if-not-present"}) {
		t.Errorf("14: pull_policy string read as %v, %v", got, err)
	}
}

// The plugin receives plugin_config exactly: nested tables, inline tables in arrays, multi-line
// strings and numbers, as JSON.
func TestPluginConfigJSON(t *testing.T) {
	const want = `{"boot_time":"10m","cloud":"runner","count":3,"nested":{"deeper":{"flag":true,"ratio":0.5},"list":["a","b"]},` +
		`"networks":[{"uuid":"n1"},{"uuid":"n2"}],"since":"2024-05-14T09:21:33Z","user_data":"line1\nline2\n"}`
	content := replace(`      name = "asg"`, `      cloud = "runner"
      boot_time = "10m"
      count = 3
      since = 2024-05-14T09:21:33Z
      networks = [ { uuid = "n1" }, { uuid = "n2" } ]
      user_data = """line1
line2
"""
      [runners.autoscaler.plugin_config.nested]
        list = ["a", "b"]
        [runners.autoscaler.plugin_config.nested.deeper]
          flag = true
          ratio = 0.5`)
	path := writeConfig(t, content)
	cfg, warns, err := Load(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("err=%v warnings=%v", err, warns)
	}
	got, err := cfg.Runners[0].Autoscaler.PluginConfig.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("plugin JSON\n got %s\nwant %s", got, want)
	}

	// And the same bytes after a Save and a reload.
	if err := Save(path, cfg); err != nil {
		t.Fatal(err)
	}
	cfg2, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got2, err := cfg2.Runners[0].Autoscaler.PluginConfig.JSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(got2) != want {
		t.Fatalf("plugin JSON after Save\n got %s\nwant %s", got2, want)
	}

	if b, err := PluginConfig(nil).JSON(); err != nil || string(b) != "{}" {
		t.Fatalf("absent plugin_config: %s, %v", b, err)
	}
}

func TestCorpusPluginConfigNested(t *testing.T) {
	var f string
	for _, c := range corpusFiles(t) {
		if strings.HasPrefix(filepath.Base(c), "12-") {
			f = c
		}
	}
	if f == "" {
		t.Fatal("corpus file 12-* missing")
	}
	cfg, _, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.Runners[0].Autoscaler.PluginConfig.JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"server_spec":{`,
		`"networks":[{"uuid":"f05e7f64-9e0f-4c5c-acb0-b636000d7301"}]`,
		`"scheduler_hints":{"group":"a9c941cb-5b34-46e0-8fc6-7471e3b77c75"}`,
		`"tags":["GitLab","CI","Docker","Scaling"]`,
		`"use_ignition":true`,
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("plugin JSON lacks %s:\n%s", want, got)
		}
	}
}

// Upstream's helper image settings load, with a warning that fleetrunner uses its own helper.
func TestHelperImageKeysAreWarned(t *testing.T) {
	for _, line := range []string{
		`helper_image = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-latest"`,
		`helper_image_flavor = "ubuntu"`,
		`helper_image_autoset_arch_and_os = true`,
	} {
		key, _, _ := strings.Cut(line, " =")
		cfg, warns, err := Load(writeConfig(t, replace(`  [runners.docker]`, "  [runners.docker]\n    "+line)))
		if err != nil || cfg.Runners[0].Docker.Image != "alpine" {
			t.Fatalf("%s: err %v", line, err)
		}
		if !slices.ContainsFunc(warns, func(w Warning) bool {
			return w.Key == "runners[0].docker."+key && strings.Contains(w.Message, "own helper image")
		}) {
			t.Errorf("%s: no warning naming runners[0].docker.%s: %v", line, key, warns)
		}
	}
}
