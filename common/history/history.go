// Package history appends every job a runner ran to a CSV file in its state directory, so that after a
// week an operator has their own trace for `fleetrunner simulate` and `fleetrunner tune` without an
// export from GitLab.
//
// The file starts with the trace header that taskscaler/sim reads, followed by columns the simulator
// ignores:
//
//	arrival_s,duration_s,pipeline,created_at,runner,job_id
//
// arrival_s is when GitLab created the job (when the runner received it minus its time in GitLab's
// queue) in Unix seconds; simulate rebases such a trace to the Monday 00:00 UTC before its first job.
// duration_s is the job's run time once it held a slot. The file is bounded: once it would pass
// MaxBytes it is renamed to <name>.1 (replacing the previous one) and a new file is started, so a
// runner keeps at most 2 × MaxBytes of history.
package history

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxBytes bounds one history file; with the one rotated file beside it a runner keeps at most twice
// this. At about 70 bytes a line a file holds some 150 000 jobs, weeks of a busy fleet.
const MaxBytes = 10 << 20

// Header is the first line of every history file.
const Header = "arrival_s,duration_s,pipeline,created_at,runner,job_id"

// Record is one job that ran.
type Record struct {
	// Created is when GitLab created the job (it entered the queue).
	Created time.Time
	// Duration is the job's run time once it held a slot.
	Duration time.Duration
	// Pipeline is the job's pipeline id, "" when unknown.
	Pipeline string
	Runner   string
	JobID    int64
}

// FileName is the history file of the runner with this id (or, without one, this short token) in its
// state directory; the id survives a token rotation.
func FileName(runnerID int64, shortToken string) string {
	if runnerID > 0 {
		return fmt.Sprintf("job-history-runner-%d.csv", runnerID)
	}
	return "job-history-" + strings.Map(safeRune, shortToken) + ".csv"
}

func safeRune(r rune) rune {
	if r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
		return r
	}
	return '_'
}

// Writer appends records; one Writer serves every runner of a manager, so that two jobs ending at the
// same moment never interleave their lines or rotate the same file twice.
type Writer struct {
	mu       sync.Mutex
	maxBytes int64
	closed   bool
}

// Close ends the Writer: Append does nothing afterwards. A manager closes it when it stops, so that
// the jobs a forceful stop abandoned write nothing into a state directory that is no longer theirs.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// NewWriter returns a Writer that rotates at maxBytes (MaxBytes when ≤ 0).
func NewWriter(maxBytes int64) *Writer {
	if maxBytes <= 0 {
		maxBytes = MaxBytes
	}
	return &Writer{maxBytes: maxBytes}
}

// Append writes rec as one line of path, creating the directory and the file (with its header) as
// needed and rotating the file first when the line would take it past the bound.
func (w *Writer) Append(path string, rec Record) error {
	line := formatLine(rec)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("job history: creating its directory (check the state directory's permissions): %w", err)
	}
	size := int64(0)
	st, err := os.Stat(path)
	switch {
	case err == nil:
		size = st.Size()
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("job history: %w", err)
	}
	if size > 0 && size+int64(len(line)) > w.maxBytes {
		if err := os.Rename(path, path+".1"); err != nil {
			return fmt.Errorf("job history: rotating %s: %w", path, err)
		}
		size = 0
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("job history: opening %s (check the state directory's permissions): %w", path, err)
	}
	if size == 0 {
		line = Header + "\n" + line
	}
	if _, err := f.WriteString(line); err != nil {
		_ = f.Close()
		return fmt.Errorf("job history: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("job history: writing %s: %w", path, err)
	}
	return nil
}

func formatLine(r Record) string {
	arrival := float64(r.Created.UnixMilli()) / 1000
	fields := []string{
		strconv.FormatFloat(arrival, 'f', 3, 64),
		strconv.FormatFloat(max(r.Duration, 0).Seconds(), 'f', 3, 64),
		csvField(r.Pipeline),
		r.Created.UTC().Format(time.RFC3339),
		csvField(r.Runner),
		strconv.FormatInt(r.JobID, 10),
	}
	return strings.Join(fields, ",") + "\n"
}

// csvField quotes a value that would otherwise break the line.
func csvField(s string) string {
	if !strings.ContainsAny(s, ",\"\r\n") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
