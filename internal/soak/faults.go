package soak

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// Fault kinds, as the figures name them.
const (
	faultLocalKill   = "local instance killed (sshd SIGKILL)"
	faultLocalFreeze = "local instance frozen (sshd SIGSTOP/SIGCONT)"
	faultAWSSpot     = "aws instance terminated (spot interruption)"
	faultAWSReplace  = "aws instance replaced (failed health check)"
	faultGitLab5xx   = "GitLab 5xx burst (half the answers)"
	faultThrottle    = "AWS throttling burst (half the calls)"
	faultOutage      = "GitLab outage (proxy down)"
)

// faultKinds are drawn from at random; an outage is scheduled apart, once per run.
var faultKinds = []string{faultLocalKill, faultLocalFreeze, faultAWSSpot, faultAWSReplace, faultGitLab5xx, faultThrottle}

// faulter injects faults one after another, each at a random time, for one manager process's life.
type faulter struct {
	w   *World
	rng *rand.Rand
	// logf notes each fault with its time in the run.
	logf func(format string, args ...any)

	mu     sync.Mutex
	counts map[string]int
	// hit maps each instance a fault was aimed at to the fault's kind.
	hit map[string]string
}

func newFaulter(w *World, seed uint64, logf func(string, ...any)) *faulter {
	return &faulter{w: w, rng: rand.New(rand.NewPCG(seed, 2)), logf: logf, counts: map[string]int{}, hit: map[string]string{}}
}

// Counts is how many faults of each kind were injected.
func (f *faulter) Counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.counts)
}

// Hit maps each instance a fault was aimed at to the fault's kind.
func (f *faulter) Hit() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.hit)
}

// count notes a fault of kind, aimed at instance when not empty.
func (f *faulter) count(kind, instance, what string) {
	f.mu.Lock()
	f.counts[kind]++
	if instance != "" {
		f.hit[instance] = kind
	}
	f.mu.Unlock()
	f.logf("fault: %s: %s", kind, what)
}

// run injects faults until end, an outage of outage at outageAt when outage > 0. Every fault is over
// (GitLab answering, instances thawed) when it returns, so that the kill that follows starts clean.
func (f *faulter) run(ctx context.Context, end, outageAt time.Time, outage time.Duration) {
	for {
		wait := time.Duration(1000+f.rng.IntN(2000)) * time.Millisecond
		if outage > 0 && time.Until(outageAt) < wait {
			if !sleepCtx(ctx, time.Until(outageAt)) {
				return
			}
			f.outage(ctx, outage)
			outage = 0
			continue
		}
		if time.Until(end) < wait+time.Second || !sleepCtx(ctx, wait) {
			return
		}
		// A burst or freeze lasts 2-5 s and never past the end.
		hold := min(time.Duration(2000+f.rng.IntN(3000))*time.Millisecond, time.Until(end))
		f.inject(ctx, faultKinds[f.rng.IntN(len(faultKinds))], hold)
	}
}

func (f *faulter) inject(ctx context.Context, kind string, hold time.Duration) {
	w := f.w
	switch kind {
	case faultLocalKill, faultLocalFreeze:
		var ids []string
		var up []*local.SSHD
		for _, in := range w.LocalInstances() {
			if s, ok := in.SSHD(); ok {
				ids, up = append(ids, in.ID), append(up, s)
			}
		}
		if len(up) == 0 {
			return
		}
		i := f.rng.IntN(len(up))
		s := up[i]
		if kind == faultLocalKill {
			if s.Kill() == nil {
				f.count(kind, ids[i], ids[i])
			}
			return
		}
		if s.Freeze() != nil {
			return
		}
		f.count(kind, ids[i], fmt.Sprintf("%s for %s", ids[i], hold.Round(time.Millisecond)))
		sleepCtx(ctx, hold)
		s.Thaw()
	case faultAWSSpot, faultAWSReplace:
		var up []awssim.InstanceInfo
		for _, in := range w.AWSInstances() {
			if in.LifecycleState == "InService" {
				up = append(up, in)
			}
		}
		if len(up) == 0 {
			return
		}
		id := up[f.rng.IntN(len(up))].ID
		var err error
		if kind == faultAWSSpot {
			err = w.AWS.TerminateFromOutside(id)
		} else {
			err = w.AWS.ReplaceInstance(id, awssim.ReplaceUnhealthy)
		}
		if err == nil {
			f.count(kind, id, id)
		}
	case faultGitLab5xx:
		f.count(kind, "", "for "+hold.Round(time.Millisecond).String())
		w.GitLab.SetFaults(gitlabsim.Faults{ErrorRate: 0.5})
		sleepCtx(ctx, hold)
		w.GitLab.SetFaults(gitlabsim.Faults{})
	case faultThrottle:
		f.count(kind, "", "for "+hold.Round(time.Millisecond).String())
		w.AWS.SetFaults(awssim.Faults{ThrottleRate: 0.5})
		sleepCtx(ctx, hold)
		w.AWS.SetFaults(awssim.Faults{})
	}
}

func (f *faulter) outage(ctx context.Context, d time.Duration) {
	f.count(faultOutage, "", "for "+d.String())
	f.w.Proxy.Down()
	sleepCtx(ctx, d)
	f.w.Proxy.Up()
	f.logf("GitLab reachable again")
}

// sleepCtx sleeps for d and reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	slept, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	<-slept.Done()
	return ctx.Err() == nil
}
