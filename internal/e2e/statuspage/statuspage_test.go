package statuspage_test

import (
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// Bounds of the waits, so that a broken runner fails the test instead of hanging it.
const (
	startWithin    = 30 * time.Second
	jobWithin      = 90 * time.Second
	chromiumWithin = 60 * time.Second
	stopWithin     = time.Minute
)

// runMarker is what the job prints before it sleeps; the page is loaded while it sleeps.
const runMarker = "statuspage-job-runs-now"

// runnerName and jobName are hostile: the page must show them as text, and Chromium must not run them.
const (
	runnerName = `status <script>document.title="pwned"</script>`
	jobName    = `page <b onclick="alert(1)">job</b>`
)

// ArtifactsEnv names a directory where the test keeps its screenshot; without it the screenshot goes to
// the test's temporary directory, whose path is logged.
const ArtifactsEnv = "FLEETRUNNER_ARTIFACTS"

// TestStatusPageInChromium runs `fleetrunner run` (the real binary) with the docker-autoscaler executor
// on the local plugin, enqueues a job that sleeps, and loads http://listen_address/ in headless
// Chromium while it runs: the rendered DOM must show the runner (its hostile name as text), its health,
// the policy, the instance with its slot in use, the running job with its stage, and the scale decision
// that created the instance. A screenshot of the page is kept. Once the job is canceled the page must
// show it gone and the instance used once.
func TestStatusPageInChromium(t *testing.T) {
	chromium := testenv.RequireCommand(t, "chromium", "apt-get install chromium")
	testenv.RequireSSHD(t)
	testenv.RequireCommand(t, "git", "apt-get install git")
	cli, image := testrig.Engine(t)
	bin := testrig.BuildFleetrunner(t)

	gl, token := testrig.Sim(t, "status page e2e")
	t.Cleanup(func() { testrig.RemoveJobLeftovers(t, cli, token, false) })
	repo, err := gl.CreateRepo("group/statuspage", map[string]string{"README.md": "status page\n"})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	configPath := filepath.Join(dir, "config.toml")
	listen := freeAddr(t)
	writeConfig(t, configPath, gl.URL(), token, image, listen, filepath.Join(dir, "local-plugin"))
	r := testrig.StartFleetrunner(t, bin, configPath, syscall.SIGQUIT, stopWithin)
	base := "http://" + listen
	testrig.WaitFor(t, startWithin, "the runner to serve /-/health", func() bool {
		r.Check(t)
		_, ok := get(base + "/-/health")
		return ok
	})

	id := gl.Enqueue(gitlabsim.JobSpec{
		Name: jobName, Repo: repo.Name, Image: image,
		Script: []string{"echo " + runMarker, "sleep 300"},
	})
	testrig.WaitFor(t, jobWithin, "the job to print "+runMarker, func() bool {
		r.Check(t)
		snap, _ := gl.Job(id)
		return strings.Contains(string(snap.Trace), runMarker) || snap.Finished()
	})
	if snap, _ := gl.Job(id); snap.Finished() {
		t.Fatalf("the job ended %s before the page was loaded; its log:\n%s", snap.Status, snap.Trace)
	}

	dom := chromiumRun(t, chromium, "--dump-dom", base+"/")
	shot := filepath.Join(artifactsDir(t), "statuspage.png")
	chromiumRun(t, chromium, "--screenshot="+shot, "--window-size=1280,1400", base+"/")
	if st, err := os.Stat(shot); err != nil || st.Size() == 0 {
		t.Errorf("no screenshot at %s: %v", shot, err)
	} else {
		t.Logf("screenshot of the status page while the job ran: %s", shot)
	}

	instances := rows(dom, "instance")
	jobs := rows(dom, "job")
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"the runner's name, escaped and shown as text", strings.Contains(dom, `Runner status &lt;script&gt;document.title="pwned"&lt;/script&gt;`)},
		{"no script from the runner's name ran", !strings.Contains(dom, "<title>pwned</title>") && !strings.Contains(dom, `<script>document.title`)},
		{"the runner healthy", strings.Contains(dom, `<span class="healthy">healthy</span>`)},
		{"the policy in force (idle count 0, idle time 1m0s, not preemptive)", strings.Contains(dom, "<td>#0</td>") && strings.Contains(dom, "<td>0</td><td>1m0s</td>")},
		{"one instance, ready, with its one slot in use", len(instances) == 1 && strings.Contains(instances[0], "<td>ready</td>") && strings.Contains(instances[0], "<td>1/1</td>")},
		{"the running job with its name (escaped), project and stage", len(jobs) == 1 && strings.Contains(jobs[0], fmt.Sprintf(">#%d<", id)) &&
			strings.Contains(jobs[0], `<td>page &lt;b onclick="alert(1)"&gt;job&lt;/b&gt;</td><td>group/statuspage</td><td>step_script</td>`)},
		{"the running job's instance", len(jobs) == 1 && len(instances) == 1 && strings.Contains(jobs[0], "<td>"+cellOf(instances[0])+"</td>")},
		{"the scale decision that created the instance", strings.Contains(dom, "<td>increase</td><td>1</td>")},
	} {
		if !c.ok {
			t.Errorf("the page rendered by Chromium does not show %s", c.what)
		}
	}
	if t.Failed() {
		t.Logf("the DOM Chromium rendered:\n%s", dom)
	}

	if err := gl.Cancel(id); err != nil {
		t.Fatal(err)
	}
	testrig.Finished(t, gl, id, jobWithin)
	testrig.WaitFor(t, jobWithin, "the page to show the job gone and the instance used once", func() bool {
		page, _ := get(base + "/")
		after := rows(page, "instance")
		return strings.Contains(page, "No job is running.") && len(after) == 1 && strings.Contains(after[0], "<td>1</td><td>0/1</td>")
	})
	if err := r.Stop(syscall.SIGQUIT, stopWithin); err != nil {
		t.Errorf("SIGQUIT: %v", err)
	}
}

// rows returns the table rows of the given class in html.
func rows(html, class string) []string {
	return regexp.MustCompile(`(?s)<tr class="`+class+`">.*?</tr>`).FindAllString(html, -1)
}

// chromiumRun runs headless Chromium on args with a profile of its own and returns what it printed.
func chromiumRun(t *testing.T, chromium string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), chromiumWithin)
	defer cancel()
	// --no-sandbox: CI runs the tests as root, where Chromium's sandbox refuses to start.
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, chromium, all...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// artifactsDir is $FLEETRUNNER_ARTIFACTS (created if missing), or the test's temporary directory.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%s: %v", ArtifactsEnv, err)
	}
	return dir
}

// freeAddr is a loopback host:port nothing listens on now.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeConfig writes config.toml: the metrics server and status page on listen, one docker-autoscaler
// runner on a one-instance local group in its own loopback /24 that boots at once, and a policy that
// keeps no idle instance. Job containers use the host network to reach gitlabsim on loopback.
func writeConfig(t *testing.T, path, url, token, image, listen, pluginDir string) {
	t.Helper()
	text := fmt.Sprintf(`concurrent = 1
check_interval = 1
shutdown_timeout = 30
listen_address = %q

[[runners]]
  name = %q
  url = %q
  token = %q
  executor = "docker-autoscaler"
  [runners.docker]
    image = %q
    host = %q
    pull_policy = "if-not-present"
    network_mode = "host"
  [runners.autoscaler]
    plugin = "local"
    capacity_per_instance = 1
    max_instances = 1
    update_interval = "1s"
    update_interval_when_expecting = "200ms"
    delete_instances_on_shutdown = true
    shutdown_deletion_interval = "1s"
    [runners.autoscaler.plugin_config]
      name = "statuspage"
      max_size = 1
      boot_delay = "0s"
      sshd_delay = "0s"
      docker_delay = "0s"
      base_address = "127.%d.%d.1"
      state_dir = %q
      docker_socket = %q
    [[runners.autoscaler.policy]]
      periods = ["* * * * *"]
      idle_count = 0
      idle_time = "1m"
`, listen, runnerName, url, token, image, "unix://"+testenv.DockerSocket(),
		100+mrand.IntN(50), mrand.IntN(256), pluginDir, testenv.DockerSocket())
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// get returns the body of a 200 answer.
func get(url string) (string, bool) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err == nil && resp.StatusCode == http.StatusOK
}

// cellOf is the first cell's text of a table row: an instance row's ID.
func cellOf(row string) string {
	_, rest, _ := strings.Cut(row, "<td>")
	id, _, _ := strings.Cut(rest, "</td>")
	return id
}
