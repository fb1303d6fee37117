package secrets_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// Bounds of the waits, so that a broken runner fails the test instead of hanging it.
const (
	startWithin = 30 * time.Second
	jobWithin   = 90 * time.Second
	stopWithin  = time.Minute
)

// sleepMarker is what the job prints before it sleeps; while it sleeps its containers are inspected.
const sleepMarker = "secrets-job-sleeps-now"

// Names of the secrets, for failure messages and for where each is allowed.
const (
	maskedVar     = "masked variable SECRET_MASKED"
	fileVar       = "file variable SECRET_FILE"
	jobToken      = "job token"
	runnerToken   = "runner token"
	registryPass  = "registry password (DOCKER_AUTH_CONFIG)"
	registryBasic = "registry auth (DOCKER_AUTH_CONFIG)"
)

// TestSecretsStayHidden runs one job whose script prints its masked variable, its file variable and
// its job token, then sleeps, on `fleetrunner run` (the real binary, log level debug) with the
// docker-autoscaler executor on the local plugin. Each secret is then looked for in the manager's log,
// the status page, /metrics and the debug endpoints, every file under the config directory, the job's
// containers (while the job sleeps) and the job's log in GitLab. The runner token and the registry
// credentials belong in config.toml, and the job token may sit in the taskscaler's state file (mode
// 0600) while the job runs; anywhere else a find is a failure that names the place.
func TestSecretsStayHidden(t *testing.T) {
	testenv.RequireSSHD(t)
	testenv.RequireCommand(t, "git", "apt-get install git")
	cli, image := testrig.Engine(t)
	bin := testrig.BuildFleetrunner(t)

	gl, token := testrig.Sim(t, "secrets e2e")
	t.Cleanup(func() { testrig.RemoveJobLeftovers(t, cli, token, false) })
	repo, err := gl.CreateRepo("group/secrets", map[string]string{"README.md": "secrets\n"})
	if err != nil {
		t.Fatal(err)
	}

	masked, file := "masked-"+random(t), "file-"+random(t)
	regUser, regPass := "deploy", "registry-"+random(t)
	regAuth := base64.StdEncoding.EncodeToString([]byte(regUser + ":" + regPass))
	dockerAuth := fmt.Sprintf(`{"auths":{"registry.secrets.invalid":{"auth":%q}}}`, regAuth)

	dir := t.TempDir()
	configPath := filepath.Join(dir, "config.toml")
	pluginDir := filepath.Join(dir, "local-plugin")
	plugin := localPlugin(pluginDir)
	listen := freeAddr(t)
	writeConfig(t, configPath, gl.URL(), token, image, listen, plugin, dockerAuth)
	// Registered before StartFleetrunner's cleanup, so it runs once the runner is gone, killed or not.
	t.Cleanup(func() { removeInstances(t, plugin) })
	r := testrig.StartFleetrunner(t, bin, configPath, 0, 0)
	base := "http://" + listen
	testrig.WaitFor(t, startWithin, "the runner to serve /-/health", func() bool {
		r.Check(t)
		return get(base+"/-/health") != nil
	})

	id := gl.Enqueue(gitlabsim.JobSpec{
		Name: "secrets", Repo: repo.Name, Image: image,
		Variables: []job.Variable{
			{Key: "SECRET_MASKED", Value: masked, Masked: true},
			{Key: "SECRET_FILE", Value: file, Masked: true, File: true},
		},
		Script: []string{
			`echo "masked: $SECRET_MASKED"`,
			`echo "file: $(cat "$SECRET_FILE")"`,
			`echo "job token: $CI_JOB_TOKEN"`,
			"echo " + sleepMarker,
			"sleep 5",
			"echo artifact > out.txt",
		},
		Artifacts: []job.Artifact{{Paths: []string{"out.txt"}}},
	})
	testrig.WaitFor(t, jobWithin, "the job to print "+sleepMarker, func() bool {
		r.Check(t)
		snap, _ := gl.Job(id)
		return strings.Contains(string(snap.Trace), sleepMarker) || snap.Finished()
	})
	snap, _ := gl.Job(id)
	h := newHunt(
		newSecret(maskedVar, masked),
		newSecret(fileVar, file),
		newSecret(jobToken, snap.Token, tail(snap.Token)),
		newSecret(runnerToken, token, tail(token)),
		newSecret(registryPass, regPass),
		newSecret(registryBasic, regAuth),
	)

	// While the job sleeps: its containers, the endpoints and the files as they are mid-job.
	if n := searchContainers(t, h, cli, token); n == 0 {
		t.Errorf("no container of the job was found while it slept; the search of the containers proves nothing")
	}
	searchEndpoints(t, h, base, "while the job ran")
	if !searchConfigDir(t, h, dir) {
		t.Logf("the state file did not hold the job token while the job ran")
	}

	done := testrig.Finished(t, gl, id, jobWithin)
	if done.Status != gitlabsim.StatusSuccess {
		t.Fatalf("the job ended %s (%s); its log:\n%s", done.Status, done.FailureReason, done.Trace)
	}
	searchEndpoints(t, h, base, "after the job")
	if err := r.Stop(syscall.SIGQUIT, stopWithin); err != nil {
		t.Errorf("SIGQUIT: %v", err)
	}
	searchConfigDir(t, h, dir)

	logText, err := os.ReadFile(r.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logText), "level=debug") {
		t.Errorf("the manager logged nothing at debug level; the search of its log at debug proves less")
	}
	h.text("the manager's log (log level debug)", logText)
	h.text("the job's log in GitLab", done.Trace)
	// Each printed secret must have reached the log masked, or the search of the log proves nothing.
	if n := strings.Count(string(done.Trace), "[MASKED]"); n < 3 {
		t.Errorf("the job's log shows [MASKED] %d times; want at least 3 (masked variable, file variable, job token):\n%s", n, done.Trace)
	}
	for _, leak := range h.leaks() {
		t.Errorf("%s", leak)
	}
}

// random is 24 hex digits, so that no secret of this run can turn up by chance.
func random(t *testing.T) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
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

// writeConfig writes the runner's config.toml as an operator would: log level debug, the metrics server
// on listen, one docker-autoscaler runner with registry credentials in its environment, whose local
// plugin (see localPlugin) keeps its instances inside the config directory, so that they are searched too.
// Job containers use the host network to reach gitlabsim on loopback.
func writeConfig(t *testing.T, path, url, token, image, listen string, plugin map[string]any, dockerAuth string) {
	t.Helper()
	pluginTOML, err := toml.Marshal(plugin)
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(`concurrent = 1
check_interval = 1
shutdown_timeout = 30
log_level = "debug"
listen_address = %q

[[runners]]
  name = "secrets-e2e"
  url = %q
  token = %q
  executor = "docker-autoscaler"
  environment = [%q]
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
    # The local plugin deletes at once; the default 10s before checking would only wait.
    shutdown_deletion_interval = "1s"
    [runners.autoscaler.plugin_config]
%s`, listen, url, token, "DOCKER_AUTH_CONFIG="+dockerAuth, image, "unix://"+testenv.DockerSocket(), pluginTOML)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// localPlugin is the plugin_config of a one-instance local group in its own loopback /24, booting at once.
func localPlugin(stateDir string) map[string]any {
	return map[string]any{
		"name":          "secrets",
		"max_size":      1,
		"boot_delay":    "0s",
		"sshd_delay":    "0s",
		"docker_delay":  "0s",
		"base_address":  fmt.Sprintf("127.%d.%d.1", 100+mrand.IntN(50), mrand.IntN(256)),
		"state_dir":     stateDir,
		"docker_socket": testenv.DockerSocket(),
	}
}

// removeInstances deletes, through the local plugin itself, whatever instances its state directory
// still records: a runner that had to be killed leaves their sshds running.
func removeInstances(t *testing.T, plugin map[string]any) {
	quiet := logging.Discard()
	var g local.InstanceGroup
	if err := json.Unmarshal(mustJSON(plugin), &g); err != nil {
		t.Errorf("local plugin_config: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.Init(ctx, quiet, fleeting.Settings{}); err != nil {
		t.Errorf("adopt the local plugin's instances: %v", err)
		return
	}
	var ids []string
	if err := g.Update(ctx, func(id string, _ fleeting.State) { ids = append(ids, id) }); err != nil {
		t.Errorf("list the local plugin's instances: %v", err)
	}
	if len(ids) > 0 {
		t.Errorf("instances left after the runner stopped: %v", ids)
		if _, err := g.Decrease(ctx, ids); err != nil {
			t.Errorf("remove them: %v", err)
		}
	}
	_ = g.Shutdown(ctx)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// searchContainers searches the inspection of every container of the runner's jobs (environment,
// command, labels, mounts) and returns how many there were.
func searchContainers(t *testing.T, h *hunt, cli client.APIClient, runnerToken string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", docker.LabelRunner+"="+config.ShortToken(runnerToken)))
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatalf("list the job's containers: %v", err)
	}
	for _, c := range cs {
		_, raw, err := cli.ContainerInspectWithRaw(ctx, c.ID, false)
		if err != nil {
			// A helper container may end and go between the listing and now.
			continue
		}
		h.json("docker inspect of container "+strings.Join(c.Names, ","), raw)
	}
	return len(cs)
}

// searchEndpoints searches what listen_address serves; when says at what point of the job.
func searchEndpoints(t *testing.T, h *hunt, base, when string) {
	t.Helper()
	for _, path := range []string{"/", "/metrics", "/debug/jobs/list", "/debug/autoscaler/instances", "/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=2"} {
		body := get(base + path)
		if body == nil {
			t.Errorf("GET %s %s: no answer", path, when)
			continue
		}
		h.text(fmt.Sprintf("GET %s (%s)", path, when), body)
	}
}

// get returns the body of a 200 answer, or nil.
func get(url string) []byte {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	return b
}

// searchConfigDir searches every file under the config directory. config.toml holds the runner token and
// the registry credentials by design; the taskscaler's state file (state.json under .taskscaler) may
// hold the job token of a running job and must be readable by its owner only. It reports whether a
// state file held the job token.
func searchConfigDir(t *testing.T, h *hunt, dir string) (stateHeldJobToken bool) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch {
		case rel == "config.toml":
			// config.toml holds these by design, which also shows that the search finds them.
			for _, name := range []string{runnerToken, registryBasic} {
				if !h.holds(name, b) {
					t.Errorf("the search does not find the %s in config.toml, which holds it", name)
				}
			}
			h.text("config.toml", b, runnerToken, registryPass, registryBasic)
		case d.Name() == "state.json" && strings.HasPrefix(rel, ".taskscaler"+string(filepath.Separator)):
			info, err := d.Info()
			if err != nil {
				return err
			}
			if mode := info.Mode().Perm(); mode != 0o600 {
				t.Errorf("the state file %s has mode %#o; it may hold job tokens and must be 0600", rel, mode)
			}
			stateHeldJobToken = stateHeldJobToken || h.holds(jobToken, b)
			h.text(rel, b, jobToken)
		default:
			h.text(rel, b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("search %s: %v", dir, err)
	}
	return stateHeldJobToken
}
