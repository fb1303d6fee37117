// Package soak is a crash-and-outage soak of the real `fleetrunner run` binary, bounded in time and
// count and on loopback only. The binary serves two runners, docker-autoscaler on the local plugin and
// on the aws plugin against awssim, with gitlabsim as GitLab behind a TCP proxy, while a mixed
// workload is queued steadily and faults come at random (seeded) times: kill -9 of the manager and a
// restart, instances killed, frozen, terminated or replaced, GitLab 5xx bursts and one outage, AWS
// throttling. Run returns the figures (Figures.Table prints them); the test asserts the goals.
package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// Bounds of the waits, so that a stuck runner fails the run instead of hanging it.
const (
	healthyWithin = time.Minute
	reportWithin  = 2 * time.Minute
	drainWithin   = 3 * time.Minute
	settleWithin  = 30 * time.Second
	quitWithin    = 2 * time.Minute
	// answeredAfter lets gitlabsim finish the requests a killed process had sent before its jobs are
	// looked at.
	answeredAfter = 200 * time.Millisecond
)

// Run soaks the binary with profile p and returns the figures. It fails the test only when the run
// cannot go on: a manager that exits unasked or never answers, or a run past p.Bound.
func Run(t *testing.T, p Profile, seed uint64) Figures {
	began := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), p.Bound)
	defer cancel()
	t.Logf("soak profile %s with seed %d (%s=%d repeats its schedule)", p.Name, seed, SeedEnv, seed)
	w := NewWorld(t, seed)
	t.Cleanup(func() { keepLog(t, w, seed) })
	logf := func(format string, args ...any) {
		t.Logf("%7.1fs "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	wl := newWorkload(ctx, w.GitLab, w.Image, seed)
	defer func() {
		cancel()
		wl.wait()
	}()
	fl := newFaulter(w, seed, logf)
	rng := rand.New(rand.NewPCG(seed, 3))
	outageIn := rng.IntN(p.Crashes + 1)
	fig := Figures{Profile: p.Name, Seed: seed}

	var proc *Process
	// recorded are the jobs in flight at the last kill that a state file knew: the next process reports them.
	var recorded []int64
	for n := 0; ; n++ {
		proc = w.Start(n)
		collect := fig.watchRecovered(ctx, w, proc, n, recorded)
		w.WaitHealthy(proc, healthyWithin)
		collect()
		if n > 0 {
			fig.Crashes++
		}
		start := w.usage()
		phase := p.PhaseMin + time.Duration(rng.Int64N(int64(p.PhaseMax-p.PhaseMin)+1))
		var outage time.Duration
		var outageAt time.Time
		if n == outageIn {
			outage = p.Outage
			outageAt = time.Now().Add(2*time.Second + time.Duration(rng.Int64N(int64(phase/2))))
			phase += outage
		}
		jobs := p.Jobs / (p.Crashes + 1)
		if n < p.Jobs%(p.Crashes+1) {
			jobs++
		}
		logf("manager process %d (pid %d) serves for %s; %d jobs queued meanwhile", n, proc.cmd.Process.Pid, phase.Round(time.Second), jobs)
		end := time.Now().Add(phase)
		w.serve(ctx, proc, phase,
			func(ctx context.Context) { wl.feed(ctx, jobs, phase) },
			func(ctx context.Context) { fl.run(ctx, end, outageAt, outage) })
		if n == 0 {
			fig.FirstStart, fig.FirstEnd = start, w.usage()
		}
		fig.LastStart = start
		if n == p.Crashes {
			break
		}
		recorded = fig.crash(w, wl, proc, n+1)
		logf("kill -9 %d: %d jobs were in flight, %d of them on record in a state file", n+1, len(fig.inFlightAt(n+1)), len(recorded))
	}

	logf("draining: no more jobs or faults")
	kinds := wl.Kinds()
	// A job no state file knew when its manager was killed cannot end; it is counted lost.
	w.until(ctx, proc, drainWithin, func() bool {
		for id := range kinds {
			if j, _ := w.GitLab.Job(id); !j.Finished() && !fig.unrecorded[id] {
				return false
			}
		}
		return true
	})
	w.until(ctx, proc, settleWithin, func() bool {
		fig.Orphaned = w.Orphans()
		return len(fig.Orphaned) == 0
	})
	w.until(ctx, proc, settleWithin, func() bool {
		fig.Leftovers = w.Leftovers()
		return len(fig.Leftovers) == 0
	})
	fig.Leftovers = w.Explain(fig.Leftovers, fl.Hit(), fig.inFlight)
	fig.LastEnd = w.usage()
	logf("SIGQUIT")
	if err := proc.Quit(quitWithin); err != nil {
		fig.Shutdown = err.Error()
	}
	fig.LeftAfterShutdown = w.CloudInstances()
	fig.LeftoversAfterShutdown = w.Explain(w.Leftovers(), fl.Hit(), fig.inFlight)
	for _, pr := range w.StateFiles().Problems {
		fig.StateProblems = append(fig.StateProblems, "after the shutdown: "+pr)
	}
	// A job lost in the hand-out window never ends (GitLab times it out); it is counted there.
	for id := range kinds {
		if fig.handout[id] {
			delete(kinds, id)
		}
	}
	fig.Jobs = w.Jobs(kinds)
	fig.Faults = fl.Counts()
	fig.Took = time.Since(began)
	return fig
}

// serve lets the manager work for d while fns run (the workload, the faults); they are cancelled at
// the end, which also ends the fault in progress.
func (w *World) serve(ctx context.Context, proc *Process, d time.Duration, fns ...func(context.Context)) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, fn := range fns {
		wg.Go(func() { fn(ctx) })
	}
	w.until(ctx, proc, d, func() bool { return false })
}

// until polls cond until it holds or within passed, and reports whether it held. It fails the test
// when the manager exits meanwhile or the run passes its bound.
func (w *World) until(ctx context.Context, proc *Process, within time.Duration, cond func() bool) bool {
	w.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if ended, err := proc.Exited(); ended {
			w.t.Fatalf("fleetrunner exited unasked (%v); its log ends:\n%s", err, w.LogTail(64<<10))
		}
		if time.Now().After(deadline) {
			return false
		}
		if !sleepCtx(ctx, 250*time.Millisecond) && time.Now().Before(deadline) {
			w.t.Fatalf("the soak passed its bound: %v", ctx.Err())
		}
	}
	return true
}

// usage is the manager's usage now; a failure to read it is an error of the run, not a stop.
func (w *World) usage() Usage {
	u, err := w.Usage()
	if err != nil {
		w.t.Errorf("read the manager's goroutines and memory: %v", err)
	}
	return u
}

// crash kills the manager with SIGKILL and checks the state files it left. It notes the jobs it had in
// flight (those GitLab still sees running) and returns the ones on record in a state file, which the
// next process must report; the others are lost, with the time since GitLab handed them out as
// evidence.
func (f *Figures) crash(w *World, wl *workload, proc *Process, n int) []int64 {
	killedAt := time.Now()
	if err := proc.Kill(); err != nil {
		w.t.Fatalf("kill -9 the manager: %v", err)
	}
	time.Sleep(answeredAfter)
	st := w.StateFiles()
	for _, pr := range st.Problems {
		f.StateProblems = append(f.StateProblems, fmt.Sprintf("after kill -9 %d: %s", n, pr))
	}
	if f.inFlight == nil {
		f.inFlight, f.unrecorded, f.handout = map[int64]int{}, map[int64]bool{}, map[int64]bool{}
	}
	var recorded []int64
	for _, j := range w.GitLab.Jobs() {
		if j.Status != gitlabsim.StatusRunning && j.Status != gitlabsim.StatusCanceling {
			continue
		}
		f.inFlight[j.ID] = n
		handedOut := wl.HandedOut(j.ID)
		if since, ok := st.Jobs[j.ID]; ok {
			recorded = append(recorded, j.ID)
			if !handedOut.IsZero() && !since.IsZero() {
				f.RecordSeconds = append(f.RecordSeconds, since.Sub(handedOut).Seconds())
			}
			continue
		}
		f.unrecorded[j.ID] = true
		if !handedOut.IsZero() && killedAt.Sub(handedOut) < handoutWindow {
			f.handout[j.ID] = true
			f.HandoutLost = append(f.HandoutLost, fmt.Sprintf("kill -9 %d: job %d (%s), handed out %s before the kill",
				n, j.ID, j.Name, killedAt.Sub(handedOut).Round(time.Millisecond)))
			continue
		}
		when := "at an unknown time"
		if !handedOut.IsZero() {
			when = killedAt.Sub(handedOut).Round(time.Millisecond).String() + " before the kill"
		}
		f.Unrecorded = append(f.Unrecorded, fmt.Sprintf("kill -9 %d: job %d (%s), handed out %s, is in no state file", n, j.ID, j.Name, when))
	}
	return recorded
}

// inFlightAt lists the jobs in flight at kill -9 n.
func (f *Figures) inFlightAt(n int) []int64 {
	var ids []int64
	for id, at := range f.inFlight {
		if at == n {
			ids = append(ids, id)
		}
	}
	return ids
}

// watchRecovered watches the jobs in flight at kill -9 n, from the restart of proc on; collect waits
// for them to be reported and notes how long each took from the restart.
func (f *Figures) watchRecovered(ctx context.Context, w *World, proc *Process, n int, ids []int64) (collect func()) {
	ctx, cancel := context.WithTimeout(ctx, reportWithin)
	type result struct {
		snap gitlabsim.JobSnapshot
		err  error
		took time.Duration
	}
	results := make(chan result, len(ids))
	for _, id := range ids {
		go func() {
			snap, err := w.GitLab.WaitFinished(ctx, id)
			results <- result{snap, err, time.Since(proc.Started)}
		}()
	}
	return func() {
		defer cancel()
		for range ids {
			r := <-results
			switch {
			case r.err != nil:
				f.Unreported = append(f.Unreported, fmt.Sprintf("kill -9 %d: %v", n, r.err))
			case r.snap.Status != gitlabsim.StatusFailed || r.snap.FailureReason != string(job.RunnerSystemFailure):
				f.Unreported = append(f.Unreported, fmt.Sprintf("kill -9 %d: job %d ended %s %s", n, r.snap.ID, r.snap.Status, r.snap.FailureReason))
			default:
				f.ReportSeconds = append(f.ReportSeconds, r.took.Seconds())
			}
		}
	}
}

// keepLog copies the manager's log out of the test's temporary directory when the test failed, since
// the evidence is in it.
func keepLog(t *testing.T, w *World, seed uint64) {
	if !t.Failed() {
		return
	}
	data, err := os.ReadFile(w.LogPath)
	if err != nil {
		t.Logf("fleetrunner log: %v", err)
		return
	}
	kept := filepath.Join(os.TempDir(), fmt.Sprintf("fleetrunner-soak-%d.log", seed))
	if err := os.WriteFile(kept, data, 0o600); err != nil {
		t.Logf("keep fleetrunner log: %v", err)
		return
	}
	t.Logf("fleetrunner log (all processes) kept in %s; it ends:\n%s", kept, w.LogTail(32<<10))
}
