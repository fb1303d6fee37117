package testenv

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Moto is a running moto_server, a third-party AWS emulator (see shared/spec/aws-moto.md).
type Moto struct {
	// URL is its endpoint, http://127.0.0.1:PORT.
	URL  string
	stop func()
}

// Stop kills moto_server and waits for it to end, as an outage of AWS would look to a client: new
// connections are refused. It also runs at cleanup.
func (m *Moto) Stop() { m.stop() }

// StartMoto starts moto_server on a free loopback port for this test and stops it afterwards; it skips
// (or fails in CI) where moto_server is missing. The caller points its SDK at URL itself.
//
// moto picks its own port (-p 0) and the port is read from its log: a port probed free here and handed
// to moto later could be taken by another package's moto in between, and then both tests would talk
// to one server, each resetting or stopping it under the other.
func StartMoto(t testing.TB) *Moto {
	t.Helper()
	bin := RequireCommand(t, "moto_server", "install moto with its server extras (pip install 'moto[server]')")
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", "0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// moto reads AWS_* itself (an endpoint override set by an earlier simulator breaks it).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	logPath := filepath.Join(t.TempDir(), "moto.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			// moto_server is a Python wrapper; its process group holds the server.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		})
	}
	t.Cleanup(stop)
	// Python start-up is slow on a loaded machine; this is a wait for readiness, not a speed check.
	const readyWithin = 2 * time.Minute
	deadline := time.Now().Add(readyWithin)
	var m *Moto
	for {
		if m == nil {
			out, _ := os.ReadFile(logPath)
			if match := motoListening.FindSubmatch(out); match != nil {
				m = &Moto{URL: "http://127.0.0.1:" + string(match[1]), stop: stop}
			}
		}
		if m != nil {
			resp, err := http.Get(m.URL + "/moto-api/")
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return m
				}
			}
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(logPath)
			t.Fatalf("moto_server exited before it answered; its output:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("moto_server not ready after %s; its output:\n%s", readyWithin, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// motoListening is the line moto_server's web server logs once it listens.
var motoListening = regexp.MustCompile(`Running on http://127\.0\.0\.1:(\d+)`)

// Reset wipes moto's state between tests.
func (m *Moto) Reset(t testing.TB) {
	t.Helper()
	resp, err := http.Post(m.URL+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatalf("reset moto: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reset moto: %s", resp.Status)
	}
}
