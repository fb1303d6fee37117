package badinput_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// awsGroup is the Auto Scaling group every AWS row's awssim holds.
const awsGroup = "fleetrunner-badinput"

// awsConfig starts an awssim holding a group of maxSize with faults, writes the shared config and
// credentials files an operator would (profile "sim": region, endpoint, keys) and returns base config
// text whose runner uses the aws plugin with pluginConfig (TOML lines; %s in it is the directory of the
// AWS files).
func awsConfig(t *testing.T, maxSize int, faults awssim.Faults, pluginConfig string) string {
	t.Helper()
	testenv.RequireSSHD(t)
	sim, err := awssim.New(awssim.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("awssim: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("awssim close: %v", err)
		}
	})
	if err := sim.CreateGroup(awssim.GroupSpec{Name: awsGroup, MaxSize: maxSize, ProtectFromScaleIn: true}); err != nil {
		t.Fatal(err)
	}
	sim.SetFaults(faults)
	dir := t.TempDir()
	files := map[string]string{
		"aws-config":      fmt.Sprintf("[profile sim]\nregion = %s\nendpoint_url = %s\n\n[profile noregion]\nendpoint_url = %s\n", sim.Region(), sim.URL(), sim.URL()),
		"aws-credentials": "[sim]\naws_access_key_id = AKIABADINPUT\naws_secret_access_key = badinput-secret\n\n[noregion]\naws_access_key_id = AKIABADINPUT\naws_secret_access_key = badinput-secret\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return edited(t, `plugin = "local"`, `plugin = "aws"`,
		"max_size = 1\n      base_address = \"127.0.99.1\"", strings.ReplaceAll(pluginConfig, "%s", dir))
}

// simPlugin is plugin_config for the group through profile "sim".
const simPlugin = "name = \"" + awsGroup + "\"\n      profile = \"sim\"\n      config_file = \"%s/aws-config\"\n      credentials_file = \"%s/aws-credentials\""

// runUntil runs `fleetrunner run -c` on text until its output holds line, then stops it: the error to
// pin is logged by a manager that goes on running.
func (f *fleetrunner) runUntil(t *testing.T, text, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), commandWithin)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.bin, "run", "-c", configFile(t, text))
	cmd.Env = f.env
	var out testrig.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), line) {
		select {
		case err := <-exited:
			t.Errorf("fleetrunner run exited (%v) before it logged %q", err, line)
			return out.String()
		case <-ctx.Done():
			t.Errorf("fleetrunner run did not log %q within %s", line, commandWithin)
			t.Logf("fleetrunner run exited: %v", <-exited)
			return out.String()
		case <-tick.C:
		}
	}
	_ = cmd.Process.Kill()
	t.Logf("fleetrunner run, killed on purpose, exited: %v", <-exited)
	return out.String()
}

func awsRows(f *fleetrunner) []row {
	return []row{
		{
			name: "aws unknown group", input: "plugin_config name of a group that does not exist",
			seen: func(t *testing.T) string {
				return f.start(t, awsConfig(t, 2, awssim.Faults{}, strings.Replace(simPlugin, awsGroup, "no-such-group", 1)))
			},
			want: []string{`plugin "aws" rejected its configuration`,
				`aws group "no-such-group" in us-east-1: DescribeAutoScalingGroups lists no such group: create it (deploy/aws/fleetrunner-asg.yaml) or fix plugin_config name and region`},
		},
		{
			name: "aws access denied at start", input: "the manager's role may not call DescribeAutoScalingGroups",
			seen: func(t *testing.T) string {
				return f.start(t, awsConfig(t, 2, awssim.Faults{AccessDenied: []string{"DescribeAutoScalingGroups"}}, simPlugin))
			},
			want: []string{`aws group "` + awsGroup + `" in us-east-1: DescribeAutoScalingGroups:`, "api error AccessDenied",
				"fix: allow autoscaling:DescribeAutoScalingGroups to the manager's IAM role (deploy/aws/iam-policy.json)"},
		},
		{
			name: "aws access denied at scale-up", input: "the manager's role may not call SetDesiredCapacity; idle_count = 1 asks for an instance",
			seen: func(t *testing.T) string {
				text := awsConfig(t, 2, awssim.Faults{AccessDenied: []string{"SetDesiredCapacity"}}, simPlugin)
				text = strings.Replace(text, "idle_count = 0", "idle_count = 1", 1)
				return f.runUntil(t, text, "SetDesiredCapacity")
			},
			want: []string{"the plugin did not accept every new instance", `aws group \"` + awsGroup + `\" in us-east-1: SetDesiredCapacity`,
				"fix: allow autoscaling:SetDesiredCapacity to the manager's IAM role (deploy/aws/iam-policy.json)"},
		},
		{
			name: "aws group of size 0", input: "the group's MaxSize is 0",
			seen: func(t *testing.T) string { return f.start(t, awsConfig(t, 0, awssim.Faults{}, simPlugin)) },
			want: []string{`aws group "` + awsGroup + `" in us-east-1: DescribeAutoScalingGroups reports MaxSize 0: raise the group's MaxSize to at least the runner's max_instances`},
		},
		{
			name: "aws no region", input: "a profile without region and no plugin_config region",
			seen: func(t *testing.T) string {
				return f.start(t, awsConfig(t, 2, awssim.Faults{}, strings.Replace(simPlugin, `"sim"`, `"noregion"`, 1)))
			},
			want: []string{`aws group "` + awsGroup + `": no AWS region: set plugin_config region, the AWS_REGION environment variable or region in the profile of ~/.aws/config`},
		},
		{
			name: "aws no credentials", input: "no AWS keys in the environment, the credentials file or an instance role",
			seen: func(t *testing.T) string {
				empty := filepath.Join(t.TempDir(), "empty-credentials")
				if err := os.WriteFile(empty, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return f.start(t, awsConfig(t, 2, awssim.Faults{}, strings.Replace(simPlugin, "%s/aws-credentials", empty, 1)))
			},
			want: []string{`aws group "` + awsGroup + `" in us-east-1: DescribeAutoScalingGroups:`, "get credentials",
				"fix: give the manager credentials (an IAM role on its instance, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or plugin_config profile/credentials_file)"},
		},
		{
			name: "aws unknown profile", input: "plugin_config profile that the config file does not define",
			seen: func(t *testing.T) string {
				return f.start(t, awsConfig(t, 2, awssim.Faults{}, strings.Replace(simPlugin, `"sim"`, `"prod"`, 1)))
			},
			want: []string{`aws group "` + awsGroup + `": load AWS configuration (profile "prod"`, "fix the profile or file named in plugin_config"},
		},
	}
}
