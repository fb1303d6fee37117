package local_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/fleetingtest"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// testBase picks a loopback /24 of its own for each group, so parallel test packages do not collide.
func testBase() string {
	return fmt.Sprintf("127.%d.%d.1", 200+rand.IntN(50), rand.IntN(256))
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// newGroup makes a group whose instances are running after 300 ms with sshd and Docker up at once.
func newGroup(stateDir string) *local.InstanceGroup {
	return &local.InstanceGroup{
		MaxSize:     3,
		BootDelay:   local.Delay(300 * time.Millisecond),
		SSHDDelay:   local.Delay(0),
		DockerDelay: local.Delay(0),
		BaseAddress: testBase(),
		StateDir:    stateDir,
	}
}

// killAll stops whatever sshd the group left, whatever the test did.
func killAll(t *testing.T, g *local.InstanceGroup) {
	t.Cleanup(func() {
		var ids []string
		_ = g.Update(t.Context(), func(id string, _ fleeting.State) { ids = append(ids, id) })
		_, _ = g.Decrease(t.Context(), ids)
		_ = g.Shutdown(t.Context())
	})
}

func TestConformance(t *testing.T) {
	testenv.RequireSSHD(t)
	fleetingtest.Run(t, func(t *testing.T) fleeting.InstanceGroup {
		g := newGroup("")
		killAll(t, g)
		return g
	}, fleetingtest.Config{ExpectCreating: true, Timeout: 20 * time.Second})
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		json string
		want string
	}{
		{"not loopback", `{"base_address":"10.0.0.1"}`, "IPv4 loopback"},
		{"bad address", `{"base_address":"nope"}`, "base_address"},
		{"negative boot delay", `{"boot_delay":"-1s"}`, "boot_delay"},
		{"past loopback", `{"base_address":"127.255.255.254","max_size":4}`, "run past"},
		{"negative max", `{"max_size":-1}`, "max_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g local.InstanceGroup
			if err := json.Unmarshal([]byte(tt.json), &g); err != nil {
				t.Fatal(err)
			}
			_, err := g.Init(t.Context(), quietLog(), fleeting.Settings{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Init(%s) = %v, want error mentioning %q", tt.json, err, tt.want)
			}
		})
	}
}

func TestDurationRejectsNumbers(t *testing.T) {
	var g local.InstanceGroup
	err := json.Unmarshal([]byte(`{"boot_delay": 5}`), &g)
	if err == nil {
		t.Fatalf("boot_delay 5 accepted as %v; want an error asking for a duration string", g.BootDelay)
	}
	if err := json.Unmarshal([]byte(`{"boot_delay": "1m30s"}`), &g); err != nil || g.BootDelay == nil || time.Duration(*g.BootDelay) != 90*time.Second {
		t.Errorf("boot_delay \"1m30s\" = %v, %v", g.BootDelay, err)
	}
}

// waitState polls Update until instance id is in state want.
func waitState(t *testing.T, g fleeting.InstanceGroup, id string, want fleeting.State) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got fleeting.State
		_ = g.Update(t.Context(), func(i string, st fleeting.State) {
			if i == id {
				got = st
			}
		})
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s is %q, want %q", id, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ids(t *testing.T, g fleeting.InstanceGroup) []string {
	var out []string
	_ = g.Update(t.Context(), func(id string, _ fleeting.State) { out = append(out, id) })
	slices.Sort(out)
	return out
}

// An instance boots as on EC2: creating, then running while its sshd still refuses connections, then
// sshd, then (as root) its Docker Engine. The connector's patience is what gets a job onto it.
func TestBootStages(t *testing.T) {
	testenv.RequireSSHD(t)
	testenv.RequireDocker(t)
	testenv.RequireRoot(t, "hiding the Docker socket during the instance's Docker stage")
	g := newGroup("")
	noJitter := 0.0
	g.BootDelay, g.SSHDDelay, g.DockerDelay, g.BootJitter = local.Delay(time.Second), local.Delay(1500*time.Millisecond), local.Delay(3*time.Second), &noJitter
	killAll(t, g)
	if _, err := g.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
		t.Fatal(err)
	}
	if n, err := g.Increase(t.Context(), 1); n != 1 || err != nil {
		t.Fatalf("Increase(1) = %d, %v", n, err)
	}
	id := ids(t, g)[0]
	info := mustInfo(t, g, id)
	refused := func(stage string) {
		t.Helper()
		if conn, err := net.DialTimeout("tcp", info.InternalAddr, time.Second); err == nil {
			conn.Close()
			t.Fatalf("dial %s %s succeeded; sshd must start only after its own delay", info.InternalAddr, stage)
		}
	}
	refused("while creating")
	if err := g.Heartbeat(t.Context(), id); err == nil {
		t.Errorf("Heartbeat of a booting instance = nil, want an error")
	}
	waitState(t, g, id, fleeting.StateRunning)
	refused("right after it turned running")
	for { // sshd comes up 1.5 s later; Docker 3 s after that
		conn, err := net.DialTimeout("tcp", info.InternalAddr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	pool := connector.NewPool(connector.Config{Timeout: time.Minute}, g.ConnectInfo)
	defer pool.Close()
	l, err := pool.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("connect to a booting instance: %v", err)
	}
	defer l.Release()
	if conn, err := l.DialDocker(t.Context()); err == nil {
		conn.Close()
		t.Fatal("the Docker Engine answered with sshd; it must come after its own delay")
	}
	if err := pool.WaitDocker(t.Context(), id); err != nil {
		t.Fatalf("Docker Engine of a booted instance: %v", err)
	}
}

// connectedInstance starts a group on stateDir with one running instance and connects to it.
func connectedInstance(t *testing.T, stateDir string) (*local.InstanceGroup, string, *connector.Client) {
	t.Helper()
	testenv.RequireSSHD(t)
	g := newGroup(stateDir)
	g.BootDelay = local.Delay(0)
	killAll(t, g)
	if _, err := g.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Increase(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	id := ids(t, g)[0]
	waitState(t, g, id, fleeting.StateRunning)
	c, err := connector.Dial(t.Context(), mustInfo(t, g, id), connector.Config{})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return g, id, c
}

func TestKillReportsTimeout(t *testing.T) {
	g, id, c := connectedInstance(t, "")

	if err := g.Kill(id); err != nil {
		t.Fatalf("Kill(%s) = %v", id, err)
	}
	waitState(t, g, id, fleeting.StateTimeout)
	if err := g.Heartbeat(t.Context(), id); !errors.Is(err, fleeting.ErrInstanceUnhealthy) {
		t.Errorf("Heartbeat of a killed instance = %v, want ErrInstanceUnhealthy", err)
	}
	// The kill takes the open connection with it, as a vanished machine would.
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("connection to killed instance %s still open", id)
	}
	if got, err := g.Decrease(t.Context(), []string{id}); err != nil || !slices.Equal(got, []string{id}) {
		t.Errorf("Decrease of killed instance = %q, %v", got, err)
	}
	if got := ids(t, g); len(got) != 0 {
		t.Errorf("after Decrease Update lists %q, want nothing", got)
	}
}

// Commands on an instance run with a HOME of the instance's own, not the host user's: a developer's shell
// start-up files (seconds of pyenv hooks here) would otherwise run on every command and Docker connection.
func TestSessionsHaveTheInstanceHome(t *testing.T) {
	g, _, c := connectedInstance(t, t.TempDir())
	out, code, err := c.Run(t.Context(), `printf %s "$HOME"`)
	if err != nil || code != 0 {
		t.Fatalf("run: %q, %d, %v", out, code, err)
	}
	home := string(out)
	if userHome, _ := os.UserHomeDir(); home == userHome || !strings.HasPrefix(home, g.StateDir) {
		t.Fatalf("session HOME = %q, want a directory of the instance under %s", home, g.StateDir)
	}
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		t.Fatalf("session HOME %q does not exist: %v", home, err)
	}
}

func mustInfo(t *testing.T, g fleeting.InstanceGroup, id string) fleeting.ConnectInfo {
	t.Helper()
	info, err := g.ConnectInfo(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// A manager killed with -9 leaves its instances running; the next one on the same state_dir adopts them,
// with the same IDs, addresses, host keys and client key.
func TestRestartAdoptsInstances(t *testing.T) {
	testenv.RequireSSHD(t)
	stateDir := t.TempDir()
	g1 := newGroup(stateDir)
	g1.BootDelay = local.Delay(0)
	killAll(t, g1)
	if _, err := g1.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
		t.Fatal(err)
	}
	if _, err := g1.Increase(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	before := ids(t, g1)
	for _, id := range before {
		waitState(t, g1, id, fleeting.StateRunning)
	}
	hostKeys := &connector.MemoryHostKeys{}
	c, err := connector.Dial(t.Context(), mustInfo(t, g1, before[0]), connector.Config{HostKeys: hostKeys})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// A graceful Shutdown with a state_dir leaves instances running too.
	if err := g1.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}

	g2 := &local.InstanceGroup{MaxSize: 3, BaseAddress: g1.BaseAddress, StateDir: stateDir}
	killAll(t, g2)
	if _, err := g2.Init(t.Context(), quietLog(), fleeting.Settings{}); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, g2); !slices.Equal(got, before) {
		t.Fatalf("adopted instances %q, want %q", got, before)
	}
	for _, id := range before {
		waitState(t, g2, id, fleeting.StateRunning)
	}
	// Same host key (the pin from before holds) and the same client key.
	c, err = connector.Dial(t.Context(), mustInfo(t, g2, before[0]), connector.Config{HostKeys: hostKeys})
	if err != nil {
		t.Fatalf("connect to adopted instance: %v", err)
	}
	c.Close()
	// A third instance takes a free address, not an adopted one's.
	if n, err := g2.Increase(t.Context(), 1); n != 1 || err != nil {
		t.Fatalf("Increase after adoption = %d, %v", n, err)
	}
	addrs := map[string]bool{}
	for _, id := range ids(t, g2) {
		addrs[mustInfo(t, g2, id).InternalAddr] = true
	}
	if len(addrs) != 3 {
		t.Errorf("instances share addresses: %v", addrs)
	}
	removed, err := g2.Decrease(t.Context(), ids(t, g2))
	if err != nil || len(removed) != 3 {
		t.Fatalf("Decrease = %q, %v", removed, err)
	}
	entries, _ := os.ReadDir(filepath.Join(stateDir, "instances"))
	if len(entries) != 0 {
		t.Errorf("instance dirs left after Decrease: %d", len(entries))
	}
}
