package capacity

import (
	"math"
	"slices"
	"time"

	"golang.org/x/time/rate"
)

// Demand is the slot usage the scaler sizes the fleet for.
type Demand struct {
	// Acquired slots run a job on a live instance.
	Acquired int
	// Reserved slots are held for job requests that have not returned yet.
	Reserved int
	// Pending counts Acquire calls waiting for a slot.
	Pending int
	// Unavailable slots sit on instances that reached max_use_count: never reused, but the instance
	// still exists until its jobs end.
	Unavailable int
}

// InUse is the demand in slots. With reservation throttling a reservation is only a long poll that may
// bring no job, so it consumes capacity that exists (preemptive mode) or could exist, but never makes
// the fleet grow or keeps an idle instance alive; a job that does arrive turns into a pending Acquire,
// which does.
func (d Demand) InUse(reservationThrottling bool) int {
	n := d.Acquired + d.Pending + d.Unavailable
	if !reservationThrottling {
		n += d.Reserved
	}
	return n
}

// Fleet is the static shape of the instance group.
type Fleet struct {
	// CapacityPerInstance is the number of slots per instance (at least 1).
	CapacityPerInstance int
	// MaxInstances caps the instances in any state; 0 means no cap.
	MaxInstances int
	// ReservationThrottling keeps reservations out of the demand (see Demand.InUse).
	ReservationThrottling bool
}

func (f Fleet) capacity() int { return max(f.CapacityPerInstance, 1) }

// IdleTarget is the idle capacity in slots the policy asks for at the given in-use slots: idle_count, or
// with a scale_factor max(idle_count, min(ceil(scale_factor*in_use), scale_factor_limit or no cap)).
func IdleTarget(p Policy, inUse int) int {
	if p.ScaleFactor <= 0 {
		return p.IdleCount
	}
	scaled := int(math.Ceil(p.ScaleFactor * float64(inUse)))
	if p.ScaleFactorLimit > 0 {
		scaled = min(scaled, p.ScaleFactorLimit)
	}
	return max(p.IdleCount, scaled)
}

// Desired is the number of live instances (not being removed) the fleet should have:
// ceil((in_use + idle_target) / capacity_per_instance), clamped to max_instances.
func Desired(f Fleet, p Policy, d Demand) int {
	inUse := d.InUse(f.ReservationThrottling)
	slots := inUse + IdleTarget(p, inUse)
	n := (slots + f.capacity() - 1) / f.capacity()
	if f.MaxInstances > 0 {
		n = min(n, f.MaxInstances)
	}
	return n
}

// ToCreate is how many instances to ask for: the shortfall of live (including requested) instances
// against desired, clamped so that all instances, those being deleted included, stay within
// max_instances. Instances still booting count as live, so a slow boot never asks twice for the same
// demand.
func ToCreate(f Fleet, desired, live, total int) int {
	n := desired - live
	if f.MaxInstances > 0 {
		n = min(n, f.MaxInstances-total)
	}
	return max(n, 0)
}

// InstanceView is what SelectRemovals needs to know about one live instance.
type InstanceView struct {
	ID string
	// Ready: the instance serves slots (not booting, not running its ready command).
	Ready bool
	// Acquired is the number of jobs running on it.
	Acquired int
	// Unavailable is the number of its slots that will never take a job again because of
	// max_use_count; they are part of the Demand's Unavailable.
	Unavailable int
	// Retired: it reached max_use_count and takes no new job.
	Retired bool
	// IdleSince is when its last job ended, or when it became ready if it never ran one.
	IdleSince time.Time
}

// SelectRemovals returns the instances to remove now, in this order: retired instances whose jobs
// have all ended, then idle instances that have been idle for at least the policy's idle_time, longest
// idle first, as long as the fleet without them still holds the desired number of instances (instances
// needed for the idle target stay however long they have been idle). Booting instances and instances
// running jobs are never chosen. instances are all live instances, d the demand they carry, requested
// counts instances asked for but not yet listed.
//
// Removing an instance also removes its unavailable slots from the demand, so an idle instance that
// max_use_count has partly used up can go while a fresh one, idle for longer, stays: that is the
// smaller fleet for the same idle target.
func SelectRemovals(now time.Time, f Fleet, p Policy, d Demand, requested int, instances []InstanceView) []string {
	var out []string
	var idle []InstanceView
	live := len(instances) + requested
	for _, in := range instances {
		switch {
		case in.Retired && in.Acquired == 0:
			out = append(out, in.ID)
			live--
			d.Unavailable -= in.Unavailable
		case in.Ready && !in.Retired && in.Acquired == 0 && now.Sub(in.IdleSince) >= p.IdleTime:
			idle = append(idle, in)
		}
	}
	slices.SortStableFunc(idle, func(a, b InstanceView) int { return a.IdleSince.Compare(b.IdleSince) })
	for _, in := range idle {
		without := d
		without.Unavailable -= in.Unavailable
		if live-1 < Desired(f, p, without) {
			continue
		}
		out = append(out, in.ID)
		live--
		d = without
	}
	return out
}

// NewThrottle builds the token bucket on instance creation: limit new instances per second (negative:
// unlimited) with a bucket of burst.
func NewThrottle(limit, burst int) *rate.Limiter {
	if limit < 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(limit), burst)
}

// Throttled takes up to n tokens from the bucket at now and returns how many it got.
func Throttled(l *rate.Limiter, now time.Time, n int) int {
	if n <= 0 {
		return 0
	}
	if l.Limit() == rate.Inf {
		return n
	}
	got := min(n, int(l.TokensAt(now)))
	if got <= 0 || !l.AllowN(now, got) {
		return 0
	}
	return got
}

// Backoff is the wait after the given number of consecutive failures: base doubled per failure after
// the first, capped at ceiling. Zero failures means no wait.
func Backoff(failures int, base, ceiling time.Duration) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := base
	for i := 1; i < failures && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}
