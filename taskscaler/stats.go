package taskscaler

import (
	"maps"
	"slices"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/capacity"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// Counters only ever grow; they are ready to be exported as Prometheus counters.
type Counters struct {
	IncreaseAsked       uint64 // instances asked for in Increase
	InstancesRequested  uint64 // instances the plugin accepted in Increase
	DecreaseAsked       uint64 // instances asked to be removed in Decrease (retries count again)
	DecreaseAccepted    uint64 // instances the plugin accepted to remove
	InstancesCreated    uint64 // new instances seen in the group
	InstancesReady      uint64 // instances that passed their ready command
	InstancesRemoved    uint64 // instances the taskscaler removed and saw disappear
	InstancesAdopted    uint64 // instances taken over from saved state
	UnknownRemoved      uint64 // pre-existing instances without saved state, removed for safety
	UnexpectedRemovals  uint64 // instances that disappeared without being removed by the taskscaler
	ReadyFailures       uint64 // failed ready commands (or connection details)
	IncreaseFailures    uint64 // Increase calls that failed in whole or in part
	DecreaseFailures    uint64 // Decrease calls that failed in whole or in part
	UpdateFailures      uint64 // failed listings of the group
	HealthCheckFailures uint64 // failed health checks
	UnhealthyRemoved    uint64 // instances replaced after failure_threshold failed health checks
	MarkedUnhealthy     uint64 // instances removed through MarkUnhealthy
	DrainRequested      uint64 // instances drained through Drain (e.g. a spot interruption notice)
	// ReadyDuration sums creation-to-ready time over InstancesReady instances.
	ReadyDuration time.Duration
	// InstanceTime sums the time instances spent in each state: what the fleet costs, and how much of
	// it is idle.
	InstanceTime InstanceTime
}

// InstanceTime is instance time by state, summed over instances. Instances asked for but not yet
// listed by the plugin are not counted: the cloud may not bill them yet.
type InstanceTime struct {
	Booting  time.Duration // listed, not ready yet (creating, or running its ready command)
	Idle     time.Duration // ready, no job on it
	Busy     time.Duration // ready, at least one job on it
	Draining time.Duration // reached max_use_count or drained on request, its last jobs running
	Removing time.Duration // being removed
}

// accountLocked adds the time since the last call to InstanceTime, for each instance in the state it
// is in now. Every change of an instance's state calls it first, so each interval is counted in the
// state the instance was in throughout.
func (ts *Taskscaler) accountLocked() {
	now := ts.clock.Now()
	d := now.Sub(ts.accountedAt)
	if ts.accountedAt.IsZero() || d <= 0 {
		ts.accountedAt = now
		return
	}
	ts.accountedAt = now
	t := &ts.counters.InstanceTime
	for _, in := range ts.instances {
		switch in.state {
		case stCreating, stReadying:
			t.Booting += d
		case stReady:
			if len(in.acq) > 0 {
				t.Busy += d
			} else {
				t.Idle += d
			}
		case stDraining:
			t.Draining += d
		case stRemove, stRemoving:
			t.Removing += d
		}
	}
}

// Measure names an instance lifecycle duration passed to Options.Observe.
type Measure int

const (
	// MeasureCreation runs from the Increase the plugin accepted to the instance's first listing.
	MeasureCreation Measure = iota
	// MeasureIsRunning runs from the first listing to the plugin reporting the instance running.
	MeasureIsRunning
	// MeasureReadiness runs from running to ready: connection details, the Docker Engine and
	// instance_ready_command (the ReadyUp hook) passed.
	MeasureReadiness
	// MeasureDeletion runs from the first Decrease for the instance to its leaving the group.
	MeasureDeletion
	// MeasureLife runs from the first listing to leaving the group, however it left.
	MeasureLife
)

// observe passes a lifecycle duration to Options.Observe.
func (ts *Taskscaler) observe(m Measure, d time.Duration) {
	if ts.opts.Observe != nil {
		ts.opts.Observe(m, d)
	}
}

// InstanceCounts counts instances by taskscaler state.
type InstanceCounts struct {
	Requested int // accepted by the plugin, not listed yet
	Creating  int
	Readying  int // running its ready command
	Ready     int
	Draining  int // reached max_use_count or drained on request, jobs still running
	Removing  int
}

// SlotCounts counts job slots. Reservations are not tied to a slot: Idle counts free slots on ready
// instances whether or not a reservation is waiting for one.
type SlotCounts struct {
	Idle        int
	Reserved    int
	Acquired    int
	Pending     int
	Unavailable int
}

// Stats is a point-in-time view for metrics and logs.
type Stats struct {
	// Policy is the index of the active policy, -1 when none matches.
	Policy     int
	Preemptive bool
	IdleTarget int
	// Desired is the instance count the last reconcile aimed for.
	Desired   int
	Instances InstanceCounts
	Slots     SlotCounts
	Counters  Counters
}

// InstanceInfo describes one instance.
type InstanceInfo struct {
	ID        string
	State     string
	UseCount  int
	Acquired  int
	IdleSince time.Time
	// CreatedAt is when the group first listed the instance (for an adopted one, from the state file).
	CreatedAt time.Time
	// Jobs are the recorded jobs (RecordJob) holding a slot on it now, in ascending order.
	Jobs []int64
}

// Stats returns the current counts.
func (ts *Taskscaler) Stats() Stats {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.accountLocked()
	now := ts.clock.Now()
	d := ts.demandLocked()
	p := capacity.Active(ts.policies, now)
	s := Stats{
		Policy:     capacity.ActiveIndex(ts.policies, now),
		Preemptive: p.Preemptive,
		IdleTarget: capacity.IdleTarget(p, d.InUse(ts.opts.ReservationThrottling)),
		Desired:    ts.desired,
		Slots: SlotCounts{
			Idle: ts.freeSlotsLocked(), Reserved: d.Reserved, Acquired: d.Acquired,
			Pending: d.Pending, Unavailable: d.Unavailable,
		},
		Counters: ts.counters,
	}
	s.Instances.Requested = ts.requestedLocked()
	for _, in := range ts.instances {
		switch in.state {
		case stCreating:
			s.Instances.Creating++
		case stReadying:
			s.Instances.Readying++
		case stReady:
			s.Instances.Ready++
		case stDraining:
			s.Instances.Draining++
		case stRemove, stRemoving:
			s.Instances.Removing++
		}
	}
	return s
}

// Instances lists every instance the taskscaler knows, sorted by ID.
func (ts *Taskscaler) Instances() []InstanceInfo {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := make([]InstanceInfo, 0, len(ts.instances))
	for _, id := range slices.Sorted(maps.Keys(ts.instances)) {
		in := ts.instances[id]
		info := InstanceInfo{ID: id, State: in.state.String(), UseCount: in.useCount, Acquired: len(in.acq), IdleSince: in.idleSince, CreatedAt: in.createdAt}
		for key := range in.acq {
			if rec, ok := ts.jobs[key]; ok {
				info.Jobs = append(info.Jobs, rec.jobID)
			}
		}
		slices.Sort(info.Jobs)
		out = append(out, info)
	}
	return out
}

// markDirty asks the persister to write the state soon.
func (ts *Taskscaler) markDirty() {
	if ts.opts.State == nil {
		return
	}
	select {
	case ts.persistCh <- struct{}{}:
	default:
	}
}

// persister writes the state file in the background until the loop stops.
func (ts *Taskscaler) persister() {
	defer close(ts.persistEnd)
	for {
		select {
		case <-ts.baseCtx.Done():
			return
		case <-ts.persistCh:
			if err := ts.save(); err != nil {
				ts.log.WithError(err).Warn("could not write taskscaler state")
			}
		}
	}
}

// save writes the current state now: when it returns, the file holds every change made before the
// call. Concurrent saves are serialised and commit together: the snapshot is taken only once the
// previous write is done, so one write covers every caller that arrived meanwhile (with 2,000 jobs
// starting, one write per RecordJob saturated the CPU), and an older snapshot never overwrites a newer
// one.
func (ts *Taskscaler) save() error {
	if ts.opts.State == nil {
		return nil
	}
	ts.mu.Lock()
	ts.saveSeq++
	want := ts.saveSeq
	ts.mu.Unlock()

	ts.saveMu.Lock()
	defer ts.saveMu.Unlock()
	if want <= ts.savedSeq {
		return nil // a snapshot taken after this call's changes is on disk
	}
	ts.mu.Lock()
	snap := ts.snapshotLocked()
	seq := ts.saveSeq
	ts.mu.Unlock()
	if err := ts.opts.State.Save(snap); err != nil {
		return err
	}
	ts.savedSeq = seq
	return nil
}

func (ts *Taskscaler) snapshotLocked() *state.Snapshot {
	snap := &state.Snapshot{SavedAt: ts.clock.Now(), Instances: []state.Instance{}, Jobs: []state.Job{}}
	for _, id := range slices.Sorted(maps.Keys(ts.instances)) {
		in := ts.instances[id]
		si := state.Instance{
			ID: id, State: in.state.String(), UseCount: in.useCount, ConnectInfo: in.connectInfo,
			Data: maps.Clone(in.data), CreatedAt: in.createdAt, ReadyAt: in.readyAt, IdleSince: in.idleSince,
		}
		snap.Instances = append(snap.Instances, si)
	}
	// Until the first listing, instances known only from the previous state are kept as they were, so a
	// crash before then loses nothing.
	for _, id := range slices.Sorted(maps.Keys(ts.restored)) {
		if _, ok := ts.instances[id]; !ok {
			snap.Instances = append(snap.Instances, ts.restored[id])
		}
	}
	for _, r := range ts.recovered {
		sj := state.Job{Key: r.Key, JobID: r.JobID, Data: r.Data, Since: r.Since}
		// Once the first listing has dealt with its instance, the job must not count against it again.
		if ts.restored != nil {
			sj.InstanceID = r.InstanceID
		}
		snap.Jobs = append(snap.Jobs, sj)
	}
	for _, key := range slices.Sorted(maps.Keys(ts.jobs)) {
		j := ts.jobs[key]
		sj := state.Job{Key: key, JobID: j.jobID, Data: j.data, Since: j.since}
		if a, ok := ts.acquired[key]; ok {
			sj.InstanceID = a.InstanceID
		}
		snap.Jobs = append(snap.Jobs, sj)
	}
	if ts.forecast != nil {
		snap.Forecast = ts.forecast.Snapshot()
	}
	return snap
}
