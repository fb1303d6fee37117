// Package static is a fleeting plugin over a fixed list of SSH hosts. It cannot create machines:
// Increase hands out configured hosts that are not in use, Decrease returns them to the pool, and every
// host in use is reported running. Heartbeat checks that the host accepts TCP connections.
package static

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// Version is reported in ProviderInfo.
const Version = "1.0.0"

// heartbeatTimeout bounds Heartbeat's TCP dial.
const heartbeatTimeout = 5 * time.Second

// Host is one configured machine.
type Host struct {
	ID string `json:"id"`
	// Address is host or host:port; without a port, connector_config's protocol_port (or 22) applies.
	Address  string `json:"address"`
	Username string `json:"username"`
	KeyPath  string `json:"key_path"`
	Password string `json:"password"`
	// OS and Arch default to connector_config's, then linux and amd64.
	OS   string `json:"os"`
	Arch string `json:"arch"`
}

// InstanceGroup is the plugin; Hosts is its plugin_config.
type InstanceGroup struct {
	Name  string `json:"name"`
	Hosts []Host `json:"hosts"`

	log      logrus.FieldLogger
	settings fleeting.Settings

	mu    sync.Mutex
	inUse map[string]bool
}

var _ fleeting.InstanceGroup = (*InstanceGroup)(nil)

func (g *InstanceGroup) validate() error {
	var errs []error
	if len(g.Hosts) == 0 {
		errs = append(errs, errors.New("missing required plugin_config: hosts (at least one)"))
	}
	seen := map[string]bool{}
	for i, h := range g.Hosts {
		where := fmt.Sprintf("plugin_config hosts[%d]", i)
		if h.ID == "" {
			errs = append(errs, fmt.Errorf("missing required %s: id", where))
		} else if seen[h.ID] {
			errs = append(errs, fmt.Errorf("invalid %s: id %q is used twice", where, h.ID))
		}
		seen[h.ID] = true
		if h.Address == "" {
			errs = append(errs, fmt.Errorf("missing required %s (%s): address", where, h.ID))
		}
		if h.KeyPath != "" {
			if _, err := os.Stat(h.KeyPath); err != nil {
				errs = append(errs, fmt.Errorf("invalid %s (%s): key_path: %w", where, h.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Init validates the host list.
func (g *InstanceGroup) Init(_ context.Context, log logrus.FieldLogger, settings fleeting.Settings) (fleeting.ProviderInfo, error) {
	if g.Name == "" {
		g.Name = "static"
	}
	if err := g.validate(); err != nil {
		return fleeting.ProviderInfo{}, err
	}
	g.log = log.WithFields(logrus.Fields{"plugin": "static", "group": g.Name})
	g.settings = settings
	g.inUse = map[string]bool{}
	return fleeting.ProviderInfo{ID: "static/" + g.Name, MaxSize: len(g.Hosts), Version: Version}, nil
}

// Update reports every host in use as running.
func (g *InstanceGroup) Update(ctx context.Context, fn func(instance string, state fleeting.State)) error {
	g.mu.Lock()
	var ids []string
	for _, h := range g.Hosts {
		if g.inUse[h.ID] {
			ids = append(ids, h.ID)
		}
	}
	g.mu.Unlock()
	for _, id := range ids {
		fn(id, fleeting.StateRunning)
	}
	return ctx.Err()
}

// Increase puts up to n unused hosts in use, in configuration order.
func (g *InstanceGroup) Increase(_ context.Context, n int) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	added := 0
	for _, h := range g.Hosts {
		if added == n {
			break
		}
		if !g.inUse[h.ID] {
			g.inUse[h.ID] = true
			added++
		}
	}
	if added < n {
		return added, fmt.Errorf("static group %s: all %d hosts are in use; %d of %d added", g.Name, len(g.Hosts), added, n)
	}
	return added, nil
}

// Decrease returns hosts to the pool of unused ones.
func (g *InstanceGroup) Decrease(_ context.Context, ids []string) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var removed []string
	var errs []error
	for _, id := range ids {
		if !g.inUse[id] {
			errs = append(errs, fmt.Errorf("decrease: host %q is not in use in static group %s", id, g.Name))
			continue
		}
		delete(g.inUse, id)
		removed = append(removed, id)
	}
	return removed, errors.Join(errs...)
}

func (g *InstanceGroup) host(id string) (Host, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.inUse[id] {
		return Host{}, false
	}
	for _, h := range g.Hosts {
		if h.ID == id {
			return h, true
		}
	}
	return Host{}, false
}

// ConnectInfo is the runner's connector_config with the host's own settings on top.
func (g *InstanceGroup) ConnectInfo(_ context.Context, id string) (fleeting.ConnectInfo, error) {
	h, ok := g.host(id)
	if !ok {
		return fleeting.ConnectInfo{}, fmt.Errorf("connect info: host %q is not in use in static group %s", id, g.Name)
	}
	info := fleeting.ConnectInfo{ConnectorConfig: g.settings.ConnectorConfig, ID: id, InternalAddr: h.Address}
	if h.Username != "" {
		info.Username = h.Username
	}
	if h.OS != "" {
		info.OS = h.OS
	}
	if h.Arch != "" {
		info.Arch = h.Arch
	}
	if h.KeyPath != "" || h.Password != "" {
		info.Key, info.KeyPath, info.Password = nil, h.KeyPath, h.Password
	}
	if info.Protocol == "" {
		info.Protocol = fleeting.ProtocolSSH
	}
	if info.OS == "" {
		info.OS = "linux"
	}
	if info.Arch == "" {
		info.Arch = "amd64"
	}
	return info, nil
}

// Heartbeat dials the host's SSH port.
func (g *InstanceGroup) Heartbeat(ctx context.Context, id string) error {
	h, ok := g.host(id)
	if !ok {
		return fmt.Errorf("heartbeat: host %q is not in use in static group %s", id, g.Name)
	}
	addr := h.Address
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := g.settings.ProtocolPort
		if port == 0 {
			port = 22
		}
		addr = net.JoinHostPort(addr, strconv.Itoa(port))
	}
	d := net.Dialer{Timeout: heartbeatTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%w: host %s at %s: %w", fleeting.ErrInstanceUnhealthy, id, addr, err)
	}
	return conn.Close()
}

// Shutdown forgets which hosts are in use; the hosts themselves are not touched.
func (g *InstanceGroup) Shutdown(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inUse = map[string]bool{}
	return nil
}
