package docscheck

import (
	"os"
	"regexp"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

// TestReadmeStandaloneConfigLoads loads the config.toml the README gives for `fleetrunner run` against
// the standalone gitlabsim: a reader copies it as it is, so it must load without a warning and keep
// the settings the README explains (a local image, the host network, the local plugin).
func TestReadmeStandaloneConfigLoads(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)with `standalone.toml`:\n\n```toml\n(.*?)```").FindSubmatch(raw)
	if m == nil {
		t.Fatal("README.md has no ```toml block after \"with `standalone.toml`:\"")
	}
	cfg, warns, err := config.Parse(m[1])
	if err != nil {
		t.Fatalf("README's standalone.toml: %v", err)
	}
	if len(warns) > 0 {
		t.Errorf("README's standalone.toml loads with warnings: %v", warns)
	}
	if len(cfg.Runners) != 1 {
		t.Fatalf("README's standalone.toml has %d runners, want 1", len(cfg.Runners))
	}
	r := cfg.Runners[0]
	pull, err := r.Docker.GetPullPolicies()
	if err != nil || len(pull) != 1 || pull[0] != config.PullPolicyIfNotPresent || r.Docker.NetworkMode != "host" ||
		r.Executor != config.ExecutorDockerAutoscaler || r.Autoscaler == nil || r.Autoscaler.Plugin != "local" {
		t.Errorf("README's standalone.toml: executor %q, pull policy %v (%v), network %q, autoscaler %+v; want docker-autoscaler on the local plugin, if-not-present, host",
			r.Executor, pull, err, r.Docker.NetworkMode, r.Autoscaler)
	}
}
