package docker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
)

// running holds the builds (LabelBuild values) this process is running. It is process-wide, not per
// executor: whatever runs here is owned here, whichever provider started it.
var running = struct {
	sync.Mutex
	builds map[string]struct{}
}{builds: map[string]struct{}{}}

// Running reports whether this process is running the build (a LabelBuild value) now: from before the
// job creates anything on its engine until its cleanup has returned.
func Running(build string) bool {
	running.Lock()
	defer running.Unlock()
	_, ok := running.builds[build]
	return ok
}

// track marks build as running until the returned func is called.
func track(build string) (done func()) {
	running.Lock()
	running.builds[build] = struct{}{}
	running.Unlock()
	return func() {
		running.Lock()
		delete(running.builds, build)
		running.Unlock()
	}
}

// Leftovers counts what RemoveLeftovers removed.
type Leftovers struct {
	Containers, Networks, Volumes int
	// Jobs are the IDs (LabelJobID) of the jobs whose resources were removed, sorted.
	Jobs []int64
}

// Empty reports whether nothing was removed.
func (l Leftovers) Empty() bool { return l.Containers+l.Networks+l.Volumes == 0 }

// Fields are the counts and job IDs, for a log line.
func (l Leftovers) Fields() logrus.Fields {
	return logrus.Fields{"containers": l.Containers, "networks": l.Networks, "volumes": l.Volumes, "jobs": l.Jobs}
}

// RemoveLeftovers removes, from the engine cli talks to, the containers (running ones too), networks and
// volumes of the jobs of runner (its short token, LabelRunner) that the runner manager systemID
// (LabelSystemID) started and that are not running any more: what a killed manager process, or an
// engine that cleanup could not reach, left behind. Another runner's or another manager's resources,
// and the cache volumes that outlive jobs on purpose (they carry no LabelBuild), are never touched.
//
// running says whether a build (LabelBuild) is still running; pass Running. It is asked after each
// listing rather than once up front: a job marks its build running before it creates anything, so what
// a listing shows belongs either to a build marked by then or to one not running here (over, or a
// previous process's). A job that starts during the sweep is never taken for a leftover, with no lock
// held across engine calls. A snapshot taken first would miss such a job; keeping to resources older
// than this process would miss this process's own jobs whose cleanup could not reach the engine.
func RemoveLeftovers(ctx context.Context, cli client.APIClient, runner, systemID string, running func(build string) bool) (Leftovers, error) {
	rm := removal{
		cli: cli,
		filter: filters.NewArgs(
			filters.Arg("label", LabelManaged+"=true"),
			filters.Arg("label", LabelRunner+"="+runner),
			// Per job only: cache volumes carry no build label.
			filters.Arg("label", LabelBuild),
		),
		spare: func(labels map[string]string) bool {
			return labels[LabelSystemID] != systemID || running(labels[LabelBuild])
		},
	}
	removed, err := rm.run(ctx)
	if err != nil {
		return removed, fmt.Errorf("remove the leftovers of runner %s's finished jobs (check that the Docker Engine answers; "+
			"they carry the labels %s=%s and %s): %w", runner, LabelRunner, runner, LabelBuild, err)
	}
	return removed, nil
}

// removal removes containers (with their anonymous volumes), then the networks and volumes they used:
// those that a listing by filter shows and spare does not keep, and the known ones.
type removal struct {
	cli    client.APIClient
	filter filters.Args
	// spare keeps a listed resource, judged by its labels; nil keeps none.
	spare func(labels map[string]string) bool
	// containers, networks and volumes are removed even when no listing shows them: the IDs and names a
	// job recorded as it made them.
	containers, networks, volumes []string
}

// target is one resource to remove and the job it belongs to (0 when unknown).
type target struct {
	id  string
	job int64
}

// removalTally collects what a removal did, from its parallel removals.
type removalTally struct {
	mu   sync.Mutex
	out  Leftovers
	jobs map[int64]bool
	errs []error
}

func (rm removal) run(ctx context.Context) (Leftovers, error) {
	t := &removalTally{jobs: map[int64]bool{}}

	cs, err := rm.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: rm.filter})
	t.failed(err, "list containers")
	targets := known(rm.containers)
	for _, c := range cs {
		targets = rm.pick(targets, c.ID, c.Labels)
	}
	t.removeAll(ctx, targets, &t.out.Containers, func(ctx context.Context, id string) error {
		return wrapRemove(rm.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}), "container", shortID(id))
	})

	ns, err := rm.cli.NetworkList(ctx, network.ListOptions{Filters: rm.filter})
	t.failed(err, "list networks")
	targets = known(rm.networks)
	for _, n := range ns {
		targets = rm.pick(targets, n.ID, n.Labels)
	}
	t.removeAll(ctx, targets, &t.out.Networks, func(ctx context.Context, id string) error {
		return wrapRemove(rm.cli.NetworkRemove(ctx, id), "network", shortID(id))
	})

	vs, err := rm.cli.VolumeList(ctx, volume.ListOptions{Filters: rm.filter})
	t.failed(err, "list volumes")
	targets = known(rm.volumes)
	for _, v := range vs.Volumes {
		targets = rm.pick(targets, v.Name, v.Labels)
	}
	t.removeAll(ctx, targets, &t.out.Volumes, func(ctx context.Context, name string) error {
		return wrapRemove(rm.cli.VolumeRemove(ctx, name, true), "volume", name)
	})

	t.out.Jobs = slices.Sorted(maps.Keys(t.jobs))
	return t.out, errors.Join(t.errs...)
}

func known(ids []string) []target {
	out := make([]target, 0, len(ids))
	for _, id := range ids {
		out = append(out, target{id: id})
	}
	return out
}

// pick adds a listed resource unless spare keeps it; one already known gets its job.
func (rm removal) pick(targets []target, id string, labels map[string]string) []target {
	if rm.spare != nil && rm.spare(labels) {
		return targets
	}
	job, _ := strconv.ParseInt(labels[LabelJobID], 10, 64)
	for i := range targets {
		if targets[i].id == id {
			targets[i].job = job
			return targets
		}
	}
	return append(targets, target{id: id, job: job})
}

func wrapRemove(err error, kind, name string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("remove %s %s: %w", kind, name, err)
}

// removeAll removes the targets, 8 at a time. One already gone counts as neither removed nor failed.
func (t *removalTally) removeAll(ctx context.Context, targets []target, count *int, remove func(ctx context.Context, id string) error) {
	var g errgroup.Group
	g.SetLimit(8)
	for _, tg := range targets {
		g.Go(func() error {
			err := remove(ctx, tg.id)
			if cerrdefs.IsNotFound(err) {
				return nil
			}
			t.mu.Lock()
			defer t.mu.Unlock()
			if err != nil {
				t.errs = append(t.errs, err)
				return nil
			}
			*count++
			if tg.job != 0 {
				t.jobs[tg.job] = true
			}
			return nil
		})
	}
	_ = g.Wait()
}

// failed records a listing's error; the known resources are still removed.
func (t *removalTally) failed(err error, what string) {
	if err != nil {
		t.mu.Lock()
		t.errs = append(t.errs, fmt.Errorf("%s: %w", what, err))
		t.mu.Unlock()
	}
}
