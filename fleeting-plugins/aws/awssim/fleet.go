package awssim

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// Auto Scaling lifecycle states the simulator uses.
const (
	lifecyclePending     = "Pending"
	lifecycleInService   = "InService"
	lifecycleTerminating = "Terminating"
	lifecycleTerminated  = "Terminated"
)

// reconcileEvery is how often groups are brought to their desired capacity without a kick.
const reconcileEvery = 100 * time.Millisecond

type group struct {
	spec    GroupSpec
	arn     string
	desired int
	created time.Time
}

type instance struct {
	id, group, az string
	lifecycle     string
	health        string
	ec2State      string
	stateReason   string
	protected     bool
	addr          netip.Addr
	launched      time.Time
	dir           string
	sshd          *local.SSHD
	// pushed keys by OS user, each valid until its time.
	pushed map[string][]pushedKey
}

type pushedKey struct {
	key   string
	until time.Time
}

// takeSSHD detaches the instance's sshd for killing outside the lock. Called with s.mu held, or after
// the simulator stopped.
func (inst *instance) takeSSHD() *local.SSHD {
	sshd := inst.sshd
	inst.sshd = nil
	return sshd
}

func newUUID(r *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	u, _ := uuid.FromBytes(b[:])
	return u.String()
}

func (s *Server) newInstanceID() string {
	for {
		id := fmt.Sprintf("i-0%016x", s.rng.Uint64())
		if _, dup := s.instances[id]; !dup {
			return id
		}
	}
}

func (s *Server) kickLocked() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) reconcileLoop() {
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		s.reconcile()
	}
}

// sortedInstances lists instances by launch time. Called with s.mu held.
func (s *Server) sortedInstances() []*instance {
	all := make([]*instance, 0, len(s.instances))
	for _, inst := range s.instances {
		all = append(all, inst)
	}
	slices.SortFunc(all, func(a, b *instance) int {
		if c := a.launched.Compare(b.launched); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	return all
}

// reconcile launches instances for groups below their desired capacity and terminates unprotected
// ones (newest first) for groups above it, as Auto Scaling does.
func (s *Server) reconcile() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	live := map[string][]*instance{}
	for _, inst := range s.sortedInstances() {
		if inst.lifecycle == lifecyclePending || inst.lifecycle == lifecycleInService {
			live[inst.group] = append(live[inst.group], inst)
		}
	}
	for name, g := range s.groups {
		have := live[name]
		for range g.desired - len(have) {
			s.launchLocked(g)
		}
		for i := len(have) - 1; i >= 0 && len(have) > g.desired; i-- {
			if !have[i].protected {
				s.terminateLocked(have[i])
				have = slices.Delete(have, i, i+1)
			}
		}
	}
}

// nextAddress returns the next loopback address where the SSH port is free. Called with s.mu held.
func (s *Server) nextAddress() (netip.Addr, error) {
	for range 256 {
		a := s.nextAddr
		s.nextAddr = a.Next()
		if !a.IsLoopback() {
			return a, fmt.Errorf("awssim: ran out of loopback addresses at %s", a)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(a.String(), strconv.Itoa(s.port)))
		if err == nil {
			_ = l.Close()
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("awssim: no loopback address near %s with port %d free", s.nextAddr, s.port)
}

// launchLocked starts one instance of g: Pending now, InService once its sshd runs after the boot delay.
func (s *Server) launchLocked(g *group) {
	addr, err := s.nextAddress()
	if err != nil {
		s.log.WithError(err).Error("awssim: cannot launch an instance")
		return
	}
	az := g.spec.AZs[len(s.instances)%len(g.spec.AZs)]
	inst := &instance{
		id: s.newInstanceID(), group: g.spec.Name, az: az,
		lifecycle: lifecyclePending, health: "Healthy", ec2State: "pending",
		protected: g.spec.ProtectFromScaleIn, addr: addr, launched: time.Now().UTC(),
		pushed: map[string][]pushedKey{},
	}
	inst.dir = filepath.Join(s.dir, "instances", inst.id)
	s.instances[inst.id] = inst
	fail := s.faults.LaunchFailures > 0
	if fail {
		s.faults.LaunchFailures--
	}
	delay := g.spec.BootDelay + s.faults.SlowBoot
	neverHealthy := s.faults.NeverHealthy
	log := s.log.WithFields(logrus.Fields{"instance": inst.id, "group": inst.group, "address": addr})
	log.Debug("awssim: launching instance")

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-time.After(delay):
		case <-s.ctx.Done():
			return
		}
		var sshd *local.SSHD
		if !fail {
			var err error
			sshd, err = local.StartSSHD(s.ctx, local.SSHDOptions{
				Dir: inst.dir, Address: addr.String(), Port: s.port,
				// sshd expands %u: a pushed key works for the OS user it was pushed for only.
				AuthorizedKeysFile: s.staticKeys() + " " + filepath.Join(inst.dir, "pushed_%u"),
			})
			if err != nil {
				log.WithError(err).Warn("awssim: instance sshd failed to start")
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case inst.lifecycle != lifecyclePending || s.closed:
			// Terminated while booting.
			if sshd != nil {
				_ = sshd.Kill()
			}
		case sshd == nil:
			inst.stateReason = "Server.InternalError: Internal error on launch"
			s.terminateLocked(inst)
		default:
			inst.sshd = sshd
			inst.lifecycle, inst.ec2State = lifecycleInService, "running"
			if neverHealthy {
				inst.health = "Unhealthy"
			}
			log.Debug("awssim: instance in service")
		}
	}()
}

// terminateLocked kills the instance's sshd and moves it through Terminating to Terminated, after which
// it leaves its group. Called with s.mu held.
func (s *Server) terminateLocked(inst *instance) {
	inst.lifecycle, inst.ec2State = lifecycleTerminating, "shutting-down"
	if inst.stateReason == "" {
		inst.stateReason = "Client.UserInitiatedShutdown: User initiated shutdown"
	}
	sshd := inst.takeSSHD()
	s.kickLocked()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if sshd != nil {
			_ = sshd.Kill()
		}
		select {
		case <-time.After(s.opts.TerminateDelay):
		case <-s.ctx.Done():
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		inst.lifecycle, inst.ec2State = lifecycleTerminated, "terminated"
		_ = os.RemoveAll(inst.dir)
		s.kickLocked()
	}()
}

// pushKey accepts key for user on inst until the TTL passes. Called with s.mu held.
func (s *Server) pushKeyLocked(inst *instance, user, key string) error {
	now := time.Now()
	inst.pushed[user] = append(inst.pushed[user], pushedKey{key: key, until: now.Add(s.opts.KeyTTL)})
	if err := s.writePushedLocked(inst, user); err != nil {
		return err
	}
	time.AfterFunc(s.opts.KeyTTL, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed && inst.lifecycle != lifecycleTerminated {
			_ = s.writePushedLocked(inst, user)
		}
	})
	return nil
}

// writePushedLocked rewrites the user's pushed-key file with the keys still valid.
func (s *Server) writePushedLocked(inst *instance, user string) error {
	now := time.Now()
	var lines []string
	keep := inst.pushed[user][:0]
	for _, k := range inst.pushed[user] {
		if k.until.After(now) {
			keep = append(keep, k)
			lines = append(lines, k.key)
		}
	}
	inst.pushed[user] = keep
	path := filepath.Join(inst.dir, "pushed_"+user)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
