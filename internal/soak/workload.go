package soak

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
)

// Job kinds of the mixed workload.
const (
	kindEcho  = "echo"
	kindSleep = "sleep"
	kindLog   = "log"
	kindFail  = "fail"
)

// workload queues jobs and remembers what each was meant to do and when GitLab handed it out.
type workload struct {
	gl    *gitlabsim.Server
	image string
	rng   *rand.Rand
	// ctx bounds the watches of pending jobs, which wait ends.
	ctx     context.Context
	watches sync.WaitGroup

	mu        sync.Mutex
	kinds     map[int64]string
	handedOut map[int64]time.Time
	n         int
}

func newWorkload(ctx context.Context, gl *gitlabsim.Server, image string, seed uint64) *workload {
	return &workload{gl: gl, image: image, rng: rand.New(rand.NewPCG(seed, 1)), ctx: ctx,
		kinds: map[int64]string{}, handedOut: map[int64]time.Time{}}
}

// spec draws a job: a third short echoes, a third sleeping a few seconds, a fifth writing about 8 KB of
// log, the rest failing with exit 1.
func (wl *workload) spec() (string, gitlabsim.JobSpec) {
	wl.n++
	s := gitlabsim.JobSpec{Name: fmt.Sprintf("soak-%03d", wl.n), Image: wl.image}
	var kind string
	switch r := wl.rng.IntN(100); {
	case r < 33:
		kind, s.Script = kindEcho, []string{`echo "soak job $CI_JOB_NAME"`}
	case r < 66:
		kind, s.Script = kindSleep, []string{fmt.Sprintf("sleep %d", 2+wl.rng.IntN(4)), "echo slept"}
	case r < 85:
		kind, s.Script = kindLog, []string{`for i in $(seq 1 80); do echo "soak log line $i of $CI_JOB_NAME: the quick brown fox jumps over the lazy dog 0123456789"; done`}
	default:
		kind, s.Script = kindFail, []string{`echo "this job fails on purpose"`, "exit 1"}
	}
	s.Name += "-" + kind
	return kind, s
}

// feed queues n jobs at random times within d.
func (wl *workload) feed(ctx context.Context, n int, d time.Duration) {
	offsets := make([]time.Duration, n)
	for i := range offsets {
		offsets[i] = time.Duration(wl.rng.Int64N(int64(d)))
	}
	slices.Sort(offsets)
	start := time.Now()
	for _, off := range offsets {
		if !sleepCtx(ctx, time.Until(start.Add(off))) {
			return
		}
		wl.mu.Lock()
		kind, spec := wl.spec()
		id := wl.gl.Enqueue(spec)
		wl.kinds[id] = kind
		wl.mu.Unlock()
		wl.watches.Go(func() { wl.watchHandout(id) })
	}
}

// watchHandout notes when GitLab hands job id to a runner: a kill -9 right after it may leave the job
// in no state file.
func (wl *workload) watchHandout(id int64) {
	_, err := wl.gl.WaitJob(wl.ctx, id, func(j gitlabsim.JobSnapshot) bool { return j.Status != gitlabsim.StatusPending })
	if err != nil {
		return
	}
	wl.mu.Lock()
	wl.handedOut[id] = time.Now()
	wl.mu.Unlock()
}

// HandedOut is when GitLab handed job id to a runner, zero if it did not yet.
func (wl *workload) HandedOut(id int64) time.Time {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	return wl.handedOut[id]
}

// wait waits for the watches to end, once their context is done.
func (wl *workload) wait() { wl.watches.Wait() }

// Kinds maps every queued job to its kind.
func (wl *workload) Kinds() map[int64]string {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	return maps.Clone(wl.kinds)
}
