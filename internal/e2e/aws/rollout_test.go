package e2eaws_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// rolloutWatch samples the taskscaler's view of the instances launched before a roll-out: how many
// of them were out of service for it at once, and whether one was ever being removed with a job on it.
type rolloutWatch struct {
	mu          sync.Mutex
	maxDraining int
	removedBusy []string
	stop, done  chan struct{}
}

func watchRollout(p *dockerautoscaler.Provider, old []string) *rolloutWatch {
	rw := &rolloutWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(rw.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			n := 0
			for _, in := range p.Instances() {
				if !slices.Contains(old, in.ID) {
					continue
				}
				switch in.State {
				case "draining", "remove", "removing":
					n++
				}
				if (in.State == "remove" || in.State == "removing") && in.Acquired > 0 {
					rw.mu.Lock()
					rw.removedBusy = append(rw.removedBusy, fmt.Sprintf("%s (%s, %d jobs)", in.ID, in.State, in.Acquired))
					rw.mu.Unlock()
				}
			}
			rw.mu.Lock()
			rw.maxDraining = max(rw.maxDraining, n)
			rw.mu.Unlock()
			select {
			case <-rw.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return rw
}

func (rw *rolloutWatch) end() (maxDraining int, removedBusy []string) {
	select {
	case <-rw.stop:
	default:
		close(rw.stop)
	}
	<-rw.done
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.maxDraining, slices.Clone(rw.removedBusy)
}

// TestRollout: a new launch template version (a new AMI) reaches a fleet of three instances, two of
// them running jobs, one at a time (rollout_max_draining = 1): every instance launched from the old
// version leaves the group, none while a job runs on it; no job fails, those arriving meanwhile
// included; the fleet ends on the new version, and the log says the roll-out finished. The figure: how
// long the roll-out took, from the new version to the last old instance gone.
func TestRollout(t *testing.T) {
	t.Parallel()
	r := newJobRig(t)
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-rollout", 4), watchedSim)
	path := r.writeConfig(t, w, fleet{capacity: 1, maxInstances: 4, idleCount: 1, idleTime: 10 * time.Minute,
		interruptionCheck: 500 * time.Millisecond, rolloutMaxDraining: "1"})
	p, stop := r.startManager(t, path)
	defer stop()
	testrig.WaitFor(t, time.Minute, "one ready instance", func() bool { return settledAt(w, p, 1) })

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// Two jobs busy on the old version, beside the idle instance the policy keeps.
	var jobs []int64
	for i := range 2 {
		jobs = append(jobs, r.gl.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("long-%d", i), Image: r.image,
			Script: []string{`echo "marker-$((6*7))"`, "sleep 8"}}))
	}
	for _, id := range jobs {
		snap, err := r.gl.WaitJob(ctx, id, func(j gitlabsim.JobSnapshot) bool {
			return j.Finished() || strings.Contains(string(j.Trace), "marker-42")
		})
		if err != nil || snap.Finished() {
			t.Fatalf("job %d never got to its script: %v; %s; trace:\n%s", id, err, snap.Status, snap.Trace)
		}
	}
	testrig.WaitFor(t, time.Minute, "three ready instances, two busy", func() bool { return settledAt(w, p, 3) })
	old := w.GroupIDs()
	for _, id := range old {
		if v, _ := w.Sim.LaunchTemplateVersion(id); v != 1 {
			t.Fatalf("instance %s launched from version %d before the roll-out, want 1", id, v)
		}
	}

	// deploy/aws names the version by number: a stack update makes a new version and points the group
	// at it.
	v, err := w.Sim.NewLaunchTemplateVersion(w.Spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Sim.SetGroupLaunchTemplate(w.Spec.Name, strconv.Itoa(v), false); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	rw := watchRollout(p, old)
	defer rw.end()
	// Jobs keep coming during the roll-out.
	for i := range 3 {
		jobs = append(jobs, r.gl.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("during-%d", i), Image: r.image, Script: []string{"sleep 1"}}))
	}
	testrig.WaitFor(t, 2*time.Minute, "every instance of the old version gone", func() bool {
		return !slices.ContainsFunc(w.GroupIDs(), func(id string) bool { return slices.Contains(old, id) })
	})
	took := time.Since(began)
	maxDraining, removedBusy := rw.end()
	t.Logf("roll-out of %d instances at rollout_max_draining = 1 took %.1f s; at most %d draining at once", len(old), took.Seconds(), maxDraining)

	for _, id := range jobs {
		snap, err := r.gl.WaitFinished(ctx, id)
		if err != nil {
			t.Fatalf("job %d never finished: %v", id, err)
		}
		if snap.Status != gitlabsim.StatusSuccess {
			t.Errorf("job %d (%s): %s %s; trace:\n%s", id, snap.Name, snap.Status, snap.FailureReason, snap.Trace)
		}
	}
	if maxDraining != 1 {
		t.Errorf("at most %d old instances draining or being removed at once, want 1 (the pace)", maxDraining)
	}
	if len(removedBusy) > 0 {
		t.Errorf("old instances removed with a job on them: %v", removedBusy)
	}
	testrig.WaitFor(t, time.Minute, "the fleet settled again", func() bool {
		s := p.Stats()
		return s.Instances.Requested+s.Instances.Creating+s.Instances.Readying+s.Instances.Removing == 0
	})
	for _, id := range w.GroupIDs() {
		if got, _ := w.Sim.LaunchTemplateVersion(id); got != v {
			t.Errorf("instance %s runs version %d after the roll-out, want %d", id, got, v)
		}
	}
	if got := p.Stats().Counters.DrainRequested; got != uint64(len(old)) {
		t.Errorf("DrainRequested = %d, want %d (one per old instance)", got, len(old))
	}
	testrig.WaitFor(t, 10*time.Second, "the log saying the roll-out finished", func() bool {
		return strings.Contains(r.log.text(), "roll-out finished")
	})
	if n := strings.Count(r.log.text(), "roll-out: draining an instance on an older launch configuration"); n != len(old) {
		t.Errorf("%d roll-out drains logged, want %d", n, len(old))
	}
}
