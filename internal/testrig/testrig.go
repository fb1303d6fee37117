// Package testrig holds what the end-to-end tests of the docker-autoscaler executor share: running the
// real manager in-process, cleaning up what jobs left on the engine, and waiting for a condition.
package testrig

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helperimage"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testimage"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// StartManager does what `fleetrunner run -c configPath` does, in-process: the real manager on the
// config file, with executor served by factory. It returns the provider the manager built and a stop
// function (a graceful stop, waited for) that also runs at cleanup.
func StartManager(t testing.TB, log logrus.FieldLogger, configPath, systemID, executor string, factory executors.Factory) (executors.Provider, func()) {
	t.Helper()
	made := make(chan executors.Provider, 1)
	reg := executors.Registry{executor: func(rc *config.RunnerConfig, deps executors.Deps) (executors.Provider, error) {
		p, err := factory(rc, deps)
		if err == nil {
			made <- p
		}
		return p, err
	}}
	m := manager.New(log, manager.Options{ConfigPath: configPath, Registry: reg, SystemID: systemID})
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	var p executors.Provider
	select {
	case p = <-made:
	case err := <-done:
		t.Fatalf("manager ended at start: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("manager made no provider within a minute")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			m.StopGracefully()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager: %v", err)
				}
			case <-time.After(time.Minute):
				t.Error("manager did not stop within a minute")
			}
		})
	}
	t.Cleanup(stop)
	return p, stop
}

// RemoveJobLeftovers removes what the runner's jobs left on the engine, found by the executor's
// runner label. A job whose instance was killed cannot clean up through the dead connection, just as
// a vanished cloud instance takes its containers with it. keepCache spares the cache volumes.
func RemoveJobLeftovers(t testing.TB, cli client.APIClient, runnerToken string, keepCache bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", docker.LabelRunner+"="+config.ShortToken(runnerToken)))
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Logf("list leftover containers: %v", err)
		return
	}
	for _, c := range cs {
		_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
	if ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: f}); err == nil {
		for _, n := range ns {
			_ = cli.NetworkRemove(ctx, n.ID)
		}
	}
	if vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f}); err == nil {
		for _, v := range vs.Volumes {
			if keepCache && v.Labels[docker.LabelRole] == "cache" {
				continue
			}
			_ = cli.VolumeRemove(ctx, v.Name, true)
		}
	}
}

// JobResources lists the containers (stopped ones too), networks and volumes that carry the labels f
// asks for, e.g. one build's (docker.LabelBuild).
func JobResources(t testing.TB, cli client.APIClient, f filters.Args) ([]container.Summary, []network.Summary, []*volume.Volume) {
	t.Helper()
	ctx := context.Background()
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	return cs, ns, vs.Volumes
}

// WaitFor polls cond until it holds, failing the test after d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SyncBuffer collects output written from many goroutines (a logger, a command's stdout) for the test
// to read while it is written.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	helperOnce sync.Once
	helperErr  error
)

// Engine is a client of the local Docker Engine, the busybox job image on it, and the helper image,
// built once per test binary so that no test's jobs wait for the first build. Every "instance" of the
// fleet tests is this machine, so they all share this engine.
func Engine(t testing.TB) (cli *client.Client, jobImage string) {
	t.Helper()
	testenv.RequireDocker(t)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	jobImage = testimage.Busybox(t, cli)
	helperOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_, helperErr = helperimage.Ensure(ctx, cli, logging.Discard())
	})
	if helperErr != nil {
		t.Fatalf("helper image: %v", helperErr)
	}
	return cli, jobImage
}

// Finished waits up to within for GitLab (the simulator) to hold job id's final state and returns it.
func Finished(t testing.TB, sim *gitlabsim.Server, id int64, within time.Duration) gitlabsim.JobSnapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	snap, err := sim.WaitFinished(ctx, id)
	if err != nil {
		t.Fatalf("job %d: %v", id, err)
	}
	return snap
}
