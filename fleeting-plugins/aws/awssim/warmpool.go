package awssim

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// DefaultWarmStart is GroupSpec.WarmStart's default: a sixth of local.EC2Boot's full boot, since EC2
// only starts a stopped instance whose first boot (user data, image pulls) is done.
const DefaultWarmStart = 1500 * time.Millisecond

// Warm pool lifecycle states (Auto Scaling's LifecycleState values for instances in a warm pool).
const (
	warmedPrefix      = "Warmed:"
	warmedPending     = "Warmed:Pending"
	warmedTerminating = "Warmed:Terminating"
)

// warmPool is a group's warm pool as PutWarmPool configured it.
type warmPool struct {
	minSize int
	// maxPrepared is MaxGroupPreparedCapacity; -1 means unset (the group's MaxSize counts).
	maxPrepared int
	// state is the pool state instances go to after their first boot: Stopped, Running or Hibernated.
	state string
	// reuse is InstanceReusePolicy.ReuseOnScaleIn, echoed by the describe calls; the simulator
	// terminates instances leaving the group whatever it says.
	reuse bool
	// deleting is set by DeleteWarmPool until its instances are gone (Status PendingDelete).
	deleting bool
}

type asgReusePolicy struct {
	ReuseOnScaleIn bool `xml:"ReuseOnScaleIn"`
}

type asgWarmPoolConfig struct {
	MaxGroupPreparedCapacity *int           `xml:"MaxGroupPreparedCapacity,omitempty"`
	MinSize                  int            `xml:"MinSize"`
	PoolState                string         `xml:"PoolState"`
	Status                   string         `xml:"Status,omitempty"`
	InstanceReusePolicy      asgReusePolicy `xml:"InstanceReusePolicy"`
}

type describeWarmPoolResult struct {
	WarmPoolConfiguration *asgWarmPoolConfig `xml:"WarmPoolConfiguration,omitempty"`
	Instances             []asgInstance      `xml:"Instances>member"`
	NextToken             string             `xml:"NextToken,omitempty"`
}

// warmed reports whether inst is in its group's warm pool rather than the group: DescribeAutoScalingGroups
// leaves such instances out and the group's desired capacity does not count them.
func warmed(inst *instance) bool { return strings.HasPrefix(inst.lifecycle, warmedPrefix) }

// warmPoolAction answers the warm pool actions; ok is false for any other action. PutWarmPool and
// DeleteWarmPool answer an empty Result element, as AWS does (the SDK expects it).
func (s *Server) warmPoolAction(action string, form url.Values) (result any, err *apiError, ok bool) {
	switch action {
	case "PutWarmPool":
		return struct{}{}, s.putWarmPool(form), true
	case "DescribeWarmPool":
		result, err = s.describeWarmPool(form)
		return result, err, true
	case "DeleteWarmPool":
		return struct{}{}, s.deleteWarmPool(form), true
	}
	return nil, nil, false
}

func (s *Server) putWarmPool(form url.Values) *apiError {
	g, err := s.group(form.Get("AutoScalingGroupName"))
	if err != nil {
		return err
	}
	minSize, err := queryInt(form, "MinSize", 0)
	if err != nil {
		return err
	}
	maxPrepared, err := queryInt(form, "MaxGroupPreparedCapacity", -1)
	if err != nil {
		return err
	}
	state := form.Get("PoolState")
	if state == "" {
		state = "Stopped"
	}
	switch {
	case minSize < 0:
		return validationError("1 validation error detected: Value '%d' at 'minSize' failed to satisfy constraint: Member must have value greater than or equal to 0", minSize)
	case maxPrepared < -1:
		return validationError("1 validation error detected: Value '%d' at 'maxGroupPreparedCapacity' failed to satisfy constraint: Member must have value greater than or equal to -1", maxPrepared)
	case !slices.Contains([]string{"Stopped", "Running", "Hibernated"}, state):
		return validationError("1 validation error detected: Value '%s' at 'poolState' failed to satisfy constraint: Member must satisfy enum value set: [Hibernated, Running, Stopped]", state)
	case minSize > g.spec.MaxSize || maxPrepared > g.spec.MaxSize:
		// Not AWS's rule: the simulator launches every pool instance on a loopback address of its own.
		return validationError("awssim simulates warm pools up to the group's MaxSize %d (MinSize %d, MaxGroupPreparedCapacity %d)", g.spec.MaxSize, minSize, maxPrepared)
	case g.pool != nil && g.pool.deleting:
		return validationError("The warm pool of Auto Scaling group %s is being deleted.", g.spec.Name)
	}
	reuse := false
	if v := form.Get("InstanceReusePolicy.ReuseOnScaleIn"); v != "" {
		var perr error
		if reuse, perr = strconv.ParseBool(v); perr != nil {
			return validationError("Value '%s' at 'instanceReusePolicy.reuseOnScaleIn' is not a boolean", v)
		}
	}
	g.pool = &warmPool{minSize: minSize, maxPrepared: maxPrepared, state: state, reuse: reuse}
	s.kickLocked()
	return nil
}

func (s *Server) deleteWarmPool(form url.Values) *apiError {
	g, err := s.group(form.Get("AutoScalingGroupName"))
	if err != nil {
		return err
	}
	if g.pool == nil {
		return validationError("No warm pool found for Auto Scaling group %s.", g.spec.Name)
	}
	g.pool.deleting = true
	s.kickLocked()
	return nil
}

func (s *Server) describeWarmPool(form url.Values) (any, *apiError) {
	g, err := s.group(form.Get("AutoScalingGroupName"))
	if err != nil {
		return nil, err
	}
	size, err := maxRecords(form, 50, 50)
	if err != nil {
		return nil, err
	}
	var out describeWarmPoolResult
	out.WarmPoolConfiguration, _ = s.warmPoolXML(g)
	for _, inst := range s.poolInstances(g) {
		out.Instances = append(out.Instances, asgInstance{
			InstanceID: inst.id, InstanceType: "t3.micro", AvailabilityZone: inst.az,
			LifecycleState: inst.lifecycle, HealthStatus: inst.health,
			LaunchTemplate: s.instanceLaunchTemplate(inst), ProtectedFromScaleIn: inst.protected,
		})
	}
	if out.Instances, out.NextToken, err = page(out.Instances, form.Get("NextToken"), size); err != nil {
		return nil, err
	}
	return out, nil
}

// warmPoolXML is the group's WarmPoolConfiguration and WarmPoolSize for DescribeAutoScalingGroups; nil
// for a group without a warm pool. Called with s.mu held.
func (s *Server) warmPoolXML(g *group) (*asgWarmPoolConfig, *int) {
	if g.pool == nil {
		return nil, nil
	}
	cfg := &asgWarmPoolConfig{MinSize: g.pool.minSize, PoolState: g.pool.state, InstanceReusePolicy: asgReusePolicy{g.pool.reuse}}
	if g.pool.maxPrepared >= 0 {
		cfg.MaxGroupPreparedCapacity = &g.pool.maxPrepared
	}
	if g.pool.deleting {
		cfg.Status = "PendingDelete"
	}
	size := 0
	for _, inst := range s.poolInstances(g) {
		if inst.lifecycle != warmedTerminating {
			size++
		}
	}
	return cfg, &size
}

// poolInstances lists the group's warm pool instances, oldest first. Called with s.mu held.
func (s *Server) poolInstances(g *group) []*instance {
	var out []*instance
	for _, inst := range s.sortedInstances() {
		if inst.group == g.spec.Name && warmed(inst) {
			out = append(out, inst)
		}
	}
	return out
}

// poolTarget is how many instances the warm pool keeps: MaxGroupPreparedCapacity (or MaxSize) less the
// desired capacity, but at least the pool's MinSize, as Auto Scaling sizes it.
func poolTarget(g *group) int {
	prepared := g.pool.maxPrepared
	if prepared < 0 {
		prepared = g.spec.MaxSize
	}
	return max(g.pool.minSize, prepared-g.desired)
}

// startWarmLocked takes the oldest warm pool instance that finished its first boot into the group, as
// Auto Scaling does before it launches anything: Pending at once, InService and running after
// GroupSpec.WarmStart, with its sshd (and Docker, whose first start the first boot did) up then. It
// reports false when there is none. Called with s.mu held.
func (s *Server) startWarmLocked(g *group, live int) bool {
	if g.pool == nil {
		return false
	}
	var inst *instance
	for _, in := range s.poolInstances(g) {
		if in.lifecycle != warmedPending && in.lifecycle != warmedTerminating {
			inst = in
			break
		}
	}
	if inst == nil {
		return false
	}
	now := time.Now()
	inst.lifecycle, inst.ec2State, inst.stateReason = lifecyclePending, "pending", ""
	inst.launch = s.startActivityLocked(g, inst.az, "Launching a new EC2 instance from warm pool: "+inst.id,
		fmt.Sprintf("At %s an instance was moved from the warm pool in response to a difference between desired and actual capacity, increasing the capacity from %d to %d.",
			awsTime(now), live, live+1))
	warmStart := g.spec.WarmStart
	if warmStart <= 0 {
		warmStart = DefaultWarmStart
	}
	neverHealthy := s.faults.NeverHealthy
	log := s.log.WithFields(logrus.Fields{"instance": inst.id, "group": inst.group, "address": inst.addr})
	log.WithField("running_after", warmStart).Debug("awssim: starting a warm pool instance")
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !s.sleep(warmStart) || !s.startRunning(inst, false, neverHealthy, log) {
			return
		}
		if sshd := s.startSSHD(inst, false, log); sshd != nil {
			if err := sshd.StartDocker(); err != nil && s.inService(inst) {
				log.WithError(err).Warn("awssim: could not start the instance's Docker")
			}
		}
	}()
	return true
}

// reconcileWarmPoolLocked brings g's warm pool to its size: it launches instances into it, which boot
// fully (GroupSpec.Boot, without sshd: nobody logs in to a pool instance) and then go to the pool
// state, and terminates the newest surplus ones. A pool being deleted loses all its instances, and the
// pool itself once they are gone. Called with s.mu held.
func (s *Server) reconcileWarmPoolLocked(g *group) {
	if g.pool == nil {
		return
	}
	var kept []*instance
	for _, inst := range s.poolInstances(g) {
		if inst.lifecycle != warmedTerminating {
			kept = append(kept, inst)
		}
	}
	target := poolTarget(g)
	if g.pool.deleting {
		if len(s.poolInstances(g)) == 0 {
			g.pool = nil
			return
		}
		target = 0
	}
	for n := len(kept); n < target; n++ {
		s.launchWarmLocked(g)
	}
	for i := len(kept) - 1; i >= target; i-- {
		s.terminateWarmLocked(kept[i])
	}
}

// launchWarmLocked launches one instance into g's warm pool. The launch faults (Faults.LaunchFailures,
// InsufficientCapacityRate, SlowBoot) apply to launches into the group only. Called with s.mu held.
func (s *Server) launchWarmLocked(g *group) {
	az := g.spec.AZs[g.launches%len(g.spec.AZs)]
	g.launches++
	addr, err := s.nextAddress()
	if err != nil {
		s.log.WithError(err).Error("awssim: cannot launch a warm pool instance")
		return
	}
	now := time.Now()
	inst := &instance{
		id: s.newInstanceID(), group: g.spec.Name, az: az,
		lifecycle: warmedPending, health: "Healthy", ec2State: "pending",
		protected: g.spec.ProtectFromScaleIn, addr: addr, launched: now,
		pushed: map[string][]pushedKey{}, templateVersion: s.launchVersionLocked(g),
	}
	inst.dir = filepath.Join(s.dir, "instances", inst.id)
	inst.launch = s.startActivityLocked(g, az, "Launching a new EC2 instance into warm pool: "+inst.id,
		fmt.Sprintf("At %s an instance was launched in response to a warm pool size change.", awsTime(now)))
	s.instances[inst.id] = inst
	boot := g.spec.Boot.Sample(s.rng)
	state := g.pool.state
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !s.sleep(boot.Running + boot.SSHD + boot.Docker) {
			return
		}
		s.whileOpen(func() {
			if inst.lifecycle != warmedPending {
				return
			}
			inst.lifecycle, inst.ec2State = warmedPrefix+state, "stopped"
			if state == "Running" {
				inst.ec2State = "running"
			}
			inst.launch.finish("Successful", "")
			s.log.WithFields(logrus.Fields{"instance": inst.id, "group": inst.group, "lifecycle": inst.lifecycle}).Debug("awssim: instance warmed")
		})
	}()
}

// terminateWarmLocked terminates a warm pool instance: Warmed:Terminating, then gone from the pool,
// shutting-down and terminated in DescribeInstances as any terminated instance. Called with s.mu held.
func (s *Server) terminateWarmLocked(inst *instance) {
	inst.lifecycle, inst.ec2State, inst.stateReason = warmedTerminating, "shutting-down", "Client.UserInitiatedShutdown: User initiated shutdown"
	inst.launch.finish("Cancelled", "Instance "+inst.id+" was terminated while launching.")
	inst.termination = s.startActivityLocked(s.groups[inst.group], inst.az, "Terminating EC2 instance from warm pool: "+inst.id,
		fmt.Sprintf("At %s an instance was taken out of the warm pool in response to a warm pool size change.", awsTime(time.Now())))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !s.sleep(s.opts.TerminateDelay) || !s.whileOpen(func() {
			inst.lifecycle = lifecycleTerminated
			inst.termination.finish("Successful", "")
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
