// Package fleetingtest is the conformance suite every fleeting plugin runs: Init, Increase seen through
// Update as creating then running, ConnectInfo, Heartbeat, Decrease to deleted, honest partial results
// beyond max size and for unknown instances, and Shutdown. Run dials the instances over SSH through the
// connector; RunAPI checks the same contract for plugins whose instances cannot be dialed (e.g. moto).
package fleetingtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
)

// Config tunes the suite to a plugin.
type Config struct {
	// Settings are handed to Init (the runner's connector_config).
	Settings fleeting.Settings
	// ExpectCreating requires every new instance to be seen creating before running (plugins with a boot
	// delay); otherwise an instance may show up running at once.
	ExpectCreating bool
	// Timeout bounds each wait for a state (default 30s); PollInterval is the Update period (default 50ms).
	Timeout      time.Duration
	PollInterval time.Duration
	// Connector configures Run's SSH dial.
	Connector connector.Config
	// Command is run over SSH on each instance by Run; its output must contain "fleetingtest". An empty
	// Command means "echo fleetingtest".
	Command string
}

// maxSizeLimit keeps the over-max-size check cheap: it creates MaxSize instances.
const maxSizeLimit = 8

// unknownID names no instance of any plugin.
const unknownID = "fleetingtest-no-such-instance"

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 50 * time.Millisecond
	}
	if c.Command == "" {
		c.Command = "echo fleetingtest"
	}
	return c
}

// Run runs the whole suite, dialing every instance it creates over SSH.
func Run(t *testing.T, newGroup func(t *testing.T) fleeting.InstanceGroup, cfg Config) {
	run(t, newGroup, cfg.withDefaults(), true)
}

// RunAPI runs the suite without connecting to instances: ConnectInfo is only checked for its fields.
func RunAPI(t *testing.T, newGroup func(t *testing.T) fleeting.InstanceGroup, cfg Config) {
	run(t, newGroup, cfg.withDefaults(), false)
}

func run(t *testing.T, newGroup func(t *testing.T) fleeting.InstanceGroup, cfg Config, dial bool) {
	t.Run("Init", func(t *testing.T) {
		s := start(t, newGroup, cfg)
		if s.info.ID == "" {
			t.Errorf("ProviderInfo.ID is empty; want a name unique to the group")
		}
		if s.info.MaxSize <= 0 {
			t.Errorf("ProviderInfo.MaxSize = %d, want > 0", s.info.MaxSize)
		}
	})
	t.Run("Lifecycle", func(t *testing.T) {
		s := start(t, newGroup, cfg)
		ids := s.increase(t, 2)
		for _, id := range ids {
			s.checkConnectInfo(t, id, dial)
			if err := s.g.Heartbeat(t.Context(), id); err != nil {
				t.Errorf("Heartbeat(%s) of a running instance = %v, want nil", id, err)
			}
		}
		if err := s.g.Heartbeat(t.Context(), unknownID); err == nil {
			t.Errorf("Heartbeat(%s) = nil, want an error for an unknown instance", unknownID)
		}
		if _, err := s.g.ConnectInfo(t.Context(), unknownID); err == nil {
			t.Errorf("ConnectInfo(%s) = nil error, want an error for an unknown instance", unknownID)
		}

		// One real and one unknown ID: the real one is accepted, the unknown one reported.
		got, err := s.g.Decrease(t.Context(), []string{ids[0], unknownID})
		if !slices.Equal(got, []string{ids[0]}) {
			t.Errorf("Decrease(%s, %s) = %q, want exactly [%s]", ids[0], unknownID, got, ids[0])
		}
		if err == nil {
			t.Errorf("Decrease with unknown instance %s returned no error", unknownID)
		} else if !strings.Contains(err.Error(), unknownID) {
			t.Errorf("Decrease error %q does not name the unknown instance %s", err, unknownID)
		}
		s.waitGone(t, ids[:1])
		if st := s.states(t)[ids[1]]; st != fleeting.StateRunning {
			t.Errorf("instance %s not decreased is %q, want running", ids[1], st)
		}
		got, err = s.g.Decrease(t.Context(), ids[1:])
		if err != nil || !slices.Equal(got, ids[1:]) {
			t.Errorf("Decrease(%s) = %q, %v; want [%s], nil", ids[1], got, err, ids[1])
		}
		s.waitGone(t, ids[1:])
	})
	t.Run("IncreaseBeyondMaxSize", func(t *testing.T) {
		s := start(t, newGroup, cfg)
		if s.info.MaxSize > maxSizeLimit {
			t.Fatalf("ProviderInfo.MaxSize = %d; configure at most %d for this check", s.info.MaxSize, maxSizeLimit)
		}
		existing := len(s.live(t))
		want := s.info.MaxSize - existing
		ids := s.increaseExpect(t, s.info.MaxSize+1, want, true)
		got, err := s.g.Decrease(t.Context(), ids)
		if err != nil || len(got) != len(ids) {
			t.Errorf("Decrease(%q) = %q, %v; want all accepted", ids, got, err)
		}
		s.waitGone(t, ids)
	})
	t.Run("Shutdown", func(t *testing.T) {
		s := start(t, newGroup, cfg)
		ids := s.increase(t, 1)
		if got, err := s.g.Decrease(t.Context(), ids); err != nil || !slices.Equal(got, ids) {
			t.Errorf("Decrease(%q) = %q, %v", ids, got, err)
		}
		s.waitGone(t, ids)
		s.shutdownChecked = true
		if err := s.g.Shutdown(t.Context()); err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	})
}

type suite struct {
	cfg             Config
	g               fleeting.InstanceGroup
	info            fleeting.ProviderInfo
	shutdownChecked bool
}

// start makes and initialises a group; the cleanup removes what the test left and shuts the group down.
func start(t *testing.T, newGroup func(t *testing.T) fleeting.InstanceGroup, cfg Config) *suite {
	t.Helper()
	s := &suite{cfg: cfg, g: newGroup(t)}
	info, err := s.g.Init(t.Context(), logging.Discard(), cfg.Settings)
	if err != nil {
		t.Fatalf("Init = %v", err)
	}
	s.info = info
	t.Cleanup(func() {
		if s.shutdownChecked {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
		defer cancel()
		var left []string
		_ = s.g.Update(ctx, func(id string, st fleeting.State) {
			if st != fleeting.StateDeleted {
				left = append(left, id)
			}
		})
		if len(left) > 0 {
			if _, err := s.g.Decrease(ctx, left); err != nil {
				t.Errorf("cleanup: Decrease(%q) = %v", left, err)
			}
		}
		if err := s.g.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	})
	return s
}

func (s *suite) states(t *testing.T) map[string]fleeting.State {
	t.Helper()
	m := map[string]fleeting.State{}
	err := s.g.Update(t.Context(), func(id string, st fleeting.State) {
		if _, dup := m[id]; dup {
			t.Errorf("Update reported instance %s twice", id)
		}
		m[id] = st
	})
	if err != nil {
		t.Fatalf("Update = %v", err)
	}
	return m
}

// live is the IDs Update reports as not deleted.
func (s *suite) live(t *testing.T) []string {
	var ids []string
	for id, st := range s.states(t) {
		if st != fleeting.StateDeleted {
			ids = append(ids, id)
		}
	}
	return ids
}

func (s *suite) increase(t *testing.T, n int) []string {
	t.Helper()
	return s.increaseExpect(t, n, n, false)
}

// increaseExpect asks for n instances, expects want to be added (with an error when wantErr), and
// waits until the new instances run, checking that each goes creating → running and never back.
func (s *suite) increaseExpect(t *testing.T, n, want int, wantErr bool) []string {
	t.Helper()
	before := map[string]bool{}
	for _, id := range s.live(t) {
		before[id] = true
	}
	got, err := s.g.Increase(t.Context(), n)
	if got != want {
		t.Fatalf("Increase(%d) = %d, %v; want %d", n, got, err, want)
	}
	if wantErr && err == nil {
		t.Errorf("Increase(%d) beyond max size %d added %d and returned no error; want an error for the rest", n, s.info.MaxSize, got)
	}
	if !wantErr && err != nil {
		t.Errorf("Increase(%d) = %d, %v; want no error", n, got, err)
	}

	seen := map[string][]fleeting.State{}
	deadline := time.Now().Add(s.cfg.Timeout)
	for {
		running := 0
		for id, st := range s.states(t) {
			if before[id] {
				continue
			}
			h := seen[id]
			if len(h) == 0 || h[len(h)-1] != st {
				seen[id] = append(h, st)
			}
			if st == fleeting.StateRunning {
				running++
			}
		}
		if len(seen) > want {
			t.Fatalf("Increase(%d) added %d but Update shows %d new instances: %v", n, want, len(seen), seen)
		}
		if len(seen) == want && running == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new instances not all running within %s: %v", s.cfg.Timeout, seen)
		}
		time.Sleep(s.cfg.PollInterval)
	}
	ids := make([]string, 0, len(seen))
	for id, h := range seen {
		ids = append(ids, id)
		if !validBoot(h, s.cfg.ExpectCreating) {
			t.Errorf("instance %s went through %v; want creating then running", id, h)
		}
	}
	slices.Sort(ids)
	return ids
}

// validBoot accepts [creating] running, creating only when required to be seen.
func validBoot(h []fleeting.State, needCreating bool) bool {
	switch {
	case slices.Equal(h, []fleeting.State{fleeting.StateCreating, fleeting.StateRunning}):
		return true
	case slices.Equal(h, []fleeting.State{fleeting.StateRunning}):
		return !needCreating
	}
	return false
}

// waitGone waits until Update reports each instance deleted or no longer at all.
func (s *suite) waitGone(t *testing.T, ids []string) {
	t.Helper()
	deadline := time.Now().Add(s.cfg.Timeout)
	for {
		st := s.states(t)
		var left []string
		for _, id := range ids {
			if v, ok := st[id]; ok && v != fleeting.StateDeleted {
				if v != fleeting.StateDeleting && v != fleeting.StateRunning && v != fleeting.StateCreating {
					t.Errorf("decreased instance %s is %q; want deleting, deleted or gone", id, v)
				}
				left = append(left, fmt.Sprintf("%s=%s", id, v))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("decreased instances not deleted within %s: %v", s.cfg.Timeout, left)
		}
		time.Sleep(s.cfg.PollInterval)
	}
}

func (s *suite) checkConnectInfo(t *testing.T, id string, dial bool) {
	t.Helper()
	info, err := s.g.ConnectInfo(t.Context(), id)
	if err != nil {
		t.Errorf("ConnectInfo(%s) = %v", id, err)
		return
	}
	if info.ID != id {
		t.Errorf("ConnectInfo(%s).ID = %q", id, info.ID)
	}
	if info.InternalAddr == "" && info.ExternalAddr == "" {
		t.Errorf("ConnectInfo(%s) has neither internal nor external address", id)
	}
	if info.Protocol != fleeting.ProtocolSSH && info.Protocol != fleeting.ProtocolWinRM {
		t.Errorf("ConnectInfo(%s).Protocol = %q, want %q or %q", id, info.Protocol, fleeting.ProtocolSSH, fleeting.ProtocolWinRM)
	}
	if info.OS == "" || info.Arch == "" {
		t.Errorf("ConnectInfo(%s) OS/Arch = %q/%q, want both set", id, info.OS, info.Arch)
	}
	if info.Username == "" {
		t.Errorf("ConnectInfo(%s).Username is empty", id)
	}
	if len(info.Key) == 0 && info.KeyPath == "" && info.Password == "" {
		t.Errorf("ConnectInfo(%s) carries no credentials (key, key_path or password)", id)
	}
	if !dial {
		return
	}
	out, code, err := connectAndRun(t.Context(), info, s.cfg)
	if err != nil || code != 0 || !strings.Contains(string(out), "fleetingtest") {
		t.Errorf("over SSH to %s: %q = %q, exit %d, %v; want output containing \"fleetingtest\", exit 0", id, s.cfg.Command, out, code, err)
	}
}

func connectAndRun(ctx context.Context, info fleeting.ConnectInfo, cfg Config) ([]byte, int, error) {
	c, err := connector.Dial(ctx, info, cfg.Connector)
	if err != nil {
		return nil, -1, err
	}
	defer c.Close()
	return c.Run(ctx, cfg.Command)
}
