package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// awsProfile is the shared-config profile that points the SDK at awssim.
const awsProfile = "awssim"

// onAWSSim moves r's fleet to the aws plugin on an awssim Auto Scaling group whose instances boot at
// once: every SSH connection then needs an EC2 Instance Connect key push, as on AWS.
func onAWSSim(t *testing.T, r *autoscalerRig) {
	t.Helper()
	if os.Getenv("AWS_ENDPOINT_URL") != "" {
		t.Skip("AWS_ENDPOINT_URL would point the SDK away from awssim")
	}
	sim, err := awssim.New(awssim.Options{Dir: filepath.Join(r.dir, "awssim"), DockerSocket: testenv.DockerSocket()})
	if err != nil {
		t.Fatalf("awssim: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("awssim close: %v", err)
		}
	})
	if err := sim.CreateGroup(awssim.GroupSpec{Name: "bench", MaxSize: 1, Boot: &local.BootModel{}}); err != nil {
		t.Fatal(err)
	}
	cfg, creds := filepath.Join(r.dir, "aws-config"), filepath.Join(r.dir, "aws-credentials")
	files := map[string]string{
		cfg:   fmt.Sprintf("[profile %s]\nregion = %s\nendpoint_url = %s\n", awsProfile, sim.Region(), sim.URL()),
		creds: fmt.Sprintf("[%s]\naws_access_key_id = AKIAFLEETRUNNERBENCH\naws_secret_access_key = fleetrunner-bench-secret\n", awsProfile),
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ac := r.runner.Autoscaler
	ac.Plugin = "aws"
	ac.PluginConfig = config.PluginConfig{"name": "bench", "region": sim.Region(), "profile": awsProfile,
		"config_file": cfg, "credentials_file": creds}
	ac.ConnectorConfig.Username, ac.ConnectorConfig.ProtocolPort = "root", sim.SSHPort()
	// The instances forward the engine's socket, as an EC2 instance's sshd forwards its Docker socket.
	r.runner.Docker.Host = "unix://" + testenv.DockerSocket()
}
