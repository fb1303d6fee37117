package dockerautoscaler

import (
	"context"
	"fmt"
	"strings"

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
	defer p.pool.Readying(inst.ID, inst.ConnectInfo)()
	lease, err := p.pool.Get(ctx, inst.ID)
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

// gone is the taskscaler's Gone hook: the instance left the group, and its pooled connection goes.
func (p *Provider) gone(id string) { p.pool.Remove(id) }

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
type hostKeys struct {
	ts *taskscaler.Taskscaler
	// statePath is the taskscaler's state file; empty with state_storage off.
	statePath string
}

var (
	_ connector.HostKeyStore   = (*hostKeys)(nil)
	_ connector.HostKeyLocator = (*hostKeys)(nil)
)

// HostKeyLocation implements connector.HostKeyLocator.
func (h *hostKeys) HostKeyLocation(instance string) string {
	if h.statePath == "" {
		return "this process's memory (state_storage is off: restart fleetrunner)"
	}
	return fmt.Sprintf("the taskscaler state file %s (instance %s, data %q; stop fleetrunner before editing it)", h.statePath, instance, hostKeyData)
}

func (h *hostKeys) HostKey(instance string) (string, bool, error) {
	v, ok := h.ts.InstanceData(instance, hostKeyData)
	if !ok || len(v) == 0 {
		return "", false, nil
	}
	return string(v), true, nil
}

func (h *hostKeys) PinHostKey(instance, key string) error {
	return h.ts.SetInstanceData(instance, hostKeyData, []byte(key))
}

func (h *hostKeys) ForgetHostKey(instance string) error {
	return h.ts.SetInstanceData(instance, hostKeyData, nil)
}
