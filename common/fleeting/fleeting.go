// Package fleeting is the provider contract between the taskscaler and a cloud: seven methods over one
// group of instances. Every plugin implements InstanceGroup and runs the conformance suite in
// fleeting/fleetingtest.
package fleeting

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sirupsen/logrus"
)

// State is an instance's lifecycle state as reported by Update.
type State string

// Instance states.
const (
	// StateCreating: requested or booting, not yet usable.
	StateCreating State = "creating"
	// StateRunning: ready to connect to.
	StateRunning State = "running"
	// StateDeleting: removal in progress.
	StateDeleting State = "deleting"
	// StateDeleted: gone.
	StateDeleted State = "deleted"
	// StateTimeout: stuck or broken; the scaler removes and replaces it.
	StateTimeout State = "timeout"
)

// ErrInstanceUnhealthy is returned by Heartbeat for an instance that should be replaced.
var ErrInstanceUnhealthy = errors.New("instance unhealthy")

// Protocols a connector speaks.
const (
	ProtocolSSH   = "ssh"
	ProtocolWinRM = "winrm"
)

// ConnectorConfig is how to reach an instance. The runner's connector_config fills it; the plugin may
// complete it (a key it made, the instance's OS and arch).
type ConnectorConfig struct {
	OS           string `json:"os"`
	Arch         string `json:"arch"`
	Protocol     string `json:"protocol"`
	ProtocolPort int    `json:"protocol_port"`
	Username     string `json:"username"`
	Password     string `json:"password"`
	// Key is a PEM private key.
	Key []byte `json:"key"`
	// KeyPath names a PEM private key file, read by the connector when Key is empty.
	KeyPath              string        `json:"key_path"`
	UseStaticCredentials bool          `json:"use_static_credentials"`
	Keepalive            time.Duration `json:"keepalive"`
	Timeout              time.Duration `json:"timeout"`
}

// ConnectInfo is everything needed to connect to one instance.
type ConnectInfo struct {
	ConnectorConfig
	ID           string `json:"id"`
	InternalAddr string `json:"internal_addr"`
	ExternalAddr string `json:"external_addr"`
	// Expires, when set, is when the credentials stop working (e.g. an EC2 Instance Connect key);
	// a connection must be opened before then.
	Expires *time.Time `json:"expires,omitempty"`
}

// Settings are handed to Init: the connector defaults the runner configured.
type Settings struct {
	ConnectorConfig
}

// ProviderInfo identifies the group and its limits.
type ProviderInfo struct {
	// ID names the group uniquely, e.g. "aws/us-east-1/my-asg".
	ID      string
	MaxSize int
	Version string
}

// InstanceGroup is the contract every cloud plugin implements. Every method takes a context first.
// Increase and Decrease report partial results honestly: the count or the IDs that succeeded,
// together with a joined error for the rest.
type InstanceGroup interface {
	// Init validates the plugin's config, builds its cloud client and returns identity and limits.
	Init(ctx context.Context, log logrus.FieldLogger, settings Settings) (ProviderInfo, error)
	// Update lists every instance in the group and calls fn once per instance with its state.
	Update(ctx context.Context, fn func(instance string, state State)) error
	// Increase asks for n more instances and returns how many requests succeeded.
	Increase(ctx context.Context, n int) (int, error)
	// Decrease asks for the named instances to be removed and returns those whose removal was accepted.
	Decrease(ctx context.Context, instances []string) ([]string, error)
	// ConnectInfo returns everything needed to connect to one instance.
	ConnectInfo(ctx context.Context, instance string) (ConnectInfo, error)
	// Heartbeat returns an error (wrapping ErrInstanceUnhealthy) when the instance looks unhealthy.
	Heartbeat(ctx context.Context, instance string) error
	// Shutdown releases what the plugin holds.
	Shutdown(ctx context.Context) error
}

// Interruption is a cloud's notice that it is about to take an instance back (e.g. an EC2 spot
// interruption): the instance should get no new job, and a job still on it when it goes dies with it.
type Interruption struct {
	Instance string
	// Reason says what the cloud announced, for logs and the job log, e.g. "spot interruption notice
	// (marked-for-termination)".
	Reason string
	// NoticedAt is when the cloud issued the notice, as it reports it (zero when it does not say).
	NoticedAt time.Time
}

// InterruptionReporter is implemented by plugins whose cloud announces reclaims. It is optional: the
// executor polls it when the group implements it, and a plugin without it simply never drains on notice.
type InterruptionReporter interface {
	// Interruptions lists the group's instances with a pending interruption notice; an instance stays
	// listed for as long as the cloud reports the notice, so the caller must treat repeats as one.
	Interruptions(ctx context.Context) ([]Interruption, error)
}

// DialFunc opens a connection from inside an instance, as if the instance itself dialed.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// InstanceNoticeReader is implemented by plugins whose cloud publishes notices on the instance itself
// (EC2's instance metadata carries spot interruption notices and rebalance recommendations, which no
// API call shows). It is optional. The executor asks it about each instance it already holds a
// connection to, every interruption_check_interval, handing it a dial that connects from the
// instance through that connection, so the plugin needs no network path of its own to the instance.
type InstanceNoticeReader interface {
	// ReadNotice returns the instance's pending notice, or nil when it has none. An instance stays
	// noticed for as long as the cloud shows the notice, so the caller must treat repeats as one.
	ReadNotice(ctx context.Context, instance string, dial DialFunc) (*Interruption, error)
}

// Outdated is an instance that runs an older configuration than the one its group now launches with
// (e.g. an older launch template version, so an older machine image): it should be replaced, but
// nothing is wrong with it, so its jobs finish first.
type Outdated struct {
	Instance string
	// Reason says how it differs, for logs, e.g. "launch template lt-0abc version 3, the group
	// launches version 4".
	Reason string
}

// OutdatedReporter is implemented by plugins that can tell which instances were launched from an older
// configuration than the group's current one. It is optional: the executor polls it when the group
// implements it and drains the outdated instances at the pace it is configured with (a roll-out), and
// a plugin without it leaves every instance to its natural end (idle_time, max_use_count).
type OutdatedReporter interface {
	// Outdated lists the group's in-service instances launched from an older configuration; an
	// instance stays listed until it leaves the group, so the caller must treat repeats as one. An
	// instance whose configuration the cloud does not report is never listed.
	Outdated(ctx context.Context) ([]Outdated, error)
}

// ErrGroupClaimed is wrapped by a GroupClaimer's Claim when another manager scales the group.
var ErrGroupClaimed = errors.New("the group is scaled by another manager")

// Claim is a manager's mark on a group: "this manager scales it".
type Claim struct {
	// SystemID is the manager's system ID: the same manager restarted (after a crash too) may always
	// claim its group again.
	SystemID string
	// Host is the manager's host name, for the operator who finds the claim.
	Host string
	// MaxAge is how long another manager's claim counts after its last refresh: a crashed manager's
	// claim stops counting then.
	MaxAge time.Duration
	// TakeOver overwrites another manager's fresh claim: for a pair whose own lease already decided
	// which of them is active (HA).
	TakeOver bool
}

// Holder names the claiming manager as an operator reads it, e.g. "s_0123456789ab on host-1".
func (c Claim) Holder() string { return c.SystemID + " on " + c.Host }

// GroupClaimedError is Claim's error while another manager's claim counts; it wraps ErrGroupClaimed.
type GroupClaimedError struct {
	// Group names the group as the plugin does in its errors.
	Group string
	// SystemID and Host name the manager that claims it; ClaimedAt is its last refresh.
	SystemID, Host string
	ClaimedAt      time.Time
}

func (e *GroupClaimedError) Error() string {
	return fmt.Sprintf("%s: %v: manager %s on host %s, claim refreshed at %s", e.Group, ErrGroupClaimed, e.SystemID, e.Host, e.ClaimedAt.UTC().Format(time.RFC3339))
}

func (e *GroupClaimedError) Unwrap() error { return ErrGroupClaimed }

// GroupClaimer is implemented by plugins that can mark their group, in the cloud, as scaled by one
// manager. It is optional: the executor claims the group before it scales it and refreshes the claim
// while it runs, so two managers pointed at one group by mistake (two runner tokens, or the file state
// backend on two hosts) do not terminate each other's instances; a plugin without it leaves that to
// the operator.
type GroupClaimer interface {
	// Claim marks the group as scaled by c's manager, unless another manager (another SystemID)
	// refreshed its claim within c.MaxAge and c.TakeOver is false: then the error is a
	// *GroupClaimedError. Claiming again refreshes the claim.
	Claim(ctx context.Context, c Claim) error
	// Unclaim removes the claim if c's manager (its SystemID) still holds it; another manager's claim is
	// left alone.
	Unclaim(ctx context.Context, c Claim) error
}
