// Package statuspage holds an end-to-end test of the status page at / on listen_address: the real
// fleetrunner binary runs a job on the docker-autoscaler executor (local plugin, real Docker Engine,
// gitlabsim), and headless Chromium loads the page while the job runs. It has no non-test code.
package statuspage
