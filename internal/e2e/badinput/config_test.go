package badinput_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput runs the rows that need the fleetrunner binary; it is built once for all of them.
func TestBadInput(t *testing.T) {
	f := newFleetrunner(t)
	t.Run("config", func(t *testing.T) { runRows(t, configRows(f)) })
	t.Run("plugin_config", func(t *testing.T) { runRows(t, pluginConfigRows(f)) })
	t.Run("cli", func(t *testing.T) { runRows(t, cliRows(f)) })
	t.Run("aws", func(t *testing.T) { runRows(t, awsRows(f)) })
}

// start is `fleetrunner run -c` on a config file holding text, which must be refused. The file's
// directory reads $DIR in what it returns, so that rows can pin the path the operator sees.
func (f *fleetrunner) start(t *testing.T, text string) string {
	t.Helper()
	path := configFile(t, text)
	return strings.ReplaceAll(f.fails(t, "run", "-c", path), filepath.Dir(path), "$DIR")
}

// list is `fleetrunner list -c` on a config file holding text, which loads with warnings.
func (f *fleetrunner) list(t *testing.T, text string) string {
	t.Helper()
	path := configFile(t, text)
	return strings.ReplaceAll(f.succeeds(t, "list", "-c", path), filepath.Dir(path), "$DIR")
}

func configRows(f *fleetrunner) []row {
	return []row{
		{
			name: "broken TOML", input: "a string that is never closed",
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `image = "busybox:latest"`, `image = "busybox:latest`))
			},
			want: []string{"ERROR: $DIR/config.toml: line 11: invalid TOML:"},
		},
		{
			name: "empty file", input: "config.toml of zero bytes",
			seen: func(t *testing.T) string { return f.start(t, "") },
			want: []string{"ERROR: config file $DIR/config.toml defines no [[runners]] (is it empty or cut short?); register one with `fleetrunner register`, or restore the file"},
		},
		{
			name: "no runners", input: "global settings only",
			seen: func(t *testing.T) string { return f.start(t, "concurrent = 4\ncheck_interval = 3\n") },
			want: []string{"ERROR: config file $DIR/config.toml defines no [[runners]]", "register one with `fleetrunner register`"},
		},
		{
			name: "missing file", input: "-c names a file that does not exist",
			seen: func(t *testing.T) string {
				dir := t.TempDir()
				return strings.ReplaceAll(f.fails(t, "run", "-c", filepath.Join(dir, "config.toml")), dir, "$DIR")
			},
			want: []string{"ERROR: config file $DIR/config.toml does not exist: register a runner first (fleetrunner register) or pass -c/--config"},
		},
		{
			name: "directory", input: "-c names a directory",
			seen: func(t *testing.T) string {
				dir := t.TempDir()
				if err := os.Mkdir(filepath.Join(dir, "config.toml"), 0o700); err != nil {
					t.Fatal(err)
				}
				return strings.ReplaceAll(f.fails(t, "run", "-c", filepath.Join(dir, "config.toml")), dir, "$DIR")
			},
			want: []string{"ERROR: config file $DIR/config.toml cannot be read (pass a readable file with -c/--config): read $DIR/config.toml: is a directory"},
		},
		{
			name: "unknown executor", input: `executor = "dokcer"`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `executor = "docker-autoscaler"`, `executor = "dokcer"`))
			},
			want: []string{`ERROR: $DIR/config.toml: runners[0].executor: unknown executor "dokcer" (fleetrunner runs "docker-autoscaler" and "docker")`},
		},
		{
			name: "upstream-only executor", input: `executor = "shell", the only runner`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `executor = "docker-autoscaler"`, `executor = "shell"`))
			},
			want: []string{`executor \"shell\" is not run by fleetrunner (it runs \"docker-autoscaler\" and \"docker\"); this runner entry is skipped" key="runners[0].executor"`,
				"ERROR: config file $DIR/config.toml has no [[runners]] entry this build can serve (executor docker or docker-autoscaler; the others are named in the warnings above)"},
		},
		{
			name: "concurrent zero", input: "concurrent = 0",
			seen: func(t *testing.T) string { return f.start(t, edited(t, "concurrent = 1", "concurrent = 0")) },
			want: []string{"$DIR/config.toml: concurrent: must be at least 1 (the number of jobs run at once across all runners)"},
		},
		{
			name: "negative capacity", input: "capacity_per_instance = -2",
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, "capacity_per_instance = 1", "capacity_per_instance = -2"))
			},
			want: []string{"$DIR/config.toml: runners[0].autoscaler.capacity_per_instance: must not be negative"},
		},
		{
			name: "negative shutdown_timeout", input: "shutdown_timeout = -5",
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, "shutdown_timeout = 5", "shutdown_timeout = -5"))
			},
			want: []string{"$DIR/config.toml: shutdown_timeout: must not be negative (seconds; 0 means the default 30)"},
		},
		{
			name: "duration in words", input: `idle_time = "5 minutes"`,
			seen: func(t *testing.T) string { return f.start(t, edited(t, `idle_time = "5m"`, `idle_time = "5 minutes"`)) },
			want: []string{`$DIR/config.toml: runners[0].autoscaler.policy[0].idle_time: invalid duration "5 minutes" (write a Go duration such as "20m0s", "90s" or "1h30m")`},
		},
		{
			name: "duration as a number", input: "idle_time = 300 (read as nanoseconds)",
			seen: func(t *testing.T) string { return f.start(t, edited(t, `idle_time = "5m"`, `idle_time = 300`)) },
			want: []string{`$DIR/config.toml: runners[0].autoscaler.policy[0].idle_time: must be at least 1s (or 0), got 300ns (write a duration such as "20m"; a bare number counts nanoseconds)`},
		},
		{
			name: "string for an integer", input: `concurrent = "4"`,
			seen: func(t *testing.T) string { return f.start(t, edited(t, "concurrent = 1", `concurrent = "4"`)) },
			want: []string{`$DIR/config.toml: concurrent: got string "4", want an integer`},
		},
		{
			name: "table for a string", input: "image given as a table",
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `image = "busybox:latest"`, `image = { name = "busybox" }`))
			},
			want: []string{"$DIR/config.toml: runners[0].docker.image: got a table, want a string"},
		},
		{
			name: "bad pull_policy", input: `pull_policy = "sometimes"`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `image = "busybox:latest"`, "image = \"busybox:latest\"\n    pull_policy = \"sometimes\""))
			},
			want: []string{`$DIR/config.toml: runners[0].docker.pull_policy: unsupported pull_policy "sometimes" (want always, if-not-present or never)`},
		},
		{
			name: "misspelt key", input: "capacity_per_instanse instead of capacity_per_instance", //nolint:misspell // a deliberate typo
			seen: func(t *testing.T) string {
				return f.list(t, edited(t, "capacity_per_instance = 1", "capacity_per_instanse = 1")) //nolint:misspell // a deliberate typo
			},
			want: []string{`key="runners[0].autoscaler.capacity_per_instanse"`, "unknown key"}, //nolint:misspell // a deliberate typo
		},
		{
			name: "no autoscaler table", input: "docker-autoscaler without [runners.autoscaler]",
			seen: func(t *testing.T) string {
				text := baseConfig[:strings.Index(baseConfig, "  [runners.autoscaler]")]
				return f.start(t, text)
			},
			want: []string{`$DIR/config.toml: runners[0].autoscaler: missing: executor "docker-autoscaler" needs a [runners.autoscaler] table (plugin, capacity, policy)`},
		},
		{
			name: "no token", input: "the runner's token line deleted",
			seen: func(t *testing.T) string { return f.start(t, edited(t, `token = "glrt-badinput-token"`, "")) },
			want: []string{"$DIR/config.toml: runners[0].token: missing (the runner authentication token; run `fleetrunner register`)"},
		},
		{
			name: "bad url", input: `url = "gitlab.example.com"`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `url = "http://127.0.0.1:9"`, `url = "gitlab.example.com"`))
			},
			want: []string{`$DIR/config.toml: runners[0].url: unsupported URL scheme in "gitlab.example.com" (want http:// or https://)`},
		},
		{
			name: "bad cron period", input: `periods = ["* * *"]`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, "idle_count = 0", "idle_count = 0\n      periods = [\"* * *\"]"))
			},
			want: []string{`$DIR/config.toml: runners[0].autoscaler.policy[0].periods[0]: invalid cron period "* * *"`, "want 5 fields"},
		},
		{
			name: "bad listen_address", input: `listen_address = "localhost:metrics"`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, "check_interval = 1", "check_interval = 1\nlisten_address = \"localhost:metrics\""))
			},
			want: []string{`$DIR/config.toml: listen_address: invalid listen address "localhost:metrics" (want host:port or host, e.g. ":9252")`},
		},
		{
			name: "several problems", input: "concurrent = 0 and max_instances = -1 together",
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, "concurrent = 1", "concurrent = 0", "max_instances = 1", "max_instances = -1"))
			},
			want: []string{"$DIR/config.toml: 2 problems:", "concurrent: must be at least 1", "runners[0].autoscaler.max_instances: must not be negative"},
		},
	}
}

func pluginConfigRows(f *fleetrunner) []row {
	// The local plugin's settings, each row replacing them.
	const local = "max_size = 1\n      base_address = \"127.0.99.1\""
	return []row{
		{
			name: "unknown plugin", input: `plugin = "gcp"`,
			seen: func(t *testing.T) string { return f.start(t, edited(t, `plugin = "local"`, `plugin = "gcp"`)) },
			want: []string{`runner "badinput": executor "docker-autoscaler": [runners.autoscaler] plugin: unknown autoscaler plugin "gcp"`, "these are available: aws, local, static"},
		},
		{
			name: "no plugin", input: `plugin = ""`,
			seen: func(t *testing.T) string { return f.start(t, edited(t, `plugin = "local"`, `plugin = ""`)) },
			want: []string{`$DIR/config.toml: runners[0].autoscaler.plugin: missing (the fleeting plugin, e.g. "aws")`},
		},
		{
			name: "local misspelt key", input: "max_sise for the local plugin",
			seen: func(t *testing.T) string { return f.start(t, edited(t, "max_size = 1", "max_sise = 1")) },
			want: []string{`runner "badinput": executor "docker-autoscaler": [runners.autoscaler.plugin_config] for plugin "local": plugin_config: unknown key "max_sise"`},
		},
		{
			name: "local negative max_size", input: "max_size = -1",
			seen: func(t *testing.T) string { return f.start(t, edited(t, "max_size = 1", "max_size = -1")) },
			want: []string{`runner "badinput": executor "docker-autoscaler": plugin "local" rejected its configuration`, "invalid plugin_config max_size -1: must be positive"},
		},
		{
			name: "local address off loopback", input: `base_address = "10.0.0.1"`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `base_address = "127.0.99.1"`, `base_address = "10.0.0.1"`))
			},
			want: []string{`plugin "local" rejected its configuration`, `invalid plugin_config base_address "10.0.0.1": must be an IPv4 loopback address (127.x.y.z)`},
		},
		{
			name: "local duration as a number", input: "boot_delay = 5",
			seen: func(t *testing.T) string { return f.start(t, edited(t, local, local+"\n      boot_delay = 5")) },
			want: []string{`[runners.autoscaler.plugin_config] for plugin "local": plugin_config: key "boot_delay": want a duration string such as "5s", got 5`},
		},
		{
			name: "local wrong type", input: `max_size = "two"`,
			seen: func(t *testing.T) string { return f.start(t, edited(t, "max_size = 1", `max_size = "two"`)) },
			want: []string{`[runners.autoscaler.plugin_config] for plugin "local": plugin_config: key "max_size": want int, got string`},
		},
		{
			name: "static without hosts", input: `plugin = "static" with the local plugin's settings`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `plugin = "local"`, `plugin = "static"`, local, `name = "pool"`))
			},
			want: []string{`plugin "static" rejected its configuration`, "missing required plugin_config: hosts (at least one)"},
		},
		{
			name: "static host without address", input: "a static host with an id only",
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `plugin = "local"`, `plugin = "static"`, local, "[[runners.autoscaler.plugin_config.hosts]]\n        id = \"build-1\""))
			},
			want: []string{`plugin "static" rejected its configuration`, "missing required plugin_config hosts[0] (build-1): address"},
		},
		{
			name: "static key file missing", input: "a static host whose key_path does not exist",
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `plugin = "local"`, `plugin = "static"`, local,
					"[[runners.autoscaler.plugin_config.hosts]]\n        id = \"build-1\"\n        address = \"127.0.0.1\"\n        key_path = \"/nonexistent/id_ed25519\""))
			},
			want: []string{`plugin "static" rejected its configuration`, "(build-1): key_path:", "/nonexistent/id_ed25519"},
		},
		{
			name: "aws without name", input: `plugin = "aws" and no group name`,
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `plugin = "local"`, `plugin = "aws"`, local, `region = "us-east-1"`))
			},
			want: []string{`plugin "aws" rejected its configuration`, "aws plugin: missing required plugin_config key name: set it to the Auto Scaling group's name"},
		},
		{
			name: "aws misspelt key", input: "regoin for region",
			seen: func(t *testing.T) string {
				return f.start(t, edited(t, `plugin = "local"`, `plugin = "aws"`, local, "name = \"runners\"\n      regoin = \"us-east-1\""))
			},
			want: []string{`[runners.autoscaler.plugin_config] for plugin "aws": plugin_config: unknown key "regoin"`},
		},
	}
}
