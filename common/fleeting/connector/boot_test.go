package connector_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// bootLater brings the rig's machine up after delay, in the background, as EC2 does: the instance is
// already reported running while its sshd is not listening yet.
func bootLater(t *testing.T, r *rig, delay time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(delay)
		r.start(t)
	}()
	t.Cleanup(func() { <-done })
}

func logged(hook *test.Hook, msg string) bool {
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

// A machine whose sshd comes up seconds after it is running is waited for (connection refused is what
// it answers meanwhile), and the wait is logged.
func TestDialWaitsForBootingInstance(t *testing.T) {
	r := newRig(t, "i-booting")
	log, hook := test.NewNullLogger()
	bootLater(t, r, 1500*time.Millisecond)
	c, err := connector.Dial(t.Context(), r.info, connector.Config{Timeout: time.Minute, Log: log})
	if err != nil {
		t.Fatalf("Dial to an instance whose sshd starts 1.5 s later: %v", err)
	}
	defer c.Close()
	if out, code, err := c.Run(t.Context(), "echo up"); err != nil || code != 0 || strings.TrimSpace(string(out)) != "up" {
		t.Errorf("Run = %q, %d, %v", out, code, err)
	}
	if !logged(hook, "instance SSH does not answer yet") || !logged(hook, "instance SSH answers now") {
		t.Errorf("the wait for sshd was not logged; entries: %v", hook.AllEntries())
	}
}

// Nothing ever listens: the instance is given up only once the timeout passed, and the error says how
// long it was tried and what the last failure was.
func TestDialGivesUpAfterTimeout(t *testing.T) {
	r := newRig(t, "i-never")
	_, err := connector.Dial(t.Context(), r.info, connector.Config{Timeout: 800 * time.Millisecond})
	if err == nil {
		t.Fatal("Dial to an instance that never listens succeeded")
	}
	for _, want := range []string{"i-never", "SSH did not answer within the connector timeout of 800ms", "attempts", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// The caller's own cancellation ends the wait at once and is not blamed on the instance.
func TestDialStopsWhenCallerCancels(t *testing.T) {
	r := newRig(t, "i-cancel")
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err := connector.Dial(ctx, r.info, connector.Config{Timeout: time.Hour})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial cancelled by its caller = %v, want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "within the connector timeout") {
		t.Errorf("a cancelled dial is reported as the instance's timeout: %v", err)
	}
}

// sshd answers but does not know the key yet (cloud-init still writing authorized_keys): the refusal
// is retried until the key is there.
func TestDialRetriesUntilKeyInstalled(t *testing.T) {
	r := newRig(t, "i-key-later")
	key, err := os.ReadFile(r.authorized)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.authorized, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	time.AfterFunc(time.Second, func() { _ = os.WriteFile(r.authorized, key, 0o600) })
	c, err := connector.Dial(t.Context(), r.info, connector.Config{Timeout: time.Minute})
	if err != nil {
		t.Fatalf("Dial while the key is installed a second later: %v", err)
	}
	_ = c.Close()
}

// A changed host key is a security error, refused on the first attempt, never waited out.
func TestChangedHostKeyIsNotRetried(t *testing.T) {
	r := startRig(t, "i-hk-now")
	path := filepath.Join(t.TempDir(), "hostkeys.json")
	store, err := connector.OpenFileHostKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PinHostKey("i-hk-now", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHFhHEn4LMn7YrZ0nN7dVbYcJmZ6P8VNmDk1eF5YhFvW"); err != nil {
		t.Fatal(err)
	}
	log, hook := test.NewNullLogger()
	_, err = connector.Dial(t.Context(), r.info, connector.Config{HostKeys: store, Timeout: time.Hour, Log: log})
	if !errors.Is(err, connector.ErrHostKeyChanged) {
		t.Fatalf("Dial with another pinned key = %v, want ErrHostKeyChanged", err)
	}
	if !strings.Contains(err.Error(), "remove its entry from the host key file "+path) {
		t.Errorf("the error does not say where the pin lives: %v", err)
	}
	if strings.Contains(err.Error(), "attempts") || logged(hook, "trying again") {
		t.Errorf("a changed host key was retried: %v", err)
	}
}

// Instance Connect keys are accepted for 60 s only. When the machine took longer than that to come up,
// the pool asks the plugin again (a fresh push) instead of knocking with a dead key until the timeout.
func TestPoolRefreshesExpiredCredentialsWhileWaiting(t *testing.T) {
	r := newRig(t, "i-expiring")
	stale, _, err := local.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	pool := connector.NewPool(connector.Config{Timeout: time.Minute}, func(context.Context, string) (fleeting.ConnectInfo, error) {
		info := r.info
		if calls.Add(1) == 1 {
			// The first push: a key sshd will not know, valid for a moment only.
			info.Key = stale
			exp := time.Now().Add(700 * time.Millisecond)
			info.Expires = &exp
		}
		return info, nil
	})
	defer pool.Close()
	bootLater(t, r, time.Second)
	l, err := pool.Get(t.Context(), "i-expiring")
	if err != nil {
		t.Fatalf("pool.Get across an expired key: %v", err)
	}
	l.Release()
	if n := calls.Load(); n != 2 {
		t.Errorf("ConnectInfo asked %d times, want 2 (one refresh after the key expired)", n)
	}
}

// Docker answers after sshd on a fresh machine: the pool waits for it, and a timeout says what was
// waited for.
func TestWaitDockerUntilEngineStarts(t *testing.T) {
	testenv.RequireDocker(t)
	testenv.RequireRoot(t, "hiding the Docker socket until the instance's Docker stage ends")
	r := startRig(t, "i-docker-later", func(o *local.SSHDOptions) { o.HideDocker = testenv.DockerSocket() })
	info := func(context.Context, string) (fleeting.ConnectInfo, error) { return r.info, nil }
	log, hook := test.NewNullLogger()

	short := connector.NewPool(connector.Config{Timeout: 700 * time.Millisecond, Log: log}, info)
	defer short.Close()
	err := short.WaitDocker(t.Context(), "i-docker-later")
	for _, want := range []string{"i-docker-later", "Docker Engine", "700ms"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("WaitDocker before Docker started = %v, want an error saying %q", err, want)
		}
	}

	pool := connector.NewPool(connector.Config{Timeout: time.Minute, Log: log}, info)
	defer pool.Close()
	time.AfterFunc(time.Second, func() {
		if err := r.sshd.StartDocker(); err != nil {
			t.Errorf("StartDocker: %v", err)
		}
	})
	if err := pool.WaitDocker(t.Context(), "i-docker-later"); err != nil {
		t.Fatalf("WaitDocker while Docker starts a second later: %v", err)
	}
	if !r.sshd.DockerStarted() || !logged(hook, "instance Docker Engine answers now") {
		t.Errorf("Docker started %v; wait logged %v", r.sshd.DockerStarted(), logged(hook, "Docker Engine answers now"))
	}
}

// An instance that answered before and now refuses is gone, not booting: the pool does not wait for it,
// so the job that wanted it moves on at once.
func TestPoolDoesNotWaitForInstanceThatAnsweredBefore(t *testing.T) {
	r := startRig(t, "i-gone")
	pool := connector.NewPool(connector.Config{Timeout: time.Hour}, func(context.Context, string) (fleeting.ConnectInfo, error) {
		return r.info, nil
	})
	defer pool.Close()
	l, err := pool.Get(t.Context(), "i-gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.sshd.Kill(); err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	l.Release()
	_, err = pool.Get(t.Context(), "i-gone")
	if err == nil || !strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "attempts") {
		t.Fatalf("Get of a vanished instance = %v, want the refusal of a single attempt", err)
	}
}
