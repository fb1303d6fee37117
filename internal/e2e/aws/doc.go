// Package e2eaws holds end-to-end tests of `fleetrunner run` with plugin = "aws": the real manager,
// docker-autoscaler executor, taskscaler and aws fleeting plugin against awssim (real sshd instances),
// gitlabsim and the local Docker Engine, plus a benchmark printing AWS API calls per job and per scaling
// event. It has no non-test code.
package e2eaws
