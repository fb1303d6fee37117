package testrig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Fleetrunner is a `fleetrunner run` child process.
type Fleetrunner struct {
	cmd *exec.Cmd
	// LogPath is the file that holds its output, outside the config directory.
	LogPath string
	// ended is done once the process exited; its cause is then how: context.Canceled for exit status 0,
	// else Wait's error.
	ended context.Context
}

// StartFleetrunner starts `bin run -c configPath`. When the test ends a process still running gets
// cleanupSignal and stopWithin to exit (SIGQUIT makes it delete the local plugin's instances, so that no
// sshd outlives a failed test) before it is killed; a zero cleanupSignal kills it at once. Its log is
// shown when the test failed.
func StartFleetrunner(t *testing.T, bin, configPath string, cleanupSignal syscall.Signal, stopWithin time.Duration) *Fleetrunner {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "fleetrunner.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "run", "-c", configPath)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	ended, end := context.WithCancelCause(context.Background())
	go func() { end(cmd.Wait()) }()
	r := &Fleetrunner{cmd: cmd, LogPath: out.Name(), ended: ended}
	t.Cleanup(func() {
		if r.ended.Err() == nil && cleanupSignal != 0 {
			if err := r.Stop(cleanupSignal, stopWithin); err != nil {
				t.Errorf("stopping fleetrunner: %v", err)
			}
		}
		_ = cmd.Process.Kill()
		<-ended.Done()
		if t.Failed() {
			b, _ := os.ReadFile(r.LogPath)
			t.Logf("fleetrunner's log:\n%s", b)
		}
	})
	return r
}

// ExitErr is how the process ended: nil for exit status 0 (or while it runs).
func (r *Fleetrunner) ExitErr() error {
	if err := context.Cause(r.ended); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Check fails the test at once when the process exited.
func (r *Fleetrunner) Check(t *testing.T) {
	t.Helper()
	if r.ended.Err() != nil {
		t.Fatalf("fleetrunner exited: %v", r.ExitErr())
	}
}

// Stop sends sig and waits up to within for the process to exit; it returns an unclean exit.
func (r *Fleetrunner) Stop(sig syscall.Signal, within time.Duration) error {
	if err := r.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal fleetrunner: %w", err)
	}
	select {
	case <-r.ended.Done():
		return r.ExitErr()
	case <-time.After(within):
		return fmt.Errorf("fleetrunner did not exit within %s of %s", within, sig)
	}
}
