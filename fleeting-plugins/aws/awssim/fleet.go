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

// maxActivities is how many scaling activities a group keeps (AWS keeps six weeks' worth).
const maxActivities = 200

type group struct {
	spec    GroupSpec
	arn     string
	desired int
	created time.Time
	// launches counts launch attempts, to spread instances over the zones.
	launches int
	// retryAt holds launches back after one failed for lack of capacity.
	retryAt    time.Time
	activities []*Activity
	// pool is the group's warm pool (warmpool.go), nil without one.
	pool *warmPool
	// template is the launch template it launches from (launchtemplates.go).
	template launchTemplate
	// tags are the group's tags by key (tags.go).
	tags map[string]groupTag
}

// Activity is one scaling activity of a group, as DescribeScalingActivities describes it.
type Activity struct {
	ID, Description, Cause, Details string
	Start, End                      time.Time
	// Status is InProgress, Successful, Failed or Cancelled.
	Status        string
	StatusMessage string
}

// startActivityLocked records a new activity of g. Called with s.mu held.
func (s *Server) startActivityLocked(g *group, az, description, cause string) *Activity {
	a := &Activity{ID: newUUID(s.rng), Description: description, Cause: cause, Start: time.Now().UTC(), Status: "InProgress",
		Details: `{"Subnet ID":"subnet-0123456789abcdef0","Availability Zone":"` + az + `"}`}
	g.activities = append(g.activities, a)
	if len(g.activities) > maxActivities {
		g.activities = slices.Delete(g.activities, 0, len(g.activities)-maxActivities)
	}
	return a
}

// finish ends an activity still in progress. Called with s.mu held.
func (a *Activity) finish(status, message string) {
	if a == nil || a.Status != "InProgress" {
		return
	}
	a.Status, a.StatusMessage, a.End = status, message, time.Now().UTC()
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
	// launch and termination are the instance's scaling activities.
	launch, termination *Activity
	// pushed keys by OS user, each valid until its time.
	pushed map[string][]pushedKey
	// spotCode is the status code of the instance's spot request (spot.go), empty for fulfilled;
	// spotUpdated is when it was set.
	spotCode    string
	spotUpdated time.Time
	// templateVersion is the launch template version it was launched from (launchtemplates.go).
	templateVersion int
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

// listingCutoff is the launch time up to which one listing shows instances: the simulated replica that
// answers it lags by between half the listing delay and all of it. Called with s.mu held.
func (s *Server) listingCutoff() time.Time {
	now := time.Now()
	if s.opts.ListingDelay <= 0 {
		return now
	}
	half := s.opts.ListingDelay / 2
	return now.Add(-half - time.Duration(s.rng.Int64N(int64(s.opts.ListingDelay-half)+1)))
}

// listed reports whether a listing with this cutoff shows inst.
func listed(inst *instance, cutoff time.Time) bool { return !inst.launched.After(cutoff) }

// reconcile launches instances for groups below their desired capacity, from the warm pool first, and
// terminates unprotected ones (newest first) for groups above it, as Auto Scaling does; then it sizes
// the warm pools.
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
	now := time.Now()
	for name, g := range s.groups {
		have := live[name]
		for n := len(have); n < g.desired && !now.Before(g.retryAt); n++ {
			if !s.startWarmLocked(g, n) && !s.launchLocked(g, n) {
				break
			}
		}
		for i := len(have) - 1; i >= 0 && len(have) > g.desired; i-- {
			if !have[i].protected {
				s.terminateLocked(have[i], fmt.Sprintf("At %s an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from %d to %d.",
					awsTime(now), len(have), len(have)-1))
				have = slices.Delete(have, i, i+1)
			}
		}
		s.reconcileWarmPoolLocked(g)
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

// launchLocked starts one more instance of g, which has live instances pending or in service, and
// reports whether it did: EC2 may refuse for lack of capacity (Faults.InsufficientCapacityRate), and
// then the group waits before it launches again. Called with s.mu held.
func (s *Server) launchLocked(g *group, live int) bool {
	az := g.spec.AZs[g.launches%len(g.spec.AZs)]
	g.launches++
	now := time.Now()
	cause := fmt.Sprintf("At %s an instance was started in response to a difference between desired and actual capacity, increasing the capacity from %d to %d.",
		awsTime(now), live, live+1)
	if s.faults.InsufficientCapacityRate > 0 && s.rng.Float64() < s.faults.InsufficientCapacityRate {
		// EC2's InsufficientInstanceCapacity, in the words Auto Scaling records it with.
		msg := fmt.Sprintf("We currently do not have sufficient t3.micro capacity in the Availability Zone you requested (%s). Our system will be working on provisioning additional capacity. You can currently get t3.micro capacity by not specifying an Availability Zone in your request or choosing another Availability Zone. Launching EC2 instance failed.", az)
		s.startActivityLocked(g, az, "Launching a new EC2 instance.  Status Reason: "+msg, cause).finish("Failed", msg)
		g.retryAt = now.Add(s.opts.LaunchRetryDelay)
		s.log.WithFields(logrus.Fields{"group": g.spec.Name, "zone": az, "retry_after": s.opts.LaunchRetryDelay}).Debug("awssim: launch failed for lack of capacity")
		return false
	}
	addr, err := s.nextAddress()
	if err != nil {
		s.log.WithError(err).Error("awssim: cannot launch an instance")
		return false
	}
	inst := &instance{
		id: s.newInstanceID(), group: g.spec.Name, az: az,
		lifecycle: lifecyclePending, health: "Healthy", ec2State: "pending",
		protected: g.spec.ProtectFromScaleIn, addr: addr, launched: now,
		pushed: map[string][]pushedKey{}, templateVersion: s.launchVersionLocked(g),
	}
	inst.dir = filepath.Join(s.dir, "instances", inst.id)
	inst.launch = s.startActivityLocked(g, az, "Launching a new EC2 instance: "+inst.id, cause)
	s.instances[inst.id] = inst
	fail := s.faults.LaunchFailures > 0
	if fail {
		s.faults.LaunchFailures--
	}
	boot := g.spec.Boot.Sample(s.rng)
	boot.Running += s.faults.SlowBoot
	neverHealthy := s.faults.NeverHealthy
	log := s.log.WithFields(logrus.Fields{"instance": inst.id, "group": inst.group, "address": addr})
	log.WithFields(logrus.Fields{"running_after": boot.Running, "sshd_after": boot.SSHD, "docker_after": boot.Docker}).Debug("awssim: launching instance")

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !s.sleep(boot.Running) || !s.startRunning(inst, fail, neverHealthy, log) || !s.sleep(boot.SSHD) {
			return
		}
		sshd := s.startSSHD(inst, boot.Docker > 0, log)
		if sshd == nil || !s.sleep(boot.Docker) {
			return
		}
		if err := sshd.StartDocker(); err != nil && s.inService(inst) {
			log.WithError(err).Warn("awssim: could not start the instance's Docker")
		}
	}()
	return true
}

// sleep waits d, or reports false when the simulator stops first.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *Server) inService(inst *instance) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && inst.lifecycle == lifecycleInService
}

// startRunning ends the instance's running stage: it goes InService and `running`, with no sshd yet, or
// fails and is terminated (Faults.LaunchFailures). It reports whether the boot goes on.
func (s *Server) startRunning(inst *instance, fail, neverHealthy bool, log logrus.FieldLogger) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case inst.lifecycle != lifecyclePending || s.closed:
		// Terminated while booting.
		return false
	case fail:
		inst.stateReason = "Server.InternalError: Internal error on launch"
		inst.launch.finish("Failed", "Instance "+inst.id+" failed to boot: "+inst.stateReason)
		s.terminateLocked(inst, fmt.Sprintf("At %s an instance was taken out of service in response to a launch failure.", awsTime(time.Now())))
		return false
	}
	inst.lifecycle, inst.ec2State = lifecycleInService, "running"
	if neverHealthy {
		inst.health = "Unhealthy"
	}
	inst.launch.finish("Successful", "")
	log.Debug("awssim: instance in service, its sshd not yet listening")
	return true
}

// startSSHD ends the instance's sshd stage, with its Docker socket hidden when hideDocker and the
// machine allows it. It returns the sshd, or nil when the instance left service meanwhile or sshd could
// not start (then the instance is terminated).
func (s *Server) startSSHD(inst *instance, hideDocker bool, log logrus.FieldLogger) *local.SSHD {
	if !s.inService(inst) {
		return nil
	}
	opts := local.SSHDOptions{
		Dir: inst.dir, Address: inst.addr.String(), Port: s.port,
		// sshd expands %u: a pushed key works for the OS user it was pushed for only.
		AuthorizedKeysFile: s.staticKeys() + " " + filepath.Join(inst.dir, "pushed_%u"),
	}
	if hideDocker && s.dockerGate == nil {
		opts.HideDocker = s.opts.DockerSocket
	}
	sshd, err := local.StartSSHD(s.ctx, opts)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		if !s.closed && inst.lifecycle == lifecycleInService {
			log.WithError(err).Warn("awssim: instance sshd failed to start; terminating the instance")
			inst.stateReason = "Server.InternalError: Internal error on launch"
			s.terminateLocked(inst, fmt.Sprintf("At %s an instance was taken out of service in response to an EC2 instance status checks failure.", awsTime(time.Now())))
		}
		return nil
	case inst.lifecycle != lifecycleInService || s.closed:
		// Terminated while sshd started.
		_ = sshd.Kill()
		return nil
	}
	inst.sshd = sshd
	log.WithField("docker_hidden", opts.HideDocker != "").Debug("awssim: instance sshd listening")
	return sshd
}

// terminateLocked kills the instance's sshd and moves it through Terminating to Terminated, when it
// leaves its group; DescribeInstances still shows it shutting-down for a while, then terminated, as EC2
// does. cause goes into the termination's scaling activity. Called with s.mu held.
func (s *Server) terminateLocked(inst *instance, cause string) {
	inst.lifecycle, inst.ec2State = lifecycleTerminating, "shutting-down"
	if inst.stateReason == "" {
		inst.stateReason = "Client.UserInitiatedShutdown: User initiated shutdown"
	}
	inst.launch.finish("Cancelled", "Instance "+inst.id+" was terminated while launching.")
	inst.termination = s.startActivityLocked(s.groups[inst.group], inst.az, "Terminating EC2 instance: "+inst.id, cause)
	sshd := inst.takeSSHD()
	s.kickLocked()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if sshd != nil {
			_ = sshd.Kill()
		}
		if !s.sleep(s.opts.TerminateDelay) || !s.whileOpen(func() {
			inst.lifecycle = lifecycleTerminated
			inst.termination.finish("Successful", "")
			_ = os.RemoveAll(inst.dir)
			s.kickLocked()
		}) {
			return
		}
		if !s.sleep(s.opts.ShuttingDownFor) || !s.whileOpen(func() { inst.ec2State = "terminated" }) || !s.sleep(s.opts.TerminatedFor) {
			return
		}
		s.whileOpen(func() { delete(s.instances, inst.id) })
	}()
}

// whileOpen applies a change under the lock and reports true, unless the simulator stopped.
func (s *Server) whileOpen(change func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	change()
	return true
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
	// A key may come before sshd has started and made the instance's directory.
	if err := os.MkdirAll(inst.dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(inst.dir, "pushed_"+user)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
