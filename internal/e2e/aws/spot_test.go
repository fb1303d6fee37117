package e2eaws_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// instanceState is the taskscaler's state of instance id and how many jobs hold a slot on it; gone
// when the taskscaler no longer knows it.
func instanceState(p *dockerautoscaler.Provider, id string) (state string, jobs int, gone bool) {
	i := slices.IndexFunc(p.Instances(), func(in taskscaler.InstanceInfo) bool { return in.ID == id })
	if i < 0 {
		return "", 0, true
	}
	in := p.Instances()[i]
	return in.State, in.Acquired, false
}

// holdsNoJob reports whether instance id is gone or being removed with no job on it.
func holdsNoJob(p *dockerautoscaler.Provider, id string) bool {
	st, jobs, gone := instanceState(p, id)
	return gone || jobs == 0 && (st == "remove" || st == "removing")
}

// TestSpotInterruption: awssim issues a spot interruption notice (EC2's two minutes, shortened) and
// reclaims the instance when the warning is up. An idle noticed instance is removed at once and gets
// no job. A busy one takes no new job (the next job runs elsewhere and succeeds), and its running job,
// killed by the reclaim, fails with runner_system_failure and a job-log line saying the instance was
// reclaimed. The figure: seconds from notice to the instance holding no job.
func TestSpotInterruption(t *testing.T) {
	t.Parallel()
	r := newJobRig(t)
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-spot-notice", 3), watchedSim)
	path := r.writeConfig(t, w, fleet{capacity: 1, maxInstances: 3, idleCount: 1, idleTime: 3 * time.Second,
		interruptionCheck: 500 * time.Millisecond})
	p, stop := r.startManager(t, path)
	testrig.WaitFor(t, time.Minute, "one ready instance", func() bool { return settledAt(w, p, 1) })

	// Idle: removed at once, long before the reclaim.
	idle := p.Instances()[0].ID
	const warning = 8 * time.Second
	if err := w.Sim.InterruptSpot(idle, warning); err != nil {
		t.Fatal(err)
	}
	noticed := time.Now()
	testrig.WaitFor(t, warning, "the idle noticed instance removed before its reclaim", func() bool { return holdsNoJob(p, idle) })
	t.Logf("idle instance: %.1f s from notice to holding no job (removed)", time.Since(noticed).Seconds())
	testrig.WaitFor(t, time.Minute, "a replacement ready", func() bool {
		return p.Stats().Instances.Ready == 1 && !slices.ContainsFunc(p.Instances(), func(in taskscaler.InstanceInfo) bool { return in.ID == idle })
	})
	if perInstance := runJobs(t, r, p, 1, "after-idle-notice", "echo ok"); perInstance[idle] != 0 {
		t.Errorf("a job ran on the noticed instance %s: %v", idle, perInstance)
	}

	// Busy: its job runs on until the reclaim kills it; no new job lands there.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	id, busy := runningScript(ctx, t, r, "reclaimed")
	if err := w.Sim.InterruptSpot(busy, warning); err != nil {
		t.Fatal(err)
	}
	noticed = time.Now()
	testrig.WaitFor(t, warning, "the busy noticed instance draining", func() bool {
		st, _, _ := instanceState(p, busy)
		return st == "draining"
	})
	next := r.gl.Enqueue(gitlabsim.JobSpec{Name: "while-draining", Image: r.image, Script: []string{"echo ok"}})
	snap, err := r.gl.WaitFinished(ctx, id)
	if err != nil {
		t.Fatalf("the reclaimed job never finished: %v", err)
	}
	t.Logf("busy instance: %.1f s from notice to its job failing (reclaimed after %s)", time.Since(noticed).Seconds(), warning)
	testrig.WaitFor(t, 30*time.Second, "the reclaimed instance holding no job", func() bool { return holdsNoJob(p, busy) })
	t.Logf("busy instance: %.1f s from notice to holding no job", time.Since(noticed).Seconds())
	if snap.Status != gitlabsim.StatusFailed || snap.FailureReason != string(job.RunnerSystemFailure) {
		t.Errorf("reclaimed job: %s %q, want failed %s; trace:\n%s", snap.Status, snap.FailureReason, job.RunnerSystemFailure, snap.Trace)
	}
	if !bytes.Contains(snap.Trace, []byte("was reclaimed by the cloud (spot interruption notice (marked-for-termination))")) {
		t.Errorf("the job log does not say the instance was reclaimed:\n%s", snap.Trace)
	}
	nsnap, err := r.gl.WaitFinished(ctx, next)
	if err != nil {
		t.Fatalf("the job queued while the instance drained never finished: %v", err)
	}
	if nsnap.Status != gitlabsim.StatusSuccess || slices.Contains(ranOn(nsnap.Trace), busy) {
		t.Errorf("job queued while %s drained: %s on %v; trace:\n%s", busy, nsnap.Status, ranOn(nsnap.Trace), nsnap.Trace)
	}
	stop()
	if got := p.Stats().Counters.DrainRequested; got != 2 {
		t.Errorf("DrainRequested = %d, want 2 (one per notice)", got)
	}
}

// TestSpotNoticeMovesJobBeforeScript: a job holding a noticed instance whose script has not started
// (its service is still coming up) moves to another instance at once and succeeds there; the job log
// says why it moved.
func TestSpotNoticeMovesJobBeforeScript(t *testing.T) {
	t.Parallel()
	r := newJobRig(t)
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-spot-move", 2), watchedSim)
	path := r.writeConfig(t, w, fleet{capacity: 1, maxInstances: 2, idleCount: 2, idleTime: time.Minute,
		interruptionCheck: 500 * time.Millisecond})
	p, stop := r.startManager(t, path)
	defer stop()
	testrig.WaitFor(t, time.Minute, "two ready instances", func() bool { return settledAt(w, p, 2) })

	// The service listens only after 6 s, and the script waits for it (wait_for_services_timeout), so
	// the job holds its instance for seconds before its script starts.
	port := freePort(t)
	id := r.gl.Enqueue(gitlabsim.JobSpec{Name: "moved", Image: r.image, Script: []string{"echo moved-ok"},
		Services: []job.Image{{Name: r.image, Command: []string{"sh", "-c", fmt.Sprintf("sleep 6; exec httpd -f -p %d", port)},
			Ports: []job.Port{{Number: port}}}}})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	snap, err := r.gl.WaitJob(ctx, id, func(j gitlabsim.JobSnapshot) bool { return j.Finished() || len(ranOn(j.Trace)) > 0 })
	if err != nil || snap.Finished() {
		t.Fatalf("the job never connected to an instance: %v; %s; trace:\n%s", err, snap.Status, snap.Trace)
	}
	first := ranOn(snap.Trace)[0]
	if err := w.Sim.InterruptSpot(first, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	noticed := time.Now()
	testrig.WaitFor(t, 15*time.Second, "the noticed instance holding no job", func() bool {
		_, jobs, gone := instanceState(p, first)
		return gone || jobs == 0
	})
	t.Logf("job before its script: %.1f s from notice to the instance holding no job", time.Since(noticed).Seconds())
	snap, err = r.gl.WaitFinished(ctx, id)
	if err != nil {
		t.Fatalf("the moved job never finished: %v", err)
	}
	on := ranOn(snap.Trace)
	if snap.Status != gitlabsim.StatusSuccess || len(on) != 2 || on[1] == first {
		t.Errorf("moved job: %s on %v (noticed %s), want success on another instance; trace:\n%s", snap.Status, on, first, snap.Trace)
	}
	if !bytes.Contains(snap.Trace, []byte("is being reclaimed by the cloud (spot interruption notice (marked-for-termination)); moving the job to another instance")) {
		t.Errorf("the job log does not say why the job moved:\n%s", snap.Trace)
	}
}

// freePort is a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRebalanceRecommendation: a rebalance recommendation, which EC2 publishes only in the instance's
// metadata, is read through the executor's SSH connection to the instance (a real sshd forwarding to a
// fake IMDSv2 service on loopback) and drains the instance: idle, it is removed at once and replaced.
// The fake serves every instance alike, so the test withdraws the recommendation once the first
// instance is drained, before its replacement is connected. The figure: seconds from recommendation
// to the instance holding no job.
func TestRebalanceRecommendation(t *testing.T) {
	t.Parallel()
	r := newJobRig(t)
	md := awssim.NewMetadata()
	imds := httptest.NewServer(md)
	defer imds.Close()
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-rebalance", 2), watchedSim)
	path := r.writeConfig(t, w, fleet{capacity: 1, maxInstances: 2, idleCount: 1, idleTime: time.Minute,
		interruptionCheck: 500 * time.Millisecond, metadataEndpoint: imds.URL})
	p, stop := r.startManager(t, path)
	testrig.WaitFor(t, time.Minute, "one ready instance", func() bool { return settledAt(w, p, 1) })
	testrig.WaitFor(t, 10*time.Second, "the instance's metadata read", func() bool { return md.Reads() >= 2 })

	idle := p.Instances()[0].ID
	md.Rebalance(time.Now())
	noticed := time.Now()
	testrig.WaitFor(t, 10*time.Second, "the recommended instance removed", func() bool { return holdsNoJob(p, idle) })
	md.Clear()
	t.Logf("idle instance: %.1f s from rebalance recommendation to holding no job (removed)", time.Since(noticed).Seconds())
	testrig.WaitFor(t, time.Minute, "a replacement ready", func() bool {
		return p.Stats().Instances.Ready == 1 && !slices.ContainsFunc(p.Instances(), func(in taskscaler.InstanceInfo) bool { return in.ID == idle })
	})
	if perInstance := runJobs(t, r, p, 1, "after-rebalance", "echo ok"); perInstance[idle] != 0 {
		t.Errorf("a job ran on the recommended instance %s: %v", idle, perInstance)
	}
	stop()
	if got := p.Stats().Counters.DrainRequested; got != 1 {
		t.Errorf("DrainRequested = %d, want 1", got)
	}
	if !r.log.contains(`reason="spot rebalance recommendation`) {
		t.Error("the manager's log does not name the rebalance recommendation as the reason for the drain")
	}
}
