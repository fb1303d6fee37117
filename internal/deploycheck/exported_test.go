package deploycheck_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/builtin"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/manager"
	"gitlab.com/fleetrunner/fleetrunner/metrics"
)

// exportedMetrics builds the metrics as `fleetrunner run` does (metrics.New, told of a docker-autoscaler
// provider on the aws plugin, here against awssim, so that the plugin's API call counts are there),
// drives every manager event once so that each labelled family has a series, and returns the names a
// PromQL query can use: a histogram's _bucket, _sum and _count, every other family's own name.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	testenv.RequireSSHD(t)
	// The machine's environment must not send the SDK anywhere but this test's awssim, which the
	// shared config file below names; the SDK reads an empty variable as unset.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_ENDPOINT_URL") || k == "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" {
			t.Setenv(k, "")
		}
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	dir := t.TempDir()
	sim, err := awssim.New(awssim.Options{Dir: filepath.Join(dir, "awssim")})
	if err != nil {
		t.Fatalf("awssim: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	if err := sim.CreateGroup(awssim.GroupSpec{Name: "deploycheck", MaxSize: 2, ProtectFromScaleIn: true}); err != nil {
		t.Fatal(err)
	}
	configFile, credentialsFile := filepath.Join(dir, "aws-config"), filepath.Join(dir, "aws-credentials")
	for path, text := range map[string]string{
		configFile:      fmt.Sprintf("[profile sim]\nregion = %s\nendpoint_url = %s\n", sim.Region(), sim.URL()),
		credentialsFile: "[sim]\naws_access_key_id = AKIADEPLOYCHECK\naws_secret_access_key = deploycheck\n",
	} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	log := logrus.New()
	log.SetOutput(t.Output())
	m := metrics.New(log)
	runner := manager.RunnerInfo{Runner: "t_deploy", Name: "deploycheck", SystemID: "s_deploycheck", Limit: 2}
	rc := &config.RunnerConfig{
		Name:              runner.Name,
		RunnerCredentials: config.RunnerCredentials{URL: "http://127.0.0.1:1", Token: "glrt-deploycheck"},
		Executor:          dockerautoscaler.Name,
		Docker:            &config.DockerConfig{Image: "busybox"},
		Autoscaler: &config.AutoscalerConfig{
			Plugin:              "aws",
			CapacityPerInstance: 1,
			MaxInstances:        2,
			UpdateInterval:      time.Minute,
			PluginConfig: config.PluginConfig{"name": "deploycheck", "region": sim.Region(), "profile": "sim",
				"config_file": configFile, "credentials_file": credentialsFile},
		},
	}
	p, err := dockerautoscaler.New(builtin.Plugins())(rc, executors.Deps{Logger: log, ConfigDir: dir, SystemID: runner.SystemID})
	if err != nil {
		t.Fatalf("docker-autoscaler provider on awssim: %v", err)
	}
	t.Cleanup(func() { _ = p.Shutdown(t.Context()) })

	m.Configured(1, []manager.RunnerInfo{runner})
	m.ProviderStarted(runner, p)
	m.Serving(true)
	m.RequestStarted(runner)
	m.APIResponse(runner, "request_job", 201)
	m.RequestEnded(runner, 201)
	m.ProcessingFailure(runner, manager.FailureNoFreeExecutor)
	j := m.JobStarted(manager.JobInfo{Runner: runner, ID: 1, QueueDuration: time.Second})
	j.Stage("step_script")

	names := map[string]bool{}
	// Once while the job runs (gitlab_runner_jobs counts running jobs only) and once after it ended.
	gather := func() {
		families, err := m.Registry().Gather()
		if err != nil {
			t.Fatalf("gather: %v", err)
		}
		for _, f := range families {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f.GetName()+s] = true
				}
			case dto.MetricType_SUMMARY:
				names[f.GetName()] = true
				names[f.GetName()+"_sum"] = true
				names[f.GetName()+"_count"] = true
			default:
				names[f.GetName()] = true
			}
		}
	}
	gather()
	j.Finished(job.ScriptFailure)
	gather()
	return names
}
