package dockerautoscaler

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// writeKey writes a new ed25519 private key in OpenSSH format and returns its public half.
func writeKey(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// stockSSHD starts an OpenSSH sshd on a loopback address with the stock session limit (MaxSessions 10,
// as on a cloud image), unlike the local plugin's instances. It returns its address and the client key.
func stockSSHD(t *testing.T) (addr, keyPath string) {
	t.Helper()
	testenv.RequireSSHD(t)
	dir := t.TempDir()
	writeKey(t, filepath.Join(dir, "hostkey"))
	keyPath = filepath.Join(dir, "client")
	pub := writeKey(t, keyPath)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(pub), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.MkdirAll("/run/sshd", 0o755)
	host := fmt.Sprintf("127.0.%d.%d", 160+time.Now().Nanosecond()%60, 2+os.Getpid()%250)
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command(local.SSHDPath, "-D", "-e", "-p", strconv.Itoa(port), "-h", filepath.Join(dir, "hostkey"),
		"-o", "ListenAddress="+host, "-o", "AuthorizedKeysFile="+filepath.Join(dir, "authorized_keys"),
		"-o", "StrictModes=no", "-o", "PidFile=none", "-o", "UsePAM=no", "-o", "PermitRootLogin=prohibit-password",
		// As local.StartSSHD does: the host user's shell start-up files stay out of every session.
		"-o", "SetEnv=HOME="+dir)
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
			t.Logf("sshd log:\n%s", b)
		}
	})
	addr = net.JoinHostPort(host, strconv.Itoa(port))
	testrig.WaitFor(t, 10*time.Second, "sshd listening", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return addr, keyPath
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
