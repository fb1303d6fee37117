// Package secrets holds an end-to-end test that a real job's secrets stay where they belong: the real
// fleetrunner binary runs a job with a masked variable, a file variable, registry credentials and its
// job token on the docker-autoscaler executor (local plugin, real Docker Engine, gitlabsim), and every
// place an operator or another local user can read is searched for them. It has no non-test code.
package secrets
