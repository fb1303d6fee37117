// Package e2eaws holds end-to-end tests of `fleetrunner run` with plugin = "aws": the real manager,
// docker-autoscaler executor, taskscaler and aws fleeting plugin against awssim (real sshd instances),
// gitlabsim and the local Docker Engine. It has no non-test code; AWS API calls per job and per scaling
// event are a row of internal/bench.
package e2eaws
