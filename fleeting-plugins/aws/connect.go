package aws

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
)

// instanceConnectKeyTTL is how long EC2 Instance Connect keeps a pushed key; the connection must be
// opened before then (ConnectInfo.Expires). An open connection outlives the key.
const instanceConnectKeyTTL = 60 * time.Second

// Usernames the plugin defaults to, as Amazon's AMIs name them.
const (
	defaultLinuxUser   = "ec2-user"
	defaultWindowsUser = "Administrator"
)

// ConnectInfo returns how to reach an instance of the group. Without use_static_credentials it makes
// an ed25519 key for this connection and pushes it with EC2 Instance Connect just before returning, so
// the key is fresh when the connector dials. The connector keeps one pooled connection per instance
// and asks for ConnectInfo once per connection, so there is one push per instance, not per job.
func (g *InstanceGroup) ConnectInfo(ctx context.Context, instance string) (fleeting.ConnectInfo, error) {
	m, err := g.isMember(ctx, instance)
	if err != nil {
		return fleeting.ConnectInfo{}, err
	}
	inst, err := g.describe(ctx, instance)
	if err != nil {
		return fleeting.ConnectInfo{}, err
	}

	info := fleeting.ConnectInfo{ConnectorConfig: g.settings.ConnectorConfig, ID: instance}
	info.InternalAddr, info.ExternalAddr = inst.PrivateIP, inst.PublicIP
	if info.InternalAddr == "" && info.ExternalAddr == "" {
		return fleeting.ConnectInfo{}, fmt.Errorf("%s: DescribeInstances shows instance %s (%s) without a private or public IP address: give the launch template a subnet (network interface) so instances get one", g.where(), instance, inst.State)
	}
	windows := inst.Platform == "windows"
	if info.OS == "" {
		info.OS = "linux"
		if windows {
			info.OS = "windows"
		}
	}
	if info.Arch == "" {
		info.Arch = goArch(inst.Architecture)
	}
	if info.Protocol == "" {
		info.Protocol = fleeting.ProtocolSSH
		if windows {
			info.Protocol = fleeting.ProtocolWinRM
		}
	}
	if info.Username == "" {
		info.Username = defaultLinuxUser
		if windows {
			info.Username = defaultWindowsUser
		}
	}
	if info.UseStaticCredentials || info.Protocol != fleeting.ProtocolSSH {
		return info, nil
	}

	key, pub, err := newKey()
	if err != nil {
		return fleeting.ConnectInfo{}, fmt.Errorf("%s: instance %s: %w", g.where(), instance, err)
	}
	az := inst.AvailabilityZone
	if az == "" {
		az = m.AvailabilityZone
	}
	// The key's 60 s start when AWS takes it, somewhere during the call: count from before it.
	expires := time.Now().Add(instanceConnectKeyTTL)
	if err := g.client.SendSSHPublicKey(ctx, instance, az, info.Username, pub); err != nil {
		return fleeting.ConnectInfo{}, fmt.Errorf("instance %s: %w", instance, g.apiError("SendSSHPublicKey", err))
	}
	info.Key, info.KeyPath, info.Password, info.Expires = key, "", "", &expires
	return info, nil
}

// ec2LagWait bounds how long ConnectInfo waits for DescribeInstances to show an instance that the group
// already lists: EC2's listings are eventually consistent, and a just-launched instance can be missing
// from them for a few seconds.
const ec2LagWait = 30 * time.Second

// describe returns the instance's EC2 details, asking again while EC2 does not show it yet (up to
// ec2LagWait).
func (g *InstanceGroup) describe(ctx context.Context, instance string) (awsclient.Instance, error) {
	deadline := time.NewTimer(ec2LagWait)
	defer deadline.Stop()
	pause := 200 * time.Millisecond
	for {
		inst, ok, err := g.describeOnce(ctx, instance)
		if ok || err != nil {
			return inst, err
		}
		g.log.WithField("instance", instance).Debug("DescribeInstances does not show the instance yet; asking again")
		select {
		case <-ctx.Done():
			return inst, fmt.Errorf("%s: instance %s: waiting for DescribeInstances to show it: %w", g.where(), instance, ctx.Err())
		case <-deadline.C:
			return inst, fmt.Errorf("%s: DescribeInstances has shown no instance %s tagged %s=%s for %s though the group lists it: it was terminated, or was attached without the group's tags",
				g.where(), instance, awsclient.GroupTag, g.Name, ec2LagWait)
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// describeOnce returns the instance's EC2 details and whether EC2 showed it, asking for every listed
// member not yet known in the same call, so a scale-out costs one DescribeInstances however many
// instances it brought.
func (g *InstanceGroup) describeOnce(ctx context.Context, instance string) (awsclient.Instance, bool, error) {
	g.mu.Lock()
	inst, ok := g.details[instance]
	ids := []string{instance}
	if !ok {
		for id, m := range g.members {
			if _, known := g.details[id]; !known && id != instance && m.LifecycleState == "InService" {
				ids = append(ids, id)
			}
		}
	}
	g.mu.Unlock()
	if ok {
		return inst, true, nil
	}
	found, err := g.client.Instances(ctx, g.Name, ids)
	if err != nil {
		return inst, false, fmt.Errorf("instance %s: %w", instance, g.apiError("DescribeInstances", err))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range found {
		// Addresses are final once running; a pending instance may still lack its public IP.
		if f.State == "running" {
			g.details[f.ID] = f
		}
		if f.ID == instance {
			inst, ok = f, true
		}
	}
	return inst, ok, nil
}

// goArch turns EC2's architecture names into Go's.
func goArch(ec2Arch string) string {
	switch ec2Arch {
	case "x86_64", "x86_64_mac":
		return "amd64"
	case "arm64", "arm64_mac":
		return "arm64"
	case "i386":
		return "386"
	}
	return ec2Arch
}

// newKey makes a throw-away ed25519 key: the private half as OpenSSH PEM, the public half in
// authorized_keys form (what SendSSHPublicKey takes).
func newKey() (privatePEM []byte, authorizedKey string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generate an ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, "", fmt.Errorf("encode an ed25519 key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", fmt.Errorf("encode an ed25519 key: %w", err)
	}
	return pem.EncodeToMemory(block), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), nil
}
