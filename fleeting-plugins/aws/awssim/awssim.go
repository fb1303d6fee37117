// Package awssim simulates the parts of AWS the aws fleeting plugin talks to, on the wire: the Auto
// Scaling and EC2 Query APIs (form-encoded requests, XML answers in AWS's namespaces, AWS's error shapes
// and codes) and the EC2 Instance Connect JSON API, on one HTTP endpoint on 127.0.0.1. Point the SDK at
// it with AWS_ENDPOINT_URL, so the code under test is the code that runs against AWS.
//
// Every instance a group launches is a real OpenSSH sshd on its own loopback address (started with the
// local plugin's launcher): Pending for the group's boot delay, then InService. It accepts the keys given
// in Options.StaticKeys and, for 60 seconds, each key pushed for it with SendSSHPublicKey, for that OS
// user only, like EC2 Instance Connect. The Docker socket is reachable through it by stream-local
// forwarding. Fault knobs (SetFaults) throttle calls, fail launches, slow boots and keep instances
// unhealthy; TerminateFromOutside kills an instance the way a spot interruption does.
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
	// TerminateDelay is how long an instance stays Terminating; default 100ms.
	TerminateDelay time.Duration
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

// GroupSpec describes an Auto Scaling group to create.
type GroupSpec struct {
	Name                              string
	MinSize, MaxSize, DesiredCapacity int
	BootDelay                         time.Duration
	ProtectFromScaleIn                bool
	SuspendAZRebalance                bool
	AZs                               []string
	// Policies names scaling policies attached to the group (DescribePolicies lists them).
	Policies []string
	// Tags are put on the group and propagated to its instances.
	Tags map[string]string
}

// Faults are injected into the API and the instances; SetFaults replaces them.
type Faults struct {
	// ThrottleRate is the fraction of API calls answered with a throttling error (Throttling,
	// RequestLimitExceeded, ThrottlingException as each service names it).
	ThrottleRate float64
	// LaunchFailures is how many of the next launches fail: the instance boots, fails and is terminated,
	// and the group launches a replacement.
	LaunchFailures int
	// SlowBoot is added to the boot delay of instances launched while it is set.
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
	nextAddr  netip.Addr
	closed    bool
	kick      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
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

// Instances lists the instances of a group that have not yet left it.
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

// TerminateFromOutside kills an instance the way a spot interruption or AZ rebalance does: its sshd dies
// at once, it goes Terminating → Terminated, and the group, whose desired capacity is unchanged,
// launches a replacement.
func (s *Server) TerminateFromOutside(instanceID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.instances[instanceID]
	if !ok || inst.group == "" {
		return fmt.Errorf("awssim: no instance %s", instanceID)
	}
	if inst.lifecycle == lifecycleTerminating || inst.lifecycle == lifecycleTerminated {
		return fmt.Errorf("awssim: instance %s is already %s", instanceID, inst.lifecycle)
	}
	inst.stateReason = "Server.SpotInstanceTermination: Spot instance termination"
	s.terminateLocked(inst)
	return nil
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
