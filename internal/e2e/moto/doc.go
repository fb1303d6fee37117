// Package e2emoto holds an end-to-end test of the real `fleetrunner run` binary with plugin = "aws"
// against moto_server, a third-party AWS emulator: moto keeps the Auto Scaling group, a test helper backs
// each of its running instances with a real sshd on the instance's loopback address (a VPC of
// 127.0.0.0/16) after a boot delay, and jobs from gitlabsim run in the local Docker Engine. It has no
// non-test code.
package e2emoto
