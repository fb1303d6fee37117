package manager_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// scriptExec is the test-only executor. It runs a job's script lines as a tiny language:
//
//	echo TEXT   write TEXT and a newline
//	print TEXT  write TEXT without a newline (to split a value across writes)
//	sleep DUR   wait DUR (a Go duration); a graceful cancel or an abort cuts it short
//	wait        wait until GitLab cancels the job or the run is aborted
//	gate        wait until the test calls openGate (or a cancel or an abort)
//	exit N      fail with script_failure and exit code N
//	crash       fail with a plain error (a runner_system_failure)
//	section N   open the job log section N, as an executor opens a stage
//
// Variables ($NAME) are expanded first. after_script lines run after the script, also after a failure
// or a graceful cancel, but not after an abort. capacity > 0 makes Reserve answer ErrNoCapacity when
// that many reservations are held.
type scriptExec struct {
	capacity int

	mu         sync.Mutex
	reserved   int
	running    int
	maxRunning int
	runs       int
	wrote      map[int64]*bytes.Buffer
	started    map[int64]bool
	shutdowns  int
	// providers counts the providers the registry built, by runner name.
	providers map[string]int
	changed   chan struct{}
	gate      chan struct{}
	// blockAbort, when set, holds an aborted `wait` until it is closed, like a stuck executor.
	blockAbort chan struct{}
}

func newScriptExec() *scriptExec {
	return &scriptExec{wrote: map[int64]*bytes.Buffer{}, started: map[int64]bool{}, providers: map[string]int{},
		changed: make(chan struct{}), gate: make(chan struct{})}
}

// registry builds "providers" that are all this one executor, counting them.
func (e *scriptExec) registry() executors.Registry {
	return executors.Registry{config.ExecutorDocker: func(rc *config.RunnerConfig, _ executors.Deps) (executors.Provider, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.providers[rc.Name]++
		return e, nil
	}}
}

func (e *scriptExec) providersBuilt(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.providers[name]
}

// openGate lets every job waiting at `gate` go on.
func (e *scriptExec) openGate() { close(e.gate) }

type slot struct {
	e    *scriptExec
	once sync.Once
}

func (s *slot) Unreserve() {
	s.once.Do(func() {
		s.e.mu.Lock()
		s.e.reserved--
		s.e.mu.Unlock()
	})
}

func (e *scriptExec) Reserve(context.Context) (executors.Reservation, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.capacity > 0 && e.reserved >= e.capacity {
		return nil, executors.ErrNoCapacity
	}
	e.reserved++
	return &slot{e: e}, nil
}

func (e *scriptExec) Features() map[string]bool {
	return map[string]bool{"variables": true, "masking": true}
}

func (e *scriptExec) Shutdown(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.shutdowns++
	e.notify()
	return nil
}

// notify wakes waitFor callers; called with mu held.
func (e *scriptExec) notify() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// waitFor waits until cond (called with mu held) holds or ctx ends.
func (e *scriptExec) waitFor(ctx context.Context, cond func() bool) error {
	for {
		e.mu.Lock()
		ok, ch := cond(), e.changed
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (e *scriptExec) waitStarted(ctx context.Context, id int64) error {
	return e.waitFor(ctx, func() bool { return e.started[id] })
}

func (e *scriptExec) waitRunning(ctx context.Context, n int) error {
	return e.waitFor(ctx, func() bool { return e.running == n })
}

// output is what the job wrote, before masking.
func (e *scriptExec) output(id int64) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b := e.wrote[id]; b != nil {
		return b.String()
	}
	return ""
}

func (e *scriptExec) stats() (running, maxRunning, runs, reserved, shutdowns int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running, e.maxRunning, e.runs, e.reserved, e.shutdowns
}

// jobWriter copies what the job writes to its log and to the record of the test.
type jobWriter struct {
	e   *scriptExec
	id  int64
	log executors.JobLog
}

func (w jobWriter) write(s string) {
	w.e.mu.Lock()
	w.e.wrote[w.id].WriteString(s)
	w.e.mu.Unlock()
	_, _ = w.log.Write([]byte(s))
}

func (e *scriptExec) Run(ctx context.Context, res executors.Reservation, b *executors.Build) error {
	defer res.Unreserve()
	id := b.Job.ID
	e.mu.Lock()
	e.running++
	e.runs++
	e.maxRunning = max(e.maxRunning, e.running)
	e.wrote[id] = &bytes.Buffer{}
	e.started[id] = true
	e.notify()
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running--
		e.notify()
		e.mu.Unlock()
	}()

	w := jobWriter{e: e, id: id, log: b.Log}
	var script, after []string
	if s := b.Job.StepByName(job.StepScript); s != nil {
		script = s.Script
	}
	if s := b.Job.StepByName(job.StepAfterScript); s != nil {
		after = s.Script
	}
	err := e.runLines(ctx, b.Canceling.Done(), b.Job.Variables, w, script)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(after) > 0 {
		// after_script runs even when the script was canceled; only its own abort stops it.
		_ = e.runLines(ctx, nil, b.Job.Variables, w, after)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return err
}

// gateFor is the gate channel for the `gate` command and nil (never ready) for the others.
func gateFor(cmd string, gate chan struct{}) <-chan struct{} {
	if cmd == "gate" {
		return gate
	}
	return nil
}

var errCanceled = &job.BuildError{Reason: job.JobCanceled, Err: errors.New("canceled")}

// runLines runs lines; a closed canceling stops them as GitLab's graceful cancel does.
func (e *scriptExec) runLines(ctx context.Context, canceling <-chan struct{}, vars job.Variables, w jobWriter, lines []string) error {
	for _, line := range lines {
		cmd, arg, _ := strings.Cut(vars.Expand(line), " ")
		switch cmd {
		case "echo":
			w.write(arg + "\n")
		case "print":
			w.write(arg)
		case "sleep", "wait", "gate":
			var timer <-chan time.Time
			if cmd == "sleep" {
				d, err := time.ParseDuration(arg)
				if err != nil {
					return fmt.Errorf("bad sleep %q: %w", arg, err)
				}
				timer = time.After(d)
			}
			select {
			case <-timer:
			case <-gateFor(cmd, e.gate):
			case <-canceling:
				return errCanceled
			case <-ctx.Done():
				e.mu.Lock()
				block := e.blockAbort
				e.mu.Unlock()
				if block != nil {
					<-block
				}
				return ctx.Err()
			}
		case "exit":
			n, err := strconv.Atoi(arg)
			if err != nil {
				return fmt.Errorf("bad exit %q: %w", arg, err)
			}
			return &job.BuildError{Reason: job.ScriptFailure, ExitCode: n, Err: fmt.Errorf("exit code %d", n)}
		case "crash":
			return errors.New("the test executor lost its environment")
		case "section":
			w.log.SectionStart(arg, "Stage "+arg)
		default:
			return fmt.Errorf("unknown test command %q", cmd)
		}
	}
	return nil
}
