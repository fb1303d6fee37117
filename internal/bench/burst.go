package bench

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/sync/errgroup"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

func init() {
	Register(Bench{Name: "2 burst", Run: burst})
}

// burstBoot is EC2Boot's shape (running, then sshd, then Docker) shortened to 3 s, so that 100 jobs
// fit the time budget; without jitter every instance boots in exactly the model's time.
var burstBoot = local.BootModel{Running: time.Second, SSHD: 1500 * time.Millisecond, Docker: 500 * time.Millisecond}

// burst enqueues N jobs at once on an empty fleet (idle_count 0, capacity_per_instance 2, so N/2
// instances are needed at once) and measures how long it takes until every job runs its script,
// against the boot delay B: no autoscaler can start the last job before its instance has booted.
func burst(t *testing.T, p Profile) []Row {
	// extra is the goal: every script runs within B + extra.
	sizes := []struct {
		n     int
		extra time.Duration
	}{{20, 3 * time.Second}, {100, 10 * time.Second}}
	if p.Short {
		sizes = sizes[:1]
		sizes[0].n = 6
	}
	var rows []Row
	for _, size := range sizes {
		t.Run(fmt.Sprintf("jobs=%d", size.n), func(t *testing.T) {
			b := burstOnce(t, size.n)
			rows = append(rows, Row{
				Name: fmt.Sprintf("burst of %d jobs: until every script runs", size.n), Value: b.scripts.Seconds(), Unit: "s",
				Limit: (b.boot + b.bare).Seconds(), LimitName: fmt.Sprintf("boot delay B (%s: running + sshd + Docker) + %d bare containers started at once on this engine", b.boot, size.n),
				Goal: fmt.Sprintf("≤ B + %.0f s", size.extra.Seconds()),
				Note: fmt.Sprintf("%d instances, capacity_per_instance 2, idle_count 0; goal is ≤ %.1f s", size.n/2, (b.boot + size.extra).Seconds()),
			}, Row{
				Name: fmt.Sprintf("  burst of %d jobs: until every instance is ready", size.n), Value: b.ready.Seconds(), Unit: "s",
				Limit: b.boot.Seconds(), LimitName: "boot delay B", Goal: "breakdown",
				Note: "the rest of the burst is the jobs starting on ready instances",
			}, Row{
				Name: fmt.Sprintf("  burst of %d jobs: %d bare containers at once", size.n, size.n), Value: b.bare.Seconds(), Unit: "s",
				Goal: "breakdown", Note: "create, attach and start through the engine's socket until each printed its line; what the engine alone needs",
			})
		})
	}
	return rows
}

// burstTimes are, from the jobs' arrival, when the last job printed its first script line and when the
// last instance was ready, the boot delay the model applied, and how long the same number of bare
// containers started at once took on the engine.
type burstTimes struct{ scripts, ready, boot, bare time.Duration }

// bareBurst starts n bare containers at once through cli, each printing the marker, and returns how long
// until the last one's line arrived: the floor the engine sets under a burst of n jobs on this machine,
// whatever the executor does.
func bareBurst(t *testing.T, cli client.APIClient, image string, n int) time.Duration {
	var g errgroup.Group
	start := time.Now()
	for range n {
		g.Go(func() error {
			_, err := bareContainer(t.Context(), cli, image, "host")
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("bare containers: %v", err)
	}
	return time.Since(start)
}

// burstOnce runs one burst of n jobs on a fresh fleet.
func burstOnce(t *testing.T, n int) burstTimes {
	r := newAutoscalerRig(t, n/2)
	pc := r.runner.Autoscaler.PluginConfig
	pc["boot_delay"], pc["sshd_delay"] = burstBoot.Running.String(), burstBoot.SSHD.String()
	pc["docker_delay"], pc["boot_jitter"] = burstBoot.Docker.String(), 0
	boot := burstBoot.Running + burstBoot.SSHD
	// Without root the plugin cannot hide Docker until its stage ends; then Docker answers with sshd.
	if local.DockerGateAvailable() == nil {
		boot += burstBoot.Docker
	}
	prov := r.start(t)
	for i := range n {
		r.sim.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("burst-%d", i), Image: r.image, Script: []string{"echo " + marker}})
	}
	start := time.Now()
	// The last instance to become ready is watched for until every job has ended: an instance whose
	// jobs are done may already be gone again, so no moment need have all of them ready at once.
	jobsDone, readyAt := make(chan struct{}), make(chan time.Time, 1)
	go func() {
		seen, last := map[string]bool{}, start
		for {
			for _, id := range readyInstances(prov) {
				if !seen[id] {
					seen[id], last = true, time.Now()
				}
			}
			select {
			case <-jobsDone:
				readyAt <- last
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last time.Time
	)
	for range n {
		wg.Go(func() {
			times, err := r.run(t.Context(), prov)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if times.first.After(last) {
				last = times.first
			}
		})
	}
	wg.Wait()
	close(jobsDone)
	ready := <-readyAt
	if t.Failed() {
		t.FailNow()
	}
	cli, image := testrig.Engine(t)
	return burstTimes{scripts: last.Sub(start), ready: ready.Sub(start), boot: boot, bare: bareBurst(t, cli, image, n)}
}
