package forecast

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

const (
	// keptBoots is how many boot delays the median is taken over.
	keptBoots = 9
	// minWeeks of the same hour of the week before weeks are trusted over days.
	minWeeks     = 2
	hoursPerDay  = 24
	hoursPerWeek = 7 * hoursPerDay
)

// Forecaster keeps, for every hour it watched, the idle slots that would have let a share Quantile of
// that hour's jobs start at once: for each job it counts the jobs that arrived within one lead (boot
// delay) before it, itself included, less the jobs that ended in that time (their slots are idle, kept
// for the hold), which is what an idle pool must absorb on its own while replacements boot; and keeps
// the hour's Quantile of those counts. It is not safe for concurrent use; the taskscaler calls
// it under its lock.
type Forecaster struct {
	opts Options
	// peaks maps a Unix hour to its figure; an hour present was watched, with or without arrivals.
	peaks map[int64]int
	// recent are the arrivals within the last lead, freed the job ends, oldest first.
	recent, freed []time.Time
	// cur counts, for the hour curH, the jobs by how many arrivals (their own included) lay within one
	// lead before them.
	cur  map[int]int
	curH int64
	// boots are the last boot delays observed, oldest first.
	boots []time.Duration
}

// New returns a Forecaster that goes on from saved (nil: no history).
func New(opts Options, saved *state.Forecast) *Forecaster {
	if opts.Location == nil {
		opts.Location = time.Local
	}
	f := &Forecaster{opts: opts, peaks: map[int64]int{}}
	if saved != nil {
		for _, h := range saved.Hours {
			f.peaks[h.Hour] = max(f.peaks[h.Hour], h.Peak)
		}
		f.boots = append(f.boots, saved.BootDelays...)
		f.boots = f.boots[max(len(f.boots)-keptBoots, 0):]
	}
	return f
}

func unixHour(t time.Time) int64 { return int64(math.Floor(float64(t.Unix()) / 3600)) }

// Watch marks the hour of now as watched (no arrival is then a demand of 0, not a gap) and forgets the
// hours older than the history.
func (f *Forecaster) Watch(now time.Time) {
	h := unixHour(now)
	if _, ok := f.peaks[h]; !ok {
		f.peaks[h] = 0
	}
	oldest := h - int64(f.opts.History/time.Hour)
	for k := range f.peaks {
		if k < oldest {
			delete(f.peaks, k)
		}
	}
}

// Arrive records a job asking for a slot at at (calls come in time order).
func (f *Forecaster) Arrive(at time.Time) {
	f.recent = within(append(f.recent, at), at, f.Lead())
	f.freed = within(f.freed, at, f.Lead())
	h := unixHour(at)
	if h != f.curH || f.cur == nil {
		f.cur, f.curH = map[int]int{}, h
	}
	f.cur[max(len(f.recent)-len(f.freed), 0)]++
	f.peaks[h] = histQuantile(f.cur, f.opts.Quantile)
}

// Freed records a job ending at at: its slot is idle for the next job.
func (f *Forecaster) Freed(at time.Time) {
	f.freed = within(append(f.freed, at), at, f.Lead())
}

// within drops the times in ts (oldest first) one lead or more before now.
func within(ts []time.Time, now time.Time, lead time.Duration) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= lead {
		i++
	}
	return ts[i:]
}

// histQuantile is the nearest-rank q-quantile of the values counted in hist.
func histQuantile(hist map[int]int, q float64) int {
	n := 0
	for _, c := range hist {
		n += c
	}
	rank := max(int(math.Ceil(q*float64(n))), 1)
	for _, v := range slices.Sorted(maps.Keys(hist)) {
		if rank -= hist[v]; rank <= 0 {
			return v
		}
	}
	return 0
}

// Booted records how long an instance took from being asked for to ready.
func (f *Forecaster) Booted(d time.Duration) {
	if d <= 0 {
		return
	}
	f.boots = append(f.boots, d)
	f.boots = f.boots[max(len(f.boots)-keptBoots, 0):]
}

// Lead is how far ahead instances must be asked for: Options.Lead, else the median of the observed boot
// delays, else DefaultBootDelay.
func (f *Forecaster) Lead() time.Duration {
	switch {
	case f.opts.Lead > 0:
		return f.opts.Lead
	case len(f.boots) == 0:
		return DefaultBootDelay
	}
	s := slices.Clone(f.boots)
	slices.Sort(s)
	return s[len(s)/2]
}

// Idle is the idle slots to hold at now: the highest, over the hours from now to now + lead + slack, of
// the median of their past figures (see samples): a typical past hour like it, not its worst. slack is
// how late the caller may act on it (the taskscaler's update interval). ok is false when none of those hours has a past.
func (f *Forecaster) Idle(now time.Time, slack time.Duration) (n int, ok bool) {
	for h := unixHour(now); h <= unixHour(now.Add(f.Lead()+slack)); h++ {
		s := f.samples(h)
		if len(s) == 0 {
			continue
		}
		n, ok = max(n, quantile(s, 0.5)), true
	}
	return n, ok
}

// samples are the past figures of hours like h: the same hour of the week in earlier weeks once at least
// minWeeks are known; else the same hour of earlier days of the same kind (weekday or weekend); else
// of any earlier day.
func (f *Forecaster) samples(h int64) []int {
	var weeks, sameKind, anyDay []int
	weekend := f.weekend(h)
	for past := h - hoursPerDay; ; past -= hoursPerDay {
		if h-past > int64(f.opts.History/time.Hour) {
			break
		}
		p, ok := f.peaks[past]
		if !ok {
			continue
		}
		anyDay = append(anyDay, p)
		if f.weekend(past) == weekend {
			sameKind = append(sameKind, p)
		}
		if (h-past)%hoursPerWeek == 0 {
			weeks = append(weeks, p)
		}
	}
	switch {
	case len(weeks) >= minWeeks:
		return weeks
	case len(sameKind) > 0:
		return sameKind
	}
	return anyDay
}

func (f *Forecaster) weekend(h int64) bool {
	switch time.Unix(h*3600, 0).In(f.opts.Location).Weekday() {
	case time.Saturday, time.Sunday:
		return true
	}
	return false
}

// Hold is how long an idle instance beyond the target may stay: one lead, as long as a new one would
// take to boot. Keeping it longer pays more than booting again unless a job comes within that time.
func (f *Forecaster) Hold() time.Duration { return f.Lead() }

// quantile is the nearest-rank q-quantile of s (s is reordered).
func quantile(s []int, q float64) int {
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Snapshot is the history to save, oldest hour first.
func (f *Forecaster) Snapshot() *state.Forecast {
	s := &state.Forecast{BootDelays: slices.Clone(f.boots)}
	for h, p := range f.peaks {
		s.Hours = append(s.Hours, state.ForecastHour{Hour: h, Peak: p})
	}
	slices.SortFunc(s.Hours, func(a, b state.ForecastHour) int { return cmp.Compare(a.Hour, b.Hour) })
	return s
}
