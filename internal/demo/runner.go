package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// modulePath is the module the demo builds fleetrunner from.
const modulePath = "gitlab.com/fleetrunner/fleetrunner"

// moduleRoot is the directory of the fleetrunner checkout the demo runs in (the module of the
// current directory, as `go env GOMOD` sees it).
func moduleRoot(ctx context.Context, gobin string) (string, error) {
	notHere := "run the demo from a fleetrunner checkout (make demo) or pass --fleetrunner PATH"
	cmd := exec.CommandContext(ctx, gobin, "env", "GOMOD")
	msg, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w; %s", err, notHere)
	}
	gomod := strings.TrimSpace(string(msg))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("the current directory is in no Go module: %s", notHere)
	}
	f, err := os.Open(gomod)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", gomod, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			if strings.Trim(strings.TrimSpace(name), `"`) != modulePath {
				return "", fmt.Errorf("%s is module %s, not %s: %s", gomod, name, modulePath, notHere)
			}
			return filepath.Dir(gomod), nil
		}
	}
	return "", fmt.Errorf("%s names no module: %s", gomod, notHere)
}

// buildFleetrunner builds cmd/fleetrunner of the checkout at root into dir and returns the binary.
func buildFleetrunner(ctx context.Context, gobin, root, dir string) (string, error) {
	bin := filepath.Join(dir, "fleetrunner")
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", bin, "./cmd/fleetrunner")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/fleetrunner in %s: %w\n%s", root, err, lastLines(msg, 10))
	}
	return bin, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// runner is the `fleetrunner run` child process.
type runner struct {
	cmd *exec.Cmd
	// exited is closed once the process ended; err is its Wait error then.
	exited chan struct{}
	err    error
}

// startRunner starts `bin run` on configPath, writing its output to logFile. The child gets a process
// group of its own so that a Ctrl-C on the terminal reaches only the demo, which then stops the
// runner its own way.
func startRunner(bin, configPath string, logFile *os.File) (*runner, error) {
	cmd := exec.Command(bin, "run", "--config", configPath, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s run: %w", bin, err)
	}
	r := &runner{cmd: cmd, exited: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		close(r.exited)
	}()
	return r, nil
}

func (r *runner) pid() int { return r.cmd.Process.Pid }

// stop sends sig and waits up to wait for the runner to exit, then kills it. It reports a runner that
// had to be killed or exited with an error.
func (r *runner) stop(sig syscall.Signal, wait time.Duration) error {
	select {
	case <-r.exited:
		return r.exitError("fleetrunner exited before the demo stopped it")
	default:
	}
	if err := r.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal fleetrunner (pid %d): %w", r.pid(), err)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-r.exited:
		return r.exitError("fleetrunner did not stop cleanly")
	case <-t.C:
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	return fmt.Errorf("fleetrunner did not exit within %s of %s and was killed", wait, sigName(sig))
}

func (r *runner) exitError(what string) error {
	if r.err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, r.err)
}

func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGQUIT:
		return "SIGQUIT, graceful"
	case syscall.SIGTERM:
		return "SIGTERM, aborting jobs"
	}
	return sig.String()
}

// waitHealthy waits until the runner's metrics server says it serves (/-/health).
func waitHealthy(ctx context.Context, fleet *fleetClient, r *runner, logPath string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t := time.NewTicker(refresh)
	defer t.Stop()
	for {
		if fleet.healthy(ctx) {
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("fleetrunner exited at start (%v); its log %s ends:\n%s", r.err, logPath, tailFile(logPath, 10))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("fleetrunner's metrics server did not report healthy within a minute (log: %s)", logPath)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastLines(b, n)
}

// killLeftovers looks into the local plugin's state dir for instances whose sshd still runs after the
// runner stopped, kills them and returns their IDs. The runner deletes every instance on shutdown
// (delete_instances_on_shutdown), so after a clean stop there are none.
func killLeftovers(stateDir string) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(stateDir, "instances", "*"))
	if err != nil {
		return nil, err
	}
	var left []string
	var errs []error
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "instance.json"))
		if err != nil {
			// Deleted meanwhile, or never recorded: no sshd to find.
			continue
		}
		var rec struct {
			ID      string `json:"id"`
			Pid     int    `json:"pid"`
			Address string `json:"address"`
			Port    int    `json:"port"`
		}
		if err := json.Unmarshal(data, &rec); err != nil || rec.Pid == 0 {
			continue
		}
		sshd, alive := local.AdoptSSHD(rec.Pid, dir, rec.Address, rec.Port, "")
		if !alive {
			continue
		}
		left = append(left, rec.ID)
		if err := sshd.Kill(); err != nil {
			errs = append(errs, fmt.Errorf("kill the sshd of instance %s (pid %d): %w", rec.ID, rec.Pid, err))
		}
	}
	return left, errors.Join(errs...)
}
