// Package awssim simulates the parts of AWS the aws fleeting plugin talks to, on the wire: the Auto
// Scaling and EC2 Query APIs (form-encoded requests, XML answers in AWS's namespaces, AWS's error shapes
// and codes) and the EC2 Instance Connect JSON API, on one HTTP endpoint on 127.0.0.1. Point the SDK at
// it with AWS_ENDPOINT_URL, so the code under test is the code that runs against AWS.
//
// It models the cloud's bad days, not our wishes. Every instance a group launches is a real OpenSSH sshd
// on its own loopback address (started with the local plugin's launcher) that boots in stages, as an EC2
// instance does (GroupSpec.Boot): Pending, then InService and `running` while its sshd still refuses
// connections, then sshd, then its Docker Engine. Listings are eventually consistent: a new instance is
// missing from them for a moment, and a terminated one stays in DescribeInstances, shutting-down and
// then terminated, after it left its group. An instance accepts the keys given in Options.StaticKeys
// and, for 60 seconds, each key pushed for it with SendSSHPublicKey, for that OS user only, like EC2
// Instance Connect. The Docker socket is reachable through it by stream-local forwarding. Fault knobs
// (SetFaults) throttle calls, fail launches for lack of capacity or during boot, slow boots and keep
// instances unhealthy; ReplaceInstance and TerminateFromOutside replace an instance the way the group
// or EC2 does by itself. A group may have a warm pool (PutWarmPool, warmpool.go): stopped instances
// outside its listing that it takes first when it grows, which run after GroupSpec.WarmStart. Its tags
// change with CreateOrUpdateTags and DeleteTags (tags.go); only those propagated at launch reach its
// instances.
package awssim

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// Options configure a Server; the zero value works (as root, instances listen on port 22).
type Options struct {
	// Region and AccountID appear in ARNs and zone names; defaults us-east-1 and 123456789012.
	Region    string
	AccountID string
	// Dir holds instance directories (host keys, sshd logs, authorized keys); empty means a temporary
	// directory removed by Close.
	Dir string
	// BaseAddress is the first instance address; later instances take the next free ones. Empty picks
	// a random 127.x.y.1 so that simulators in parallel test packages do not collide.
	BaseAddress string
	// SSHPort is every instance's sshd port: 0 means 22 when running as root, else a free port.
	SSHPort int
	// StaticKeys are authorized_keys lines every instance always accepts (use_static_credentials).
	StaticKeys []string
	// KeyTTL is how long a pushed key is accepted; default 60s as in EC2 Instance Connect.
	KeyTTL time.Duration
	// TerminateDelay is how long an instance stays Terminating in its group; default 100ms.
	TerminateDelay time.Duration
	// ShuttingDownFor is how long DescribeInstances still shows an instance shutting-down after it left
	// its group; default 1s.
	ShuttingDownFor time.Duration
	// TerminatedFor is how long DescribeInstances then lists it as terminated before forgetting it;
	// default 1 minute (EC2 keeps terminated instances visible for about an hour).
	TerminatedFor time.Duration
	// ListingDelay is how long a newly launched instance may be missing from DescribeInstances,
	// DescribeAutoScalingGroups and DescribeAutoScalingInstances. Each call is answered as a replica
	// that lags by between half of it and all of it would answer: an instance younger than half the
	// delay is never listed, one younger than the delay may show in one listing and be missing from the
	// next. 0 means DefaultListingDelay; ConsistentListings turns it off.
	ListingDelay       time.Duration
	ConsistentListings bool
	// LaunchRetryDelay is how long a group waits after a launch failed for lack of capacity before it
	// launches again; default 1s (Auto Scaling waits about 10 s, longer after repeated failures).
	LaunchRetryDelay time.Duration
	// DockerSocket is the Docker Engine socket an instance hides until its Docker boot stage has passed;
	// default /var/run/docker.sock.
	DockerSocket string
	// PublicIP gives instances a public address too (the same loopback address).
	PublicIP bool
	// Architecture is EC2's name for the instances' architecture; default this machine's.
	Architecture string
	// Platform is "" for Linux or "windows".
	Platform string
	// Seed makes fault injection repeatable; 0 seeds from the clock.
	Seed uint64
	// Log receives instance events; nil discards them.
	Log logrus.FieldLogger
}

// DefaultListingDelay is Options.ListingDelay's default.
const DefaultListingDelay = time.Second

// GroupSpec describes an Auto Scaling group to create.
type GroupSpec struct {
	Name                              string
	MinSize, MaxSize, DesiredCapacity int
	// Boot is how the group's instances boot; nil means local.EC2Boot, and &local.BootModel{} boots at
	// once (unit tests). Hiding Docker until its stage has passed needs local.DockerGateAvailable;
	// without it Docker answers as soon as sshd does.
	Boot               *local.BootModel
	ProtectFromScaleIn bool
	SuspendAZRebalance bool
	AZs                []string
	// Policies names scaling policies attached to the group (DescribePolicies lists them).
	Policies []string
	// Tags are put on the group and propagated to its instances.
	Tags map[string]string
	// WarmStart is how long an instance the group takes from its warm pool (PutWarmPool) stays Pending
	// before it is InService with its sshd and Docker up; 0 means DefaultWarmStart.
	WarmStart time.Duration
}

// Faults are injected into the API and the instances; SetFaults replaces them.
type Faults struct {
	// ThrottleRate is the fraction of API calls answered with a throttling error (Throttling,
	// RequestLimitExceeded, ThrottlingException as each service names it).
	ThrottleRate float64
	// LaunchFailures is how many of the next launches fail: the instance boots, fails and is terminated,
	// and the group launches a replacement.
	LaunchFailures int
	// InsufficientCapacityRate is the fraction of launches that EC2 refuses with
	// InsufficientInstanceCapacity: no instance is made, the group records a failed scaling activity
	// (DescribeScalingActivities) and launches again after Options.LaunchRetryDelay. SetDesiredCapacity
	// succeeds all the same, as on AWS.
	InsufficientCapacityRate float64
	// SlowBoot is added to the running stage of instances launched while it is set.
	SlowBoot time.Duration
	// NeverHealthy keeps instances launched while it is set InService but Unhealthy.
	NeverHealthy bool
	// AccessDenied lists actions (e.g. "DescribeAutoScalingGroups", "SendSSHPublicKey") answered with the
	// service's access-denied error.
	AccessDenied []string
}

// KeyPush is one SendSSHPublicKey call as received.
type KeyPush struct {
	InstanceID string
	// Group is the instance's group, empty for an unknown instance.
	Group string
	User  string
	Key   string
	Time  time.Time
	// Err is the error code answered, empty when the key was accepted.
	Err string
}

// Server is a running simulator.
type Server struct {
	opts   Options
	log    logrus.FieldLogger
	dir    string
	tmpDir bool
	srv    *http.Server
	url    string
	port   int

	mu        sync.Mutex
	groups    map[string]*group
	instances map[string]*instance
	calls     map[string]int
	pushes    []KeyPush
	faults    Faults
	rng       *rand.Rand
	// dockerGate is why instances cannot hide Docker until their Docker stage; nil when they can.
	dockerGate     error
	dockerGateOnce sync.Once
	nextAddr       netip.Addr
	closed         bool
	kick           chan struct{}
	ctx            context.Context
	cancel         context.CancelFunc
	wg             sync.WaitGroup
}

// New starts a simulator on 127.0.0.1.
func New(opts Options) (*Server, error) {
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.AccountID == "" {
		opts.AccountID = "123456789012"
	}
	if opts.KeyTTL <= 0 {
		opts.KeyTTL = 60 * time.Second
	}
	if opts.TerminateDelay <= 0 {
		opts.TerminateDelay = 100 * time.Millisecond
	}
	if opts.ShuttingDownFor <= 0 {
		opts.ShuttingDownFor = time.Second
	}
	if opts.TerminatedFor <= 0 {
		opts.TerminatedFor = time.Minute
	}
	if opts.ListingDelay <= 0 {
		opts.ListingDelay = DefaultListingDelay
	}
	if opts.ConsistentListings {
		opts.ListingDelay = 0
	}
	if opts.LaunchRetryDelay <= 0 {
		opts.LaunchRetryDelay = time.Second
	}
	if opts.DockerSocket == "" {
		opts.DockerSocket = "/var/run/docker.sock"
	}
	if opts.Architecture == "" {
		opts.Architecture = map[string]string{"amd64": "x86_64", "arm64": "arm64"}[runtime.GOARCH]
	}
	seed := opts.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	s := &Server{
		opts:      opts,
		log:       opts.Log,
		groups:    map[string]*group{},
		instances: map[string]*instance{},
		calls:     map[string]int{},
		rng:       rand.New(rand.NewPCG(seed, seed>>1|1)),
		kick:      make(chan struct{}, 1),
	}
	if s.log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		s.log = l
	}
	s.dockerGate = local.DockerGateAvailable()
	if s.dockerGate == nil {
		if _, err := os.Stat(opts.DockerSocket); err != nil {
			s.dockerGate = fmt.Errorf("no Docker socket to hide: %w", err)
		}
	}
	base := opts.BaseAddress
	if base == "" {
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
		base = fmt.Sprintf("127.%d.%d.1", 100+r.IntN(100), r.IntN(256))
	}
	addr, err := netip.ParseAddr(base)
	if err != nil || !addr.Is4() || !addr.IsLoopback() {
		return nil, fmt.Errorf("awssim: BaseAddress %q must be an IPv4 loopback address (127.x.y.z)", base)
	}
	s.nextAddr = addr
	s.port = opts.SSHPort
	if s.port == 0 {
		s.port = 22
		if os.Geteuid() != 0 {
			if s.port, err = freePort(base); err != nil {
				return nil, err
			}
		}
	}
	if opts.Dir != "" {
		s.dir = opts.Dir
		err = os.MkdirAll(s.dir, 0o700)
	} else {
		s.dir, err = os.MkdirTemp("", "awssim-*")
		s.tmpDir = true
	}
	if err != nil {
		return nil, fmt.Errorf("awssim: instance directory: %w", err)
	}
	if err := os.WriteFile(s.staticKeys(), []byte(strings.Join(opts.StaticKeys, "\n")+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("awssim: static keys: %w", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("awssim: listen: %w", err)
	}
	s.url = "http://" + l.Addr().String()
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(l)
	}()
	go func() {
		defer s.wg.Done()
		s.reconcileLoop()
	}()
	return s, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("awssim: pick an SSH port on %s: %w", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) staticKeys() string { return filepath.Join(s.dir, "static_keys") }

// URL is the endpoint for AWS_ENDPOINT_URL (all three services answer on it).
func (s *Server) URL() string { return s.url }

// SSHPort is the port every instance's sshd listens on (connector_config protocol_port).
func (s *Server) SSHPort() int { return s.port }

// Region is the simulated region.
func (s *Server) Region() string { return s.opts.Region }

// Close stops the API and kills every instance.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var kill []*instance
	for _, inst := range s.instances {
		kill = append(kill, inst)
	}
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// A client still holds a connection (net/http waits up to 5 s for one that has not sent its
		// request yet): the simulator is going away, so cut it.
		err = s.srv.Close()
	}
	s.cancel()
	s.wg.Wait()
	for _, inst := range kill {
		if sshd := inst.takeSSHD(); sshd != nil {
			err = errors.Join(err, sshd.Kill())
		}
	}
	if s.tmpDir {
		err = errors.Join(err, os.RemoveAll(s.dir))
	}
	return err
}

// CreateGroup creates an Auto Scaling group; it starts launching DesiredCapacity instances at once.
func (s *Server) CreateGroup(spec GroupSpec) error {
	if spec.Name == "" {
		return errors.New("awssim: group needs a name")
	}
	if spec.MinSize < 0 || spec.MaxSize < spec.MinSize || spec.DesiredCapacity < spec.MinSize || spec.DesiredCapacity > spec.MaxSize {
		return fmt.Errorf("awssim: group %s: want 0 <= MinSize %d <= DesiredCapacity %d <= MaxSize %d", spec.Name, spec.MinSize, spec.DesiredCapacity, spec.MaxSize)
	}
	if len(spec.AZs) == 0 {
		spec.AZs = []string{s.opts.Region + "a"}
	}
	boot := local.EC2Boot
	if spec.Boot != nil {
		boot = *spec.Boot
	}
	// A copy of its own: the caller's model may change after the group was made.
	spec.Boot = &boot
	if err := spec.Boot.Validate(); err != nil {
		return fmt.Errorf("awssim: group %s: %w", spec.Name, err)
	}
	if spec.Boot.Docker > 0 && s.dockerGate != nil {
		s.dockerGateOnce.Do(func() {
			s.log.WithError(s.dockerGate).Warn("awssim: instances' Docker answers as soon as their sshd does, not after the Docker boot stage")
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.groups[spec.Name]; ok {
		return fmt.Errorf("awssim: group %s already exists", spec.Name)
	}
	s.groups[spec.Name] = &group{
		spec:    spec,
		arn:     fmt.Sprintf("arn:aws:autoscaling:%s:%s:autoScalingGroup:%s:autoScalingGroupName/%s", s.opts.Region, s.opts.AccountID, newUUID(s.rng), spec.Name),
		desired: spec.DesiredCapacity,
		created: time.Now().UTC(),
		tags:    specTags(spec),
	}
	s.kickLocked()
	return nil
}

// SetFaults replaces the injected faults.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Calls counts the API requests received per action (throttled and denied ones included).
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// KeyPushes lists every SendSSHPublicKey call, in order.
func (s *Server) KeyPushes() []KeyPush {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pushes)
}

// InstanceInfo is an instance as the simulator knows it.
type InstanceInfo struct {
	ID, Group, LifecycleState, HealthStatus, Address string
	Protected                                        bool
}

// Instances lists the instances of a group that have not yet left it, its warm pool's (Warmed:*) too.
func (s *Server) Instances(groupName string) []InstanceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []InstanceInfo
	for _, inst := range s.sortedInstances() {
		if inst.group == groupName && inst.lifecycle != lifecycleTerminated {
			out = append(out, InstanceInfo{ID: inst.id, Group: inst.group, LifecycleState: inst.lifecycle,
				HealthStatus: inst.health, Address: inst.addr.String(), Protected: inst.protected})
		}
	}
	return out
}

// DesiredCapacity is the group's desired capacity (-1 for an unknown group).
func (s *Server) DesiredCapacity(groupName string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.groups[groupName]; ok {
		return g.desired
	}
	return -1
}

// ReplaceReason is why an instance is replaced without the runner asking.
type ReplaceReason string

const (
	// ReplaceUnhealthy is the group's health check: an EC2 status check failed, the group marks the
	// instance Unhealthy, terminates it and launches a replacement.
	ReplaceUnhealthy ReplaceReason = "unhealthy"
	// ReplaceAZRebalance is AZRebalance moving capacity between zones; it happens only in a group with
	// several zones whose AZRebalance process is not suspended.
	ReplaceAZRebalance ReplaceReason = "az-rebalance"
	// ReplaceSpotInterruption is EC2 reclaiming a Spot instance.
	ReplaceSpotInterruption ReplaceReason = "spot-interruption"
)

// replacements holds, per reason, EC2's state reason and the termination activity's cause.
var replacements = map[ReplaceReason]struct{ stateReason, cause string }{
	ReplaceUnhealthy: {"Client.UserInitiatedShutdown: User initiated shutdown",
		"an instance was taken out of service in response to an EC2 instance status checks failure"},
	ReplaceAZRebalance: {"Client.UserInitiatedShutdown: User initiated shutdown",
		"an instance was taken out of service in response to a rebalance of instances across Availability Zones"},
	ReplaceSpotInterruption: {"Server.SpotInstanceTermination: Spot instance termination",
		"an instance was taken out of service in response to an EC2 Spot Instance interruption"},
}

// ReplaceInstance replaces an instance the way its group or EC2 does by itself: its sshd dies at once,
// it goes Terminating → Terminated (Unhealthy first, for ReplaceUnhealthy), and the group, whose desired
// capacity is unchanged, launches a replacement.
func (s *Server) ReplaceInstance(instanceID string, reason ReplaceReason) error {
	r, ok := replacements[reason]
	if !ok {
		return fmt.Errorf("awssim: unknown replace reason %q", reason)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.instances[instanceID]
	if !ok || inst.group == "" {
		return fmt.Errorf("awssim: no instance %s", instanceID)
	}
	if inst.lifecycle == lifecycleTerminating || inst.lifecycle == lifecycleTerminated {
		return fmt.Errorf("awssim: instance %s is already %s", instanceID, inst.lifecycle)
	}
	if warmed(inst) {
		return fmt.Errorf("awssim: instance %s is in the warm pool (%s), not in service", instanceID, inst.lifecycle)
	}
	g := s.groups[inst.group]
	if reason == ReplaceAZRebalance && (g.spec.SuspendAZRebalance || len(g.spec.AZs) < 2) {
		return fmt.Errorf("awssim: group %s does not rebalance: it has %d zone(s) and AZRebalance suspended %t", g.spec.Name, len(g.spec.AZs), g.spec.SuspendAZRebalance)
	}
	if reason == ReplaceUnhealthy {
		inst.health = "Unhealthy"
	}
	inst.stateReason = r.stateReason
	s.terminateLocked(inst, fmt.Sprintf("At %s %s.", awsTime(time.Now()), r.cause))
	return nil
}

// TerminateFromOutside kills an instance the way a spot interruption does (ReplaceInstance with
// ReplaceSpotInterruption).
func (s *Server) TerminateFromOutside(instanceID string) error {
	return s.ReplaceInstance(instanceID, ReplaceSpotInterruption)
}

// Activities lists the group's scaling activities as DescribeScalingActivities does: those in progress
// first, then newest first.
func (s *Server) Activities(groupName string) []Activity {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.groups[groupName]
	if !ok {
		return nil
	}
	var out []Activity
	for _, a := range sortedActivities(g) {
		out = append(out, *a)
	}
	return out
}

// instanceIDOK checks EC2's instance ID format: i- and 8 or 17 lowercase hex digits.
func instanceIDOK(id string) bool {
	hex, ok := strings.CutPrefix(id, "i-")
	if !ok || len(hex) != 8 && len(hex) != 17 {
		return false
	}
	for _, c := range hex {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}
