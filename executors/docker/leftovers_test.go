package docker_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// leftover is a job's container (sleeping, as a job a killed manager left behind would), network and
// volume, made on the engine the way a job labels them.
type leftover struct {
	container, network, volume string
}

func (rg *rig) makeLeftover(t *testing.T, runner, systemID, build string, jobID int64) leftover {
	t.Helper()
	ctx := t.Context()
	labels := func(role string) map[string]string {
		return map[string]string{docker.LabelManaged: "true", docker.LabelRunner: runner, docker.LabelSystemID: systemID,
			docker.LabelBuild: build, docker.LabelJobID: strconv.FormatInt(jobID, 10), docker.LabelRole: role}
	}
	name := "fleetrunner-test-leftover-" + build
	v, err := rg.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: labels("volume")})
	if err != nil {
		t.Fatal(err)
	}
	n, err := rg.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: labels("network")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := rg.cli.ContainerCreate(ctx, &container.Config{Image: rg.image, Cmd: []string{"sh", "-c", "sleep 600"}, Labels: labels("build")},
		&container.HostConfig{NetworkMode: container.NetworkMode(name), Binds: []string{name + ":/builds"}}, nil, nil, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := rg.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	l := leftover{container: c.ID, network: n.ID, volume: v.Name}
	t.Cleanup(func() { l.remove(rg) })
	return l
}

func (l leftover) remove(rg *rig) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = rg.cli.ContainerRemove(ctx, l.container, container.RemoveOptions{Force: true})
	_ = rg.cli.NetworkRemove(ctx, l.network)
	_ = rg.cli.VolumeRemove(ctx, l.volume, true)
}

// present tells, for the container, the network and the volume, whether the engine still has it.
func (l leftover) present(t *testing.T, rg *rig) [3]bool {
	t.Helper()
	ctx := t.Context()
	exists := func(err error) bool {
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	_, errC := rg.cli.ContainerInspect(ctx, l.container)
	_, errN := rg.cli.NetworkInspect(ctx, l.network, network.InspectOptions{})
	_, errV := rg.cli.VolumeInspect(ctx, l.volume)
	return [3]bool{exists(errC), exists(errN), exists(errV)}
}

// TestProviderRemovesLeftoversAtStart: executor "docker" starting on an engine removes what an earlier
// process of the same runner manager left there (a sleeping container, its network and volume), and
// nothing else: not another runner's, not another manager's of the same runner, not the cache volume,
// not the resources of a job this process is running.
func TestProviderRemovesLeftoversAtStart(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	rg.runner.Docker.Host = "unix://" + testenv.DockerSocket()
	rg.runner.Docker.Volumes = []string{"/cache"}
	short := config.ShortToken(rg.runner.Token)
	other := "x" + short[1:] // a short token is hex: another runner's

	previous := rg.makeLeftover(t, short, "s_test", "0badbee1", 41)
	otherRunner := rg.makeLeftover(t, other, "s_test", "0badbee2", 42)
	otherManager := rg.makeLeftover(t, short, "s_other", "0badbee3", 43)

	ctx, abort := context.WithCancel(t.Context())
	defer abort()
	j := rg.newJob("echo script-started", "sleep 600")
	l, done := rg.start(ctx, j, nil)
	l.waitFor(t, "script-started\n")
	runningJob := filters.NewArgs(filters.Arg("label", docker.LabelJobID+"="+strconv.FormatInt(j.ID, 10)), filters.Arg("label", docker.LabelRunner+"="+short))

	log, hook := test.NewNullLogger()
	p, err := docker.NewProvider(rg.runner, executors.Deps{Logger: log, SystemID: "s_test"})
	if err != nil {
		t.Fatal(err)
	}
	var removed *logrus.Entry
	testrig.WaitFor(t, time.Minute, "the provider to log the removal of leftovers", func() bool {
		for _, e := range hook.AllEntries() {
			if e.Level <= logrus.InfoLevel {
				removed = e
				return true
			}
		}
		return false
	})
	if err := p.Shutdown(t.Context()); err != nil {
		t.Error(err)
	}
	if removed.Level != logrus.InfoLevel || removed.Data["containers"] != 1 || removed.Data["networks"] != 1 || removed.Data["volumes"] != 1 ||
		!slices.Equal(removed.Data["jobs"].([]int64), []int64{41}) {
		t.Errorf("logged %s %q %v, want the removal of job 41's container, network and volume", removed.Level, removed.Message, removed.Data)
	}
	if got := previous.present(t, rg); got != [3]bool{} {
		t.Errorf("the earlier process's container, network, volume present: %v, want all gone", got)
	}
	for name, l := range map[string]leftover{"another runner's": otherRunner, "another manager's": otherManager} {
		if got := l.present(t, rg); got != [3]bool{true, true, true} {
			t.Errorf("%s container, network, volume present: %v, want all kept", name, got)
		}
	}
	cs, err := rg.cli.ContainerList(t.Context(), container.ListOptions{Filters: runningJob})
	if err != nil || len(cs) != 1 {
		t.Errorf("the running job's containers: %d running (%v), want its script container", len(cs), err)
	}
	caches, err := rg.cli.VolumeList(t.Context(), volume.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", docker.LabelRunner+"="+short), filters.Arg("label", docker.LabelRole+"=cache"))})
	if err != nil || len(caches.Volumes) != 1 {
		t.Errorf("cache volumes: %d (%v), want the job's one kept", len(caches.Volumes), err)
	}

	abort()
	if err := <-done; err != nil {
		t.Logf("the aborted job ended with: %v", err)
	}
}
