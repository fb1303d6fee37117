package demo

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// refresh is how often the view looks at the simulator and the fleet.
const refresh = 200 * time.Millisecond

// scaleInWait bounds the wait, after the last job, for the fleet to shrink to its idle target.
const scaleInWait = IdleTime + 15*time.Second

var connectedRE = regexp.MustCompile(`Instance (\S+) connected`)

type jobView struct {
	name, status, instance string
	startedAt              time.Time
}

// view prints one line per event (instance created, ready, retired; job started, finished) and, after
// each batch of events, the fleet: every instance with its slots (● busy, ○ free) and use count.
type view struct {
	out   io.Writer
	sim   *gitlabsim.Server
	p     *dockerautoscaler.Provider
	start time.Time
	ids   []int64

	jobs      map[int64]*jobView
	instances map[string]taskscaler.InstanceInfo
	created   int
	retired   int
}

func newView(out io.Writer, sim *gitlabsim.Server, p *dockerautoscaler.Provider, ids []int64, start time.Time) *view {
	v := &view{out: out, sim: sim, p: p, start: start, ids: ids, jobs: map[int64]*jobView{}, instances: map[string]taskscaler.InstanceInfo{}}
	for _, id := range ids {
		v.jobs[id] = &jobView{}
	}
	return v
}

func (v *view) say(format string, args ...any) {
	fmt.Fprintf(v.out, "%6.1fs  %s\n", time.Since(v.start).Seconds(), fmt.Sprintf(format, args...))
}

// watch shows events until every job finished and the fleet scaled in (or scaleInWait passed).
func (v *view) watch(ctx context.Context) error {
	t := time.NewTicker(refresh)
	defer t.Stop()
	var doneAt time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		changed := v.pollInstances()
		changed = v.pollJobs() || changed
		if changed {
			v.fleet()
		}
		if !v.allFinished() {
			continue
		}
		if doneAt.IsZero() {
			doneAt = time.Now()
			v.say("pipeline finished; waiting for idle instances beyond idle_count to be retired (idle_time %s)", IdleTime)
		}
		if v.scaledIn() || time.Since(doneAt) > scaleInWait {
			return nil
		}
	}
}

// pollInstances reports instances that appeared, became ready or left.
func (v *view) pollInstances() bool {
	changed := false
	now := map[string]taskscaler.InstanceInfo{}
	for _, in := range v.p.Instances() {
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
	return changed
}

func (v *view) retire(in taskscaler.InstanceInfo) {
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

// fleet prints every live instance: its slots (● busy, ○ free) and use count.
func (v *view) fleet() {
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

// scaledIn is true once only what the idle target needs is left and nothing is being removed.
func (v *view) scaledIn() bool {
	s := v.p.Stats()
	live := s.Instances.Ready + s.Instances.Draining + s.Instances.Creating + s.Instances.Readying + s.Instances.Requested
	need := (IdleCount + CapacityPerInstance - 1) / CapacityPerInstance
	return s.Instances.Removing == 0 && live <= need
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
