package dockerautoscaler

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// buildResources is what the engine holds of one build (LabelBuild).
type buildResources struct {
	containers, running, networks, volumes int
}

func (b buildResources) String() string {
	return fmt.Sprintf("%d containers (%d running), %d networks, %d volumes", b.containers, b.running, b.networks, b.volumes)
}

func (r *rig) buildResources(t *testing.T, build string) buildResources {
	t.Helper()
	cs, ns, vs := testrig.JobResources(t, r.cli, filters.NewArgs(filters.Arg("label", docker.LabelBuild+"="+build)))
	got := buildResources{containers: len(cs), networks: len(ns), volumes: len(vs)}
	for _, c := range cs {
		if c.State == "running" {
			got.running++
		}
	}
	return got
}

// jobBuild is the build label of the containers job id made on the engine.
func (r *rig) jobBuild(t *testing.T, id int64) string {
	t.Helper()
	cs, err := r.cli.ContainerList(t.Context(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", docker.LabelRunner+"="+config.ShortToken(r.runner.Token)),
		filters.Arg("label", fmt.Sprintf("%s=%d", docker.LabelJobID, id)))})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) == 0 {
		t.Fatalf("job %d has no container on the engine", id)
	}
	return cs[0].Labels[docker.LabelBuild]
}

// instanceSSHD is the sshd of a local plugin instance whose group keeps its state in pluginDir.
func instanceSSHD(pluginDir, id string) (*local.SSHD, error) {
	dir := filepath.Join(pluginDir, "instances", id)
	data, err := os.ReadFile(filepath.Join(dir, "instance.json"))
	if err != nil {
		return nil, err
	}
	var rec struct {
		Address      string `json:"address"`
		Port         int    `json:"port"`
		Pid          int    `json:"pid"`
		HiddenDocker string `json:"hidden_docker"`
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, err
	}
	s, ok := local.AdoptSSHD(rec.Pid, dir, rec.Address, rec.Port, rec.HiddenDocker)
	if !ok {
		return nil, fmt.Errorf("sshd of instance %s is not running", id)
	}
	return s, nil
}

// keptInstanceRig is a rig whose one instance (one slot) stays while idle, on a local group kept in a
// state_dir, so that the test can reach its sshd and instances survive the provider.
func keptInstanceRig(t *testing.T) (r *rig, pluginDir string) {
	r = newRig(t)
	pluginDir = filepath.Join(r.dir, "local-state")
	ac := r.runner.Autoscaler
	ac.CapacityPerInstance, ac.MaxInstances = 1, 1
	ac.PluginConfig["state_dir"] = pluginDir
	ac.Policy = []config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: time.Minute}}
	removeInstancesAtEnd(t, pluginDir, ac.PluginConfig["base_address"].(string))
	return r, pluginDir
}

var removedLine = regexp.MustCompile(`msg="removed the leftovers of jobs this runner manager no longer runs".*`)

// TestKilledManagerLeftoversRemovedOnAdoption: the manager is killed (kill -9) while a job sleeps on an
// instance that keep_instance_with_acquisitions keeps. The job's container would sleep on, and its
// network and volume stay, for good; the restarted manager adopts the instance, removes them, says so
// in its log, and the instance takes the next job.
func TestKilledManagerLeftoversRemovedOnAdoption(t *testing.T) {
	t.Parallel()
	r, _ := keptInstanceRig(t)
	r.runner.Autoscaler.StateStorage.KeepInstanceWithAcquisitions = true
	// No host networking, so that the job gets a network of its own (it needs no simulator).
	r.runner.Docker.NetworkMode = ""
	configPath, logPath := r.managerFiles(t)

	first := startChild(t, configPath, logPath)
	idA := r.sim.Enqueue(gitlabsim.JobSpec{Name: "killed", Image: r.image, Script: []string{"echo started-A", "sleep 600"},
		Variables: []job.Variable{{Key: "FF_NETWORK_PER_BUILD", Value: "true", Public: true}}})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	snapA, err := r.sim.WaitJob(ctx, idA, func(j gitlabsim.JobSnapshot) bool { return strings.Contains(string(j.Trace), "started-A") })
	if err != nil {
		t.Fatalf("job A never started its script: %v", err)
	}
	on := connectedTo(snapA.Trace)
	if len(on) != 1 {
		t.Fatalf("job A connected to %v, want one instance", on)
	}
	busy, build := on[0], r.jobBuild(t, idA)
	first.kill()
	if got := r.buildResources(t, build); got.running != 1 || got.networks != 1 || got.volumes != 1 {
		t.Fatalf("after the kill the engine holds %s of job A, want its running container, network and volume", got)
	}

	second := startChild(t, configPath, logPath)
	var line string
	testrig.WaitFor(t, time.Minute, "the restarted manager to log the removal of job A's leftovers on "+busy, func() bool {
		data, _ := os.ReadFile(logPath)
		for _, l := range removedLine.FindAllString(string(data), -1) {
			if strings.Contains(l, busy) {
				line = l
				return true
			}
		}
		return false
	})
	for _, want := range []string{fmt.Sprintf(`jobs="[%d]"`, idA), "networks=1", "volumes=1", `reason="adopted at start"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %s", line, want)
		}
	}
	t.Logf("restarted manager: %s", line)
	if got := r.buildResources(t, build); got != (buildResources{}) {
		t.Errorf("the engine still holds %s of job A", got)
	}

	idB := r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-restart", Image: r.image, Script: []string{"echo B"}})
	snapB, err := r.sim.WaitFinished(ctx, idB)
	if err != nil || snapB.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job B after the restart: %v %s; trace:\n%s", err, snapB.Status, snapB.Trace)
	}
	if on := connectedTo(snapB.Trace); !slices.Equal(on, []string{busy}) {
		t.Errorf("job B ran on %v, want the adopted instance %s", on, busy)
	}
	second.stop(t)
}

// TestFrozenInstanceLeftoversRemovedAfterThaw: an instance freezes (its sshd stopped) while a job's
// after_script sleeps there. The job ends, but its cleanup cannot reach the engine: its containers, one
// still running, and its volume stay, and removing them fails while the instance is frozen. Once it is
// thawed the provider reconnects and removes them, and the instance serves the next job.
func TestFrozenInstanceLeftoversRemovedAfterThaw(t *testing.T) {
	t.Parallel()
	r, pluginDir := keptInstanceRig(t)
	log := testLogger(t)
	hook := test.NewLocal(log)
	p := r.newProviderLogging(t, log)

	r.sim.Enqueue(gitlabsim.JobSpec{Name: "frozen", Image: r.image, Script: []string{"echo in-script"},
		AfterScript: []string{"echo after-started", "sleep 600"}})
	var frozen *local.SSHD
	var busy string
	// after_script's container runs `sleep 600` once it said so: freeze the instance under it.
	_, snap := r.runOne(t, p, onceInOutput("after_script", "after-started", func() {
		busy = busyInstance(p)
		s, err := instanceSSHD(pluginDir, busy)
		if err == nil {
			err = s.Freeze()
		}
		if err != nil {
			t.Errorf("freeze the instance running the job: %v", err)
			return
		}
		frozen = s
	}))
	if frozen == nil {
		t.Fatalf("the instance was not frozen during after_script; trace:\n%s", snap.Trace)
	}
	t.Cleanup(frozen.Thaw)
	build := r.jobBuild(t, snap.ID)
	if got := r.buildResources(t, build); got.running != 1 || got.volumes != 1 {
		t.Fatalf("after the job the engine holds %s of it, want its sleeping after_script container and its volume", got)
	}

	logged(t, hook, logrus.WarnLevel, busy)
	if got := r.buildResources(t, build); got.running != 1 {
		t.Fatalf("the job's after_script container was removed while its instance was frozen: the engine holds %s", got)
	}
	frozen.Thaw()
	e := logged(t, hook, logrus.InfoLevel, busy)
	if jobs, _ := e.Data["jobs"].([]int64); !slices.Equal(jobs, []int64{snap.ID}) || e.Data["reason"] != leftoversLost || e.Data["volumes"] != 1 {
		t.Errorf("removal logged as %q %v, want job %d's volume, after a lost connection", e.Message, e.Data, snap.ID)
	}
	if got := r.buildResources(t, build); got != (buildResources{}) {
		t.Errorf("the engine still holds %s of the job", got)
	}

	r.sim.Enqueue(gitlabsim.JobSpec{Name: "after-thaw", Image: r.image, Script: []string{"echo again"}})
	err, next := r.runOne(t, p, nil)
	if err != nil || !slices.Equal(connectedTo(next.Trace), []string{busy}) {
		t.Errorf("the next job: %v, on %v, want success on the thawed instance %s; trace:\n%s", err, connectedTo(next.Trace), busy, next.Trace)
	}
}

// logged waits for the provider's line about the leftovers on the instance at level: a failed removal
// (warning) or a done one (info).
func logged(t *testing.T, hook *test.Hook, level logrus.Level, instance string) *logrus.Entry {
	t.Helper()
	var found *logrus.Entry
	testrig.WaitFor(t, time.Minute, fmt.Sprintf("a %s about the leftovers on instance %s", level, instance), func() bool {
		for _, e := range hook.AllEntries() {
			if e.Level == level && e.Data["instance"] == instance && strings.Contains(e.Message, "leftover") {
				found = e
				return true
			}
		}
		return false
	})
	return found
}
