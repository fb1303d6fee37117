// Package local is a fleeting plugin whose instances are OpenSSH sshd processes on loopback addresses of
// this machine: each has its own address, host key and boot delay, accepts a client key the plugin makes,
// and reaches the local Docker Engine through stream-local forwarding. It serves demos and tests, and its
// sshd launcher (StartSSHD) serves simulators whose instances must be real SSH hosts.
//
// Instances boot as EC2 machines do (BootModel): Update reports creating until boot_delay has passed,
// then running although sshd only listens sshd_delay later, and the Docker Engine answers docker_delay
// after that. timeout means its sshd died without a Decrease (Kill, a crash, or sshd failing to start).
// Decreased instances stop, lose their directory and disappear from Update. With state_dir set, instances outlive the
// manager: Shutdown leaves them running and the next InstanceGroup on the same state_dir adopts them. A
// manager claims the group in claim.json there (claim.go), so that a second manager on the same
// state_dir is refused rather than adopting and removing the first's instances.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/ssh"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// Version is reported in ProviderInfo.
const Version = "1.0.0"

// Defaults for config left empty.
const (
	DefaultName         = "local"
	DefaultMaxSize      = 4
	DefaultBaseAddress  = "127.0.10.1"
	DefaultDockerSocket = "/var/run/docker.sock"
)

// Duration is a duration written as a string ("5s", "1m30s") in plugin_config.
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"5s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration string such as \"5s\": %w", err)
	}
	*d = Duration(v)
	return nil
}

// Delay is a plugin_config duration set from Go (tests, the demo).
func Delay(d time.Duration) *Duration {
	v := Duration(d)
	return &v
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// InstanceGroup is the plugin; its exported fields are the plugin_config.
type InstanceGroup struct {
	Name    string `json:"name"`
	MaxSize int    `json:"max_size"`
	// BootDelay passes between Increase and the instance being reported running; SSHDDelay between
	// that and its sshd listening; DockerDelay between that and its Docker Engine answering (hiding the
	// engine needs root). BootJitter varies each by up to ± that fraction. Left out, each takes
	// EC2Boot's value; "0s" turns a stage off.
	BootDelay   *Duration `json:"boot_delay,omitempty"`
	SSHDDelay   *Duration `json:"sshd_delay,omitempty"`
	DockerDelay *Duration `json:"docker_delay,omitempty"`
	BootJitter  *float64  `json:"boot_jitter,omitempty"`
	// BaseAddress is the first instance's loopback address; later ones take the next addresses.
	BaseAddress string `json:"base_address"`
	// Port is every instance's SSH port; 0 picks a free one at Init.
	Port int `json:"port"`
	// StateDir keeps keys and instance records so instances survive a manager restart; empty means a
	// temporary directory removed, with every instance, at Shutdown.
	StateDir string `json:"state_dir"`
	// DockerSocket is the engine socket instances expose (checked at Init; point [runners.docker] host at it).
	DockerSocket string `json:"docker_socket"`

	log       logrus.FieldLogger
	settings  fleeting.Settings
	dir       string
	temporary bool
	clientKey []byte
	base      netip.Addr
	port      int
	username  string
	bootModel BootModel
	// hideDocker is the socket hidden from booting instances; empty when Docker answers with sshd.
	hideDocker string

	mu        sync.Mutex
	instances map[string]*instance
	bootCtx   context.Context
	stopBoots context.CancelFunc
	boots     sync.WaitGroup
}

var _ fleeting.InstanceGroup = (*InstanceGroup)(nil)

// record is what an instance's instance.json keeps.
type record struct {
	ID        string    `json:"id"`
	Offset    int       `json:"offset"`
	Address   string    `json:"address"`
	Port      int       `json:"port"`
	Pid       int       `json:"pid,omitempty"`
	Failed    bool      `json:"failed,omitempty"`
	RunningAt time.Time `json:"running_at"`
	// BootUntil is when sshd starts.
	BootUntil time.Time `json:"boot_until"`
	DockerAt  time.Time `json:"docker_at"`
	// HiddenDocker is the Docker socket this instance's sshd hides until DockerAt.
	HiddenDocker string `json:"hidden_docker,omitempty"`
}

type instance struct {
	record
	dir        string
	sshd       *SSHD
	cancelBoot context.CancelFunc
	booted     chan struct{} // closed when the boot goroutine ended
}

func (g *InstanceGroup) validate() error {
	if g.Name == "" {
		g.Name = DefaultName
	}
	if g.MaxSize == 0 {
		g.MaxSize = DefaultMaxSize
	}
	if g.BaseAddress == "" {
		g.BaseAddress = DefaultBaseAddress
	}
	if g.DockerSocket == "" {
		g.DockerSocket = DefaultDockerSocket
	}
	var errs []error
	if g.MaxSize < 0 {
		errs = append(errs, fmt.Errorf("invalid plugin_config max_size %d: must be positive", g.MaxSize))
	}
	g.bootModel = EC2Boot
	for _, st := range []struct {
		key string
		set *Duration
		to  *time.Duration
	}{{"boot_delay", g.BootDelay, &g.bootModel.Running}, {"sshd_delay", g.SSHDDelay, &g.bootModel.SSHD}, {"docker_delay", g.DockerDelay, &g.bootModel.Docker}} {
		if st.set == nil {
			continue
		}
		if *st.set < 0 {
			errs = append(errs, fmt.Errorf("invalid plugin_config %s %s: must not be negative", st.key, time.Duration(*st.set)))
		}
		*st.to = time.Duration(*st.set)
	}
	if g.BootJitter != nil {
		if j := *g.BootJitter; j < 0 || j > 1 {
			errs = append(errs, fmt.Errorf("invalid plugin_config boot_jitter %g: must be between 0 and 1", j))
		}
		g.bootModel.Jitter = *g.BootJitter
	}
	if g.Port < 0 || g.Port > 65535 {
		errs = append(errs, fmt.Errorf("invalid plugin_config port %d", g.Port))
	}
	base, err := netip.ParseAddr(g.BaseAddress)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("invalid plugin_config base_address %q: %w", g.BaseAddress, err))
	case !base.Is4() || !base.IsLoopback():
		errs = append(errs, fmt.Errorf("invalid plugin_config base_address %q: must be an IPv4 loopback address (127.x.y.z)", g.BaseAddress))
	default:
		last := base
		for range max(g.MaxSize-1, 0) {
			last = last.Next()
		}
		if !last.IsLoopback() {
			errs = append(errs, fmt.Errorf("invalid plugin_config base_address %q: %d instances run past 127.255.255.255", g.BaseAddress, g.MaxSize))
		}
		g.base = base
	}
	return errors.Join(errs...)
}

// Init validates the config, prepares keys and the state directory, and adopts instances recorded there.
func (g *InstanceGroup) Init(ctx context.Context, log logrus.FieldLogger, settings fleeting.Settings) (fleeting.ProviderInfo, error) {
	if err := g.validate(); err != nil {
		return fleeting.ProviderInfo{}, err
	}
	g.log = log.WithFields(logrus.Fields{"plugin": "local", "group": g.Name})
	g.settings = settings
	g.instances = map[string]*instance{}
	g.bootCtx, g.stopBoots = context.WithCancel(context.Background())

	u, err := user.Current()
	if err != nil {
		return fleeting.ProviderInfo{}, fmt.Errorf("look up the current user (instances log in as it): %w", err)
	}
	g.username = u.Username

	if g.StateDir != "" {
		g.dir = g.StateDir
		if err := os.MkdirAll(filepath.Join(g.dir, "instances"), 0o700); err != nil {
			return fleeting.ProviderInfo{}, fmt.Errorf("create plugin_config state_dir: %w", err)
		}
	} else {
		if g.dir, err = os.MkdirTemp("", "fleetrunner-local-*"); err != nil {
			return fleeting.ProviderInfo{}, fmt.Errorf("create a temporary state dir: %w", err)
		}
		g.temporary = true
	}
	if err := g.prepareKeys(); err != nil {
		return fleeting.ProviderInfo{}, err
	}
	g.port = g.Port
	if g.port == 0 {
		if g.port, err = freePort(g.base.String()); err != nil {
			return fleeting.ProviderInfo{}, err
		}
	}
	if fi, err := os.Stat(g.DockerSocket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		g.log.WithField("docker_socket", g.DockerSocket).Warn("no Docker Engine socket there; jobs on these instances cannot reach Docker")
	}
	if g.bootModel.Docker > 0 {
		if err := DockerGateAvailable(); err != nil {
			g.log.WithError(err).WithField("docker_delay", g.bootModel.Docker).Warn("docker_delay is not simulated: Docker answers as soon as sshd does")
		} else {
			g.hideDocker = g.DockerSocket
		}
	}
	if err := g.adopt(); err != nil {
		return fleeting.ProviderInfo{}, err
	}
	return fleeting.ProviderInfo{ID: "local/" + g.Name, MaxSize: g.MaxSize, Version: Version}, nil
}

// prepareKeys loads or makes the client key and writes authorized_keys with it and any key the runner's
// connector_config names, so that either logs in.
func (g *InstanceGroup) prepareKeys() error {
	keyPath := filepath.Join(g.dir, "client_key")
	key, err := os.ReadFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if key, _, err = GenerateKey(); err == nil {
			err = os.WriteFile(keyPath, key, 0o600)
		}
	}
	if err != nil {
		return fmt.Errorf("client key in %s: %w", g.dir, err)
	}
	g.clientKey = key
	authorized := []string{}
	for _, k := range [][]byte{key, g.settings.Key} {
		if len(k) == 0 {
			continue
		}
		pub, err := publicHalf(k)
		if err != nil {
			return err
		}
		authorized = append(authorized, pub)
	}
	if g.settings.KeyPath != "" {
		k, err := os.ReadFile(g.settings.KeyPath)
		if err != nil {
			return fmt.Errorf("read connector_config key_path: %w", err)
		}
		pub, err := publicHalf(k)
		if err != nil {
			return fmt.Errorf("connector_config key_path %s: %w", g.settings.KeyPath, err)
		}
		authorized = append(authorized, pub)
	}
	if err := os.WriteFile(g.authorizedKeys(), []byte(strings.Join(authorized, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("write authorized_keys: %w", err)
	}
	return nil
}

func publicHalf(pemKey []byte) (string, error) {
	signer, err := ssh.ParsePrivateKey(pemKey)
	if err != nil {
		return "", fmt.Errorf("parse private key: %w", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), nil
}

func (g *InstanceGroup) authorizedKeys() string { return filepath.Join(g.dir, "authorized_keys") }

func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s (set plugin_config port): %w", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// adopt loads instance records left by an earlier InstanceGroup on the same state_dir.
func (g *InstanceGroup) adopt() error {
	entries, err := os.ReadDir(filepath.Join(g.dir, "instances"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read instances in %s: %w", g.dir, err)
	}
	for _, e := range entries {
		dir := filepath.Join(g.dir, "instances", e.Name())
		data, err := os.ReadFile(filepath.Join(dir, "instance.json"))
		if err != nil {
			g.log.WithError(err).WithField("dir", dir).Warn("skipping instance directory without a readable record")
			continue
		}
		inst := &instance{dir: dir}
		if err := json.Unmarshal(data, &inst.record); err != nil || inst.ID == "" {
			g.log.WithField("dir", dir).Warn("skipping instance directory with a broken record")
			continue
		}
		log := g.log.WithField("instance", inst.ID)
		switch {
		case inst.Failed:
			inst.booted = closedChan()
		case inst.Pid == 0:
			log.Info("resuming the boot of an adopted instance")
			g.boot(inst)
		default:
			inst.booted = closedChan()
			if s, ok := AdoptSSHD(inst.Pid, dir, inst.Address, inst.Port, inst.HiddenDocker); ok {
				inst.sshd = s
				if !s.DockerStarted() {
					g.startDockerLater(inst)
				}
				log.Info("adopted running instance")
			} else {
				log.Warn("adopted instance's sshd is gone; reporting it as timed out")
			}
		}
		g.instances[inst.ID] = inst
	}
	return nil
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func (inst *instance) save() error {
	data, err := json.MarshalIndent(inst.record, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(inst.dir, ".instance.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("save instance %s: %w", inst.ID, err)
	}
	if err := os.Rename(tmp, filepath.Join(inst.dir, "instance.json")); err != nil {
		return fmt.Errorf("save instance %s: %w", inst.ID, err)
	}
	return nil
}

// boot starts the instance's sshd once its boot delay has passed, and its Docker Engine after that.
// Called with g.mu held or before the group is shared.
func (g *InstanceGroup) boot(inst *instance) {
	ctx, cancel := context.WithCancel(g.bootCtx)
	inst.cancelBoot = cancel
	inst.booted = make(chan struct{})
	g.boots.Add(1)
	go func() {
		defer g.boots.Done()
		defer close(inst.booted)
		defer cancel()
		log := g.log.WithField("instance", inst.ID)
		if !sleepUntil(ctx, inst.BootUntil) {
			return
		}
		s, err := StartSSHD(ctx, SSHDOptions{
			Dir: inst.dir, Address: inst.Address, Port: inst.Port, AuthorizedKeysFile: g.authorizedKeys(),
			HideDocker: inst.HiddenDocker,
		})
		g.mu.Lock()
		if err != nil {
			if ctx.Err() != nil {
				g.mu.Unlock()
				return
			}
			log.WithError(err).Error("instance failed to boot")
			inst.Failed = true
		} else {
			inst.sshd = s
			inst.Pid = s.Pid
			log.WithField("address", s.Addr()).Info("instance sshd listening")
		}
		if err := inst.save(); err != nil {
			log.WithError(err).Warn("could not record instance state; it may not be adopted after a restart")
		}
		g.mu.Unlock()
		if err == nil {
			g.startDocker(ctx, inst, s)
		}
	}()
}

// startDocker shows the instance's Docker Engine once its Docker stage has passed.
func (g *InstanceGroup) startDocker(ctx context.Context, inst *instance, s *SSHD) {
	if inst.HiddenDocker == "" || !sleepUntil(ctx, inst.DockerAt) {
		return
	}
	if err := s.StartDocker(); err != nil {
		g.log.WithError(err).WithField("instance", inst.ID).Error("instance's Docker Engine failed to start")
		return
	}
	g.log.WithField("instance", inst.ID).Info("instance Docker Engine answering")
}

// startDockerLater finishes the Docker stage of an adopted instance whose sshd already runs.
func (g *InstanceGroup) startDockerLater(inst *instance) {
	ctx, cancel := context.WithCancel(g.bootCtx)
	inst.cancelBoot = cancel
	g.boots.Add(1)
	go func() {
		defer g.boots.Done()
		defer cancel()
		g.startDocker(ctx, inst, inst.sshd)
	}()
}

// sleepUntil waits for t and reports false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Update reports every instance: creating while booting, running while its sshd lives, timeout otherwise.
func (g *InstanceGroup) Update(ctx context.Context, fn func(instance string, state fleeting.State)) error {
	g.mu.Lock()
	states := make(map[string]fleeting.State, len(g.instances))
	for id, inst := range g.instances {
		states[id] = inst.state()
	}
	g.mu.Unlock()
	for id, st := range states {
		fn(id, st)
	}
	return ctx.Err()
}

// state is called with g.mu held. As on EC2, an instance is running before its sshd listens.
func (inst *instance) state() fleeting.State {
	switch {
	case inst.Failed:
		return fleeting.StateTimeout
	case time.Now().Before(inst.RunningAt):
		return fleeting.StateCreating
	case inst.sshd == nil:
		return fleeting.StateRunning
	case inst.sshd.Alive():
		return fleeting.StateRunning
	default:
		return fleeting.StateTimeout
	}
}

// Increase adds up to n instances, bounded by max_size; the count says how many were added.
func (g *InstanceGroup) Increase(ctx context.Context, n int) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	used := map[int]bool{}
	for _, inst := range g.instances {
		used[inst.Offset] = true
	}
	var errs []error
	added := 0
	for offset := 0; added < n && offset < g.MaxSize; offset++ {
		if used[offset] {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := g.create(offset); err != nil {
			errs = append(errs, err)
			continue
		}
		added++
	}
	if added < n && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("local group %s is at max_size %d: %d of %d instances added", g.Name, g.MaxSize, added, n))
	}
	return added, errors.Join(errs...)
}

func (g *InstanceGroup) create(offset int) error {
	addr := g.base
	for range offset {
		addr = addr.Next()
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := g.Name + "-" + hex.EncodeToString(b[:])
	st, now := g.bootModel.Sample(nil), time.Now()
	inst := &instance{
		record: record{ID: id, Offset: offset, Address: addr.String(), Port: g.port, RunningAt: now.Add(st.Running),
			BootUntil: now.Add(st.Running + st.SSHD), DockerAt: now.Add(st.Running + st.SSHD + st.Docker)},
		dir: filepath.Join(g.dir, "instances", id),
	}
	if st.Docker > 0 {
		inst.HiddenDocker = g.hideDocker
	}
	if err := os.MkdirAll(inst.dir, 0o700); err != nil {
		return fmt.Errorf("create instance %s: %w", id, err)
	}
	if err := inst.save(); err != nil {
		_ = os.RemoveAll(inst.dir)
		return err
	}
	g.instances[id] = inst
	g.boot(inst)
	g.log.WithFields(logrus.Fields{"instance": id, "address": inst.Address}).Info("instance creating")
	return nil
}

// Decrease stops the named instances (booting ones never start) and removes their directories.
func (g *InstanceGroup) Decrease(ctx context.Context, ids []string) ([]string, error) {
	var removed []string
	var errs []error
	for _, id := range ids {
		g.mu.Lock()
		inst := g.instances[id]
		delete(g.instances, id)
		g.mu.Unlock()
		if inst == nil {
			errs = append(errs, fmt.Errorf("decrease: no instance %q in local group %s", id, g.Name))
			continue
		}
		if inst.cancelBoot != nil {
			inst.cancelBoot()
		}
		<-inst.booted
		if inst.sshd != nil {
			if err := inst.sshd.Kill(); err != nil {
				errs = append(errs, fmt.Errorf("stop instance %s: %w", id, err))
			}
		}
		if err := os.RemoveAll(inst.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove instance %s: %w", id, err))
		}
		g.log.WithField("instance", id).Info("instance removed")
		removed = append(removed, id)
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// ConnectInfo starts from the runner's connector_config and fills what it leaves open: this machine's
// OS and arch, the current user, the plugin's client key, the instance's address and port.
func (g *InstanceGroup) ConnectInfo(_ context.Context, id string) (fleeting.ConnectInfo, error) {
	g.mu.Lock()
	inst := g.instances[id]
	g.mu.Unlock()
	if inst == nil {
		return fleeting.ConnectInfo{}, fmt.Errorf("connect info: no instance %q in local group %s", id, g.Name)
	}
	info := fleeting.ConnectInfo{
		ConnectorConfig: g.settings.ConnectorConfig,
		ID:              id,
		InternalAddr:    net.JoinHostPort(inst.Address, fmt.Sprint(inst.Port)),
	}
	info.ProtocolPort = inst.Port
	if info.OS == "" {
		info.OS = runtime.GOOS
	}
	if info.Arch == "" {
		info.Arch = runtime.GOARCH
	}
	if info.Protocol == "" {
		info.Protocol = fleeting.ProtocolSSH
	}
	if info.Username == "" {
		info.Username = g.username
	}
	if len(info.Key) == 0 && info.KeyPath == "" && info.Password == "" {
		info.Key = g.clientKey
	}
	return info, nil
}

// Heartbeat checks that the instance's sshd runs and accepts TCP connections.
func (g *InstanceGroup) Heartbeat(ctx context.Context, id string) error {
	g.mu.Lock()
	inst := g.instances[id]
	var st fleeting.State
	var addr string
	if inst != nil {
		st = inst.state()
		addr = net.JoinHostPort(inst.Address, fmt.Sprint(inst.Port))
	}
	g.mu.Unlock()
	switch {
	case inst == nil:
		return fmt.Errorf("heartbeat: no instance %q in local group %s", id, g.Name)
	case st == fleeting.StateCreating:
		return fmt.Errorf("heartbeat: instance %s is still booting", id)
	case st != fleeting.StateRunning:
		return fmt.Errorf("%w: sshd of instance %s is not running", fleeting.ErrInstanceUnhealthy, id)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%w: instance %s: %w", fleeting.ErrInstanceUnhealthy, id, err)
	}
	return conn.Close()
}

// Kill kills an instance's sshd and everything under it, as if the machine vanished. The instance stays
// in the group and Update reports it as timeout until it is decreased.
func (g *InstanceGroup) Kill(id string) error {
	g.mu.Lock()
	inst := g.instances[id]
	var s *SSHD
	if inst != nil {
		s = inst.sshd
	}
	g.mu.Unlock()
	if s == nil {
		return fmt.Errorf("kill: instance %q in local group %s is not running", id, g.Name)
	}
	return s.Kill()
}

// Shutdown stops booting. Without a state_dir it also stops every instance and removes the temporary
// directory; with one, running instances are left for the next manager to adopt.
func (g *InstanceGroup) Shutdown(ctx context.Context) error {
	if g.stopBoots == nil {
		return nil
	}
	g.stopBoots()
	g.boots.Wait()
	if !g.temporary {
		return nil
	}
	g.mu.Lock()
	ids := make([]string, 0, len(g.instances))
	for id := range g.instances {
		ids = append(ids, id)
	}
	g.mu.Unlock()
	_, err := g.Decrease(ctx, ids)
	if rmErr := os.RemoveAll(g.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove %s: %w", g.dir, rmErr))
	}
	return err
}
