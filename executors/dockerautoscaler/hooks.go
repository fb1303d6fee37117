package dockerautoscaler

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// hostKeyData is the name of the instance data entry holding the pinned SSH host key. It lives in the
// taskscaler's state file, so a restarted manager still refuses an instance whose key changed.
const hostKeyData = "ssh_host_key"

// outputTail is how much of a failed ready command's output goes into the error.
const outputTail = 512

// readyUp runs once on each new instance before its slots are used: the first connection (which waits
// for a booting instance's sshd) pins the host key, its Docker Engine must answer, and
// instance_ready_command must exit 0.
func (p *Provider) readyUp(ctx context.Context, inst taskscaler.Instance) error {
	select {
	case <-p.started:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.readyInfo.Store(inst.ID, inst.ConnectInfo)
	defer p.readyInfo.Delete(inst.ID)
	lease, err := p.get(ctx, inst.ID)
	if err != nil {
		return err
	}
	lease.Release()
	if err := p.pool.WaitDocker(ctx, inst.ID); err != nil {
		return err
	}
	p.markLeftovers(inst.ID, leftoversNew)
	if p.readyCommand == "" {
		return nil
	}
	out, code, err := p.pool.Run(ctx, inst.ID, p.readyCommand)
	if err != nil {
		return fmt.Errorf("instance_ready_command on instance %s: %w", inst.ID, err)
	}
	if code != 0 {
		return fmt.Errorf("instance_ready_command on instance %s exited with code %d: %s", inst.ID, code, tail(out))
	}
	return nil
}

// healthCheck runs on every ready instance each update_interval: the plugin's heartbeat, and with
// FF_USE_FLEETING_ACQUIRE_HEARTBEATS a command over the instance's SSH connection, as upstream does.
func (p *Provider) healthCheck(ctx context.Context, inst taskscaler.Instance) error {
	if err := p.group.Heartbeat(ctx, inst.ID); err != nil {
		return fmt.Errorf("plugin heartbeat: %w", err)
	}
	if !p.heartbeatOverSSH {
		return nil
	}
	out, code, err := p.pool.Run(ctx, inst.ID, "exit 0")
	if err != nil {
		return fmt.Errorf("ssh heartbeat: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("ssh heartbeat on instance %s: `exit 0` exited with code %d: %s", inst.ID, code, tail(out))
	}
	return nil
}

// get leases the instance's pooled connection and remembers the instance for the sweeper.
func (p *Provider) get(ctx context.Context, id string) (*connector.Lease, error) {
	p.mu.Lock()
	p.connected[id] = true
	p.mu.Unlock()
	return p.pool.Get(ctx, id)
}

// sweep closes the pooled connections of instances that left the group, and tries again to remove the
// leftovers of instances that could not be reached, once per update_interval.
func (p *Provider) sweep(every time.Duration) {
	defer close(p.swept)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.bgCtx.Done():
			return
		case <-t.C:
		}
		live := map[string]bool{}
		states := map[string]string{}
		for _, in := range p.ts.Instances() {
			live[in.ID] = true
			states[in.ID] = in.State
		}
		p.mu.Lock()
		p.retryLeftoversLocked(states)
		var gone []string
		for id := range p.connected {
			if !live[id] {
				gone = append(gone, id)
				delete(p.connected, id)
			}
		}
		for id := range p.sessions {
			if !live[id] {
				delete(p.sessions, id)
			}
		}
		p.mu.Unlock()
		for _, id := range gone {
			p.pool.Evict(id)
		}
	}
}

func tail(out []byte) string {
	s := strings.TrimSpace(string(out))
	if len(s) > outputTail {
		s = "…" + s[len(s)-outputTail:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// hostKeys pins host keys in the taskscaler's instance data. The data goes away with the instance, so
// nothing needs forgetting by hand.
type hostKeys struct{ p *Provider }

var (
	_ connector.HostKeyStore   = (*hostKeys)(nil)
	_ connector.HostKeyLocator = (*hostKeys)(nil)
)

// HostKeyLocation implements connector.HostKeyLocator.
func (h *hostKeys) HostKeyLocation(instance string) string {
	if h.p.statePath == "" {
		return "this process's memory (state_storage is off: restart fleetrunner)"
	}
	return fmt.Sprintf("the taskscaler state file %s (instance %s, data %q; stop fleetrunner before editing it)", h.p.statePath, instance, hostKeyData)
}

func (h *hostKeys) HostKey(instance string) (string, bool, error) {
	<-h.p.started
	v, ok := h.p.ts.InstanceData(instance, hostKeyData)
	if !ok || len(v) == 0 {
		return "", false, nil
	}
	return string(v), true, nil
}

func (h *hostKeys) PinHostKey(instance, key string) error {
	<-h.p.started
	return h.p.ts.SetInstanceData(instance, hostKeyData, []byte(key))
}

func (h *hostKeys) ForgetHostKey(instance string) error {
	<-h.p.started
	return h.p.ts.SetInstanceData(instance, hostKeyData, nil)
}
