package sim

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Job is one line of a trace: a CI job that reaches GitLab's queue at Arrival (from the start of the
// trace) and runs for Duration once it has a slot.
type Job struct {
	Arrival  time.Duration
	Duration time.Duration
	Pipeline string
}

// traceHeader is the first line every trace file starts with.
var traceHeader = []string{"arrival_s", "duration_s", "pipeline"}

// LoadTrace reads a trace file; see ReadTrace.
func LoadTrace(path string) ([]Job, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening trace: %w", err)
	}
	defer f.Close()
	jobs, err := ReadTrace(f)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return jobs, nil
}

// ReadTrace parses a trace in CSV: the header arrival_s,duration_s,pipeline, then one job per line
// with non-negative seconds (decimals allowed). The header may name more columns after these three (the
// manager's job history adds created_at,runner,job_id); their values are ignored. Jobs come back
// ordered by arrival, ties in file order. A malformed line is an error naming its line number.
func ReadTrace(r io.Reader) ([]Job, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // checked here, to name the line and what it should hold
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("empty trace: want the header arrival_s,duration_s,pipeline and one job per line")
	}
	if err != nil {
		return nil, fmt.Errorf("reading the header: %w", err)
	}
	if len(header) < len(traceHeader) || !slices.Equal(trimAll(header[:len(traceHeader)]), traceHeader) {
		return nil, fmt.Errorf("line 1: header is %q, want it to start with %q", strings.Join(header, ","), strings.Join(traceHeader, ","))
	}
	fields := len(header)
	var jobs []Job
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// csv.ParseError names the line itself.
			return nil, fmt.Errorf("malformed CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != fields {
			return nil, fmt.Errorf("line %d: %d fields, want %d as in the header (arrival_s,duration_s,pipeline first)", line, len(rec), fields)
		}
		arrival, err := seconds(rec[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: arrival_s: %w", line, err)
		}
		duration, err := seconds(rec[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: duration_s: %w", line, err)
		}
		jobs = append(jobs, Job{Arrival: arrival, Duration: duration, Pipeline: strings.TrimSpace(rec[2])})
	}
	if len(jobs) == 0 {
		return nil, errors.New("the trace has a header but no jobs")
	}
	slices.SortStableFunc(jobs, func(a, b Job) int { return cmp.Compare(a.Arrival, b.Arrival) })
	return jobs, nil
}

// unixEpochArrival tells an arrival in Unix seconds (September 2001 or later) from one counted from
// the trace's start: no trace spans 31 years.
const unixEpochArrival = 1_000_000_000 * time.Second

// Rebase returns a trace whose arrivals are Unix seconds (as in the manager's job history) counted from
// the Monday 00:00 UTC before its first job instead, with that Monday, so that policy periods meet the
// jobs at their real hours and weekdays. Any other trace comes back as it is, with ok false.
func Rebase(jobs []Job) (rebased []Job, start time.Time, ok bool) {
	if len(jobs) == 0 || jobs[0].Arrival < unixEpochArrival {
		return jobs, time.Time{}, false
	}
	first := time.Unix(0, int64(jobs[0].Arrival)).UTC()
	day := time.Date(first.Year(), first.Month(), first.Day(), 0, 0, 0, 0, time.UTC)
	start = day.AddDate(0, 0, -((int(day.Weekday()) + 6) % 7))
	origin := time.Duration(start.UnixNano())
	rebased = make([]Job, len(jobs))
	for i, j := range jobs {
		j.Arrival -= origin
		rebased[i] = j
	}
	return rebased, start, true
}

// seconds parses a non-negative, finite number of seconds, kept to the nanosecond.
func seconds(s string) (time.Duration, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a number of seconds", s)
	case math.IsNaN(v) || math.IsInf(v, 0) || v < 0:
		return 0, fmt.Errorf("%q must be a finite number of seconds ≥ 0", s)
	case v > math.MaxInt64/float64(time.Second):
		return 0, fmt.Errorf("%q seconds is too large", s)
	}
	return time.Duration(math.Round(v * float64(time.Second))), nil
}

func trimAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.TrimSpace(strings.TrimPrefix(s, "\ufeff"))
	}
	return out
}
