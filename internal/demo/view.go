package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/metrics"
)

// refresh is how often the view looks at the simulator and the fleet.
const refresh = 200 * time.Millisecond

// scaleInWait bounds the wait, after the last job, for the fleet to shrink to its idle target.
const scaleInWait = IdleTime + 15*time.Second

// unreachableFor is how long the metrics server may fail to answer before the demo gives up.
const unreachableFor = 10 * time.Second

var connectedRE = regexp.MustCompile(`Instance (\S+) connected`)

type jobView struct {
	name, status, instance string
	startedAt              time.Time
}

// view prints one line per event (instance created, ready, retired; job started, finished) and, after
// each batch of events, the fleet: every instance with its slots (● busy, ○ free) and use count. It
// learns about instances from the runner's metrics server and about jobs from the simulator.
type view struct {
	out   io.Writer
	sim   *gitlabsim.Server
	fleet *fleetClient
	start time.Time
	ids   []int64

	jobs      map[int64]*jobView
	instances map[string]metrics.Instance
	created   int
	retired   int
}

func newView(out io.Writer, sim *gitlabsim.Server, fleet *fleetClient, ids []int64, start time.Time) *view {
	v := &view{out: out, sim: sim, fleet: fleet, start: start, ids: ids, jobs: map[int64]*jobView{}, instances: map[string]metrics.Instance{}}
	for _, id := range ids {
		v.jobs[id] = &jobView{}
	}
	return v
}

func (v *view) say(format string, args ...any) {
	fmt.Fprintf(v.out, "%6.1fs  %s\n", time.Since(v.start).Seconds(), fmt.Sprintf(format, args...))
}

// watch shows events until every job finished and the fleet scaled in (or scaleInWait passed). It
// fails when the runner exits, its metrics server stops answering, or the pipeline outlasts
// pipelineTimeout.
func (v *view) watch(ctx context.Context, exited <-chan struct{}) error {
	t := time.NewTicker(refresh)
	defer t.Stop()
	deadline := time.NewTimer(pipelineTimeout)
	defer deadline.Stop()
	var doneAt time.Time
	lastAnswer := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("fleetrunner exited while the pipeline ran")
		case <-deadline.C:
			return fmt.Errorf("the pipeline did not finish within %s", pipelineTimeout)
		case <-t.C:
		}
		changed, err := v.pollInstances(ctx)
		if err != nil {
			if time.Since(lastAnswer) > unreachableFor {
				return fmt.Errorf("fleetrunner's metrics server stopped answering: %w", err)
			}
			continue
		}
		lastAnswer = time.Now()
		changed = v.pollJobs() || changed
		if changed {
			v.printFleet()
		}
		if !v.allFinished() {
			continue
		}
		if doneAt.IsZero() {
			doneAt = time.Now()
			v.say("pipeline finished; waiting for idle instances beyond idle_count to be retired (idle_time %s)", IdleTime)
		}
		if v.scaledIn(ctx) || time.Since(doneAt) > scaleInWait {
			return nil
		}
	}
}

// pollInstances reports instances that appeared, became ready or left.
func (v *view) pollInstances(ctx context.Context) (bool, error) {
	list, err := v.fleet.instances(ctx)
	if err != nil {
		return false, err
	}
	changed := false
	now := map[string]metrics.Instance{}
	for _, in := range list {
		now[in.ID] = in
		old, known := v.instances[in.ID]
		switch {
		case !known:
			v.created++
			v.say("▲ instance %s created (booting)", in.ID)
			changed = true
		case old.State != "ready" && old.State != "draining" && in.State == "ready":
			v.say("  instance %s ready", in.ID)
			changed = true
		case old.State != "draining" && in.State == "draining":
			v.say("  instance %s reached max_use_count (%d): no new jobs, retired once its jobs end", in.ID, MaxUseCount)
			changed = true
		}
		if (in.State == "remove" || in.State == "removing") && old.State != "remove" && old.State != "removing" && known {
			v.retire(in)
			changed = true
		}
	}
	for id, old := range v.instances {
		if _, ok := now[id]; !ok {
			if old.State != "remove" && old.State != "removing" {
				v.retire(old)
			}
			changed = true
		}
	}
	v.instances = now
	return changed, nil
}

func (v *view) retire(in metrics.Instance) {
	v.retired++
	why := "idle longer than idle_time beyond idle_count"
	if in.UseCount >= MaxUseCount {
		why = fmt.Sprintf("ran %d jobs (max_use_count)", in.UseCount)
	}
	v.say("▼ instance %s retired: %s", in.ID, why)
}

// pollJobs reports jobs that started on an instance or finished.
func (v *view) pollJobs() bool {
	changed := false
	for _, id := range v.ids {
		snap, ok := v.sim.Job(id)
		if !ok {
			continue
		}
		j := v.jobs[id]
		j.name = snap.Name
		if j.instance == "" {
			if m := connectedRE.FindSubmatch(snap.Trace); m != nil {
				j.instance, j.startedAt = string(m[1]), time.Now()
				v.say("● job %-14s #%d started on %s", snap.Name, id, j.instance)
				changed = true
			}
		}
		if snap.Status == j.status {
			continue
		}
		j.status = snap.Status
		switch snap.Status {
		case gitlabsim.StatusSuccess:
			v.say("✔ job %-14s #%d succeeded on %s", snap.Name, id, j.instance)
			changed = true
		case gitlabsim.StatusFailed:
			v.say("✘ job %-14s #%d failed (%s) on %s", snap.Name, id, snap.FailureReason, orNone(j.instance))
			changed = true
		case gitlabsim.StatusSkipped, gitlabsim.StatusCanceled:
			v.say("✘ job %-14s #%d %s", snap.Name, id, snap.Status)
			changed = true
		}
	}
	return changed
}

func orNone(s string) string {
	if s == "" {
		return "no instance"
	}
	return s
}

// printFleet prints every live instance: its slots (● busy, ○ free) and use count.
func (v *view) printFleet() {
	ids := make([]string, 0, len(v.instances))
	for id := range v.instances {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var parts []string
	for _, id := range ids {
		in := v.instances[id]
		slots := strings.Repeat("●", in.Acquired) + strings.Repeat("○", max(0, CapacityPerInstance-in.Acquired))
		parts = append(parts, fmt.Sprintf("%s[%s %d/%d %s]", id, slots, in.UseCount, MaxUseCount, in.State))
	}
	if len(parts) == 0 {
		parts = []string{"(no instances)"}
	}
	fmt.Fprintf(v.out, "         fleet: %s\n", strings.Join(parts, "  "))
}

func (v *view) allFinished() bool {
	for _, j := range v.jobs {
		switch j.status {
		case gitlabsim.StatusSuccess, gitlabsim.StatusFailed, gitlabsim.StatusCanceled, gitlabsim.StatusSkipped:
		default:
			return false
		}
	}
	return true
}

// scaledIn is true once only what the idle target needs is left and nothing is being removed, as the
// runner's fleeting_provisioner_instances gauge reports it.
func (v *view) scaledIn(ctx context.Context) bool {
	s, err := v.fleet.scrape(ctx)
	if err != nil {
		return false
	}
	const gauge = "fleeting_provisioner_instances"
	live := 0.0
	for _, state := range []string{"requested", "creating", "readying", "running", "draining"} {
		live += s.sum(gauge, "state", state)
	}
	need := (IdleCount + CapacityPerInstance - 1) / CapacityPerInstance
	return s.sum(gauge, "state", "deleting") == 0 && live <= float64(need)
}

// operatorCounters prints what the runner's own metrics say about the run, as an operator sees it.
func (v *view) operatorCounters(ctx context.Context) {
	s, err := v.fleet.scrape(ctx)
	if err != nil {
		return
	}
	const ops = "fleeting_provisioner_instance_operations_total"
	v.say("fleetrunner's /metrics: gitlab_runner_jobs_total %.0f, failed %.0f; %s: created %.0f, removed %.0f",
		s.sum("gitlab_runner_jobs_total", "", ""), s.sum("gitlab_runner_failed_jobs_total", "", ""),
		ops, s.sum(ops, "operation", "created"), s.sum(ops, "operation", "removed"))
}

func (v *view) summary() Summary {
	s := Summary{Jobs: len(v.jobs), InstancesCreated: v.created, InstancesRetired: v.retired}
	for _, j := range v.jobs {
		if j.status == gitlabsim.StatusSuccess {
			s.Succeeded++
		} else {
			s.Failed++
		}
	}
	return s
}
