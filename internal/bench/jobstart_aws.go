package bench

import (
	"os"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig/awsrig"
)

// onAWSSim moves r's fleet to the aws plugin on an awssim Auto Scaling group whose instances boot at
// once: every SSH connection then needs an EC2 Instance Connect key push, as on AWS.
func onAWSSim(t *testing.T, r *autoscalerRig) {
	t.Helper()
	if os.Getenv("AWS_ENDPOINT_URL") != "" {
		t.Skip("AWS_ENDPOINT_URL would point the SDK away from awssim")
	}
	w := awsrig.NewWorld(t, awssim.GroupSpec{Name: "bench", MaxSize: 1, Boot: &local.BootModel{}}, awssim.Options{})
	ac := r.runner.Autoscaler
	ac.Plugin = "aws"
	ac.PluginConfig = config.PluginConfig{"name": w.Spec.Name, "region": w.Sim.Region(), "profile": awsrig.Profile,
		"config_file": w.ConfigFile, "credentials_file": w.CredentialsFile}
	ac.ConnectorConfig.Username, ac.ConnectorConfig.ProtocolPort = "root", w.Sim.SSHPort()
	// The instances forward the engine's socket, as an EC2 instance's sshd forwards its Docker socket.
	r.runner.Docker.Host = "unix://" + testenv.DockerSocket()
}
