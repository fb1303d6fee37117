package dockerautoscaler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// stockSSHD starts an OpenSSH sshd on a loopback address with the stock session limit (MaxSessions 10,
// as on a cloud image), unlike the local plugin's instances. It returns its address and the client key.
func stockSSHD(t *testing.T) (addr, keyPath string) {
	t.Helper()
	testenv.RequireSSHD(t)
	dir := t.TempDir()
	priv, pub, err := local.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath = filepath.Join(dir, "client")
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(authorized, []byte(pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := local.StartSSHD(t.Context(), local.SSHDOptions{
		Dir:                filepath.Join(dir, "instance"),
		Address:            fmt.Sprintf("127.0.%d.%d", 160+time.Now().Nanosecond()%60, 2+os.Getpid()%250),
		AuthorizedKeysFile: authorized,
		MaxSessions:        10,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(s.Dir, "sshd.log"))
			t.Logf("sshd log:\n%s", b)
		}
	})
	return s.Addr(), keyPath
}

// TestDialStdioSessionLimit: with dial-stdio (the default tunnel) every Docker connection is one SSH
// session, and a stock sshd refuses more than 10 per connection. Six jobs share one instance
// (capacity_per_instance = 6) through the real manager: all of them must succeed, so the executor has to
// keep its sessions on one instance under the limit.
func TestDialStdioSessionLimit(t *testing.T) {
	t.Parallel()
	const jobs = 6
	addr, key := stockSSHD(t)
	r := newRig(t)
	r.runner.RequestConcurrency = jobs
	r.runner.FeatureFlags = map[string]bool{config.FFUseDockerAutoscalerDialStdio: true}
	r.runner.Docker.Host = "unix://" + testenv.DockerSocket()
	ac := r.runner.Autoscaler
	ac.Plugin = "static"
	ac.CapacityPerInstance, ac.MaxInstances = jobs, 1
	ac.PluginConfig = config.PluginConfig{"hosts": []any{map[string]any{"id": "stock-sshd", "address": addr, "username": "root", "key_path": key}}}
	p, stop := r.startManager(t, jobs)

	w := watchFleet(p)
	ids := make([]int64, jobs)
	for i := range ids {
		// Long enough that all six scripts run at once.
		ids[i] = r.sim.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("job-%d", i), Image: r.image, Script: []string{"sleep 4", "echo done"}})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	for _, id := range ids {
		snap, err := r.sim.WaitFinished(ctx, id)
		if err != nil {
			t.Fatalf("job %d did not finish: %v", id, err)
		}
		if snap.Status != gitlabsim.StatusSuccess {
			t.Errorf("job %d: %s %s; trace:\n%s", id, snap.Status, snap.FailureReason, snap.Trace)
		}
	}
	w.end()
	if got := w.maxAcquired["stock-sshd"]; got < 3 {
		t.Errorf("at most %d jobs ran on the instance at once; the test needs them to overlap", got)
	}
	if n := p.Stats().Counters.MarkedUnhealthy; n != 0 {
		t.Errorf("the instance was marked unhealthy %d times", n)
	}
	stop()
}
