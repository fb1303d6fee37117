// Package awsrig is an awssim with one Auto Scaling group, the shared config and credentials files that
// point the SDK at it, and the real taskscaler and aws plugin scaling that group with the connector's
// pool wired as the docker-autoscaler executor wires it. The AWS end-to-end tests and the bench table
// share it.
package awsrig

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/fleetingtest"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	awsplugin "gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// Profile is the AWS profile of the config and credentials files.
const Profile = "awssim"

// World is one awssim with one Auto Scaling group.
type World struct {
	Sim             *awssim.Server
	Spec            awssim.GroupSpec
	SimDir          string
	ConfigFile      string
	CredentialsFile string
}

// NewWorld starts awssim with opts (its Dir and DockerSocket are set here) and creates the group spec.
func NewWorld(t testing.TB, spec awssim.GroupSpec, opts awssim.Options) *World {
	t.Helper()
	testenv.RequireSSHD(t)
	dir := t.TempDir()
	w := &World{
		Spec:            spec,
		SimDir:          filepath.Join(dir, "awssim"),
		ConfigFile:      filepath.Join(dir, "aws-config"),
		CredentialsFile: filepath.Join(dir, "aws-credentials"),
	}
	opts.Dir = w.SimDir
	// The socket the jobs use is the one an instance hides until its Docker boot stage has passed.
	opts.DockerSocket = testenv.DockerSocket()
	sim, err := awssim.New(opts)
	if err != nil {
		t.Fatalf("awssim: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("awssim close: %v", err)
		}
	})
	w.Sim = sim
	if err := sim.CreateGroup(spec); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		w.ConfigFile:      fmt.Sprintf("[profile %s]\nregion = %s\nendpoint_url = %s\n", Profile, sim.Region(), sim.URL()),
		w.CredentialsFile: fmt.Sprintf("[%s]\naws_access_key_id = AKIAFLEETRUNNERTEST\naws_secret_access_key = fleetrunner-test-secret\n", Profile),
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// PluginConfigTOML is [runners.autoscaler.plugin_config] as an operator writes it for this group.
func (w *World) PluginConfigTOML() string {
	return fmt.Sprintf("name = %q\n    region = %q\n    profile = %q\n    config_file = %q\n    credentials_file = %q",
		w.Spec.Name, w.Sim.Region(), Profile, w.ConfigFile, w.CredentialsFile)
}

// InService counts the group's InService instances.
func (w *World) InService() int {
	n := 0
	for _, in := range w.Sim.Instances(w.Spec.Name) {
		if in.LifecycleState == "InService" {
			n++
		}
	}
	return n
}

// GroupIDs lists the group's instances that have not left it, sorted.
func (w *World) GroupIDs() []string {
	var ids []string
	for _, in := range w.Sim.Instances(w.Spec.Name) {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	return ids
}

// Launched counts the instances the group launched (a launch EC2 refused makes none).
func (w *World) Launched() int {
	n := 0
	for _, a := range w.Sim.Activities(w.Spec.Name) {
		if strings.HasPrefix(a.Description, "Launching a new EC2 instance: i-") {
			n++
		}
	}
	return n
}

// Fleet is the taskscaler's part of [runners.autoscaler] for a Scaler.
type Fleet struct {
	Capacity, MaxInstances, IdleCount int
	IdleTime                          time.Duration
}

// Scaler is the real taskscaler and aws plugin on a World's group, with the connector's pool wired as
// the docker-autoscaler executor wires it: the ready hook lends the pool its ConnectInfo to open the
// instance's one pooled connection (waiting for a booting sshd), later dials ask the taskscaler, and an
// instance that leaves the group leaves the pool. No Docker is involved: a job is a round trip on the
// pooled connection.
type Scaler struct {
	W      *World
	Plugin *fleetingtest.CountingGroup
	Pool   *connector.Pool
	TS     *taskscaler.Taskscaler
}

// StartScaler starts a Scaler on w's group; it is shut down at cleanup if the test did not.
func (w *World) StartScaler(tb testing.TB, f Fleet, log logrus.FieldLogger) *Scaler {
	tb.Helper()
	log = logging.Or(log)
	s := &Scaler{W: w, Plugin: &fleetingtest.CountingGroup{InstanceGroup: &awsplugin.InstanceGroup{Name: w.Spec.Name, Region: w.Sim.Region(),
		Profile: Profile, ConfigFile: w.ConfigFile, CredentialsFile: w.CredentialsFile}}}
	ctx := context.WithoutCancel(tb.Context())
	if _, err := s.Plugin.Init(ctx, log, fleeting.Settings{ConnectorConfig: fleeting.ConnectorConfig{
		Username: "root", ProtocolPort: w.Sim.SSHPort()}}); err != nil {
		tb.Fatalf("plugin Init: %v", err)
	}
	preemptive := false
	opts, err := dockerautoscaler.TaskscalerOptions(&config.AutoscalerConfig{
		CapacityPerInstance: f.Capacity, MaxInstances: f.MaxInstances,
		UpdateInterval: time.Second, UpdateIntervalWhenExpecting: 200 * time.Millisecond, DeletionRetryInterval: time.Second,
		Policy: []config.AutoscalerPolicyConfig{{IdleCount: f.IdleCount, IdleTime: f.IdleTime, PreemptiveMode: &preemptive}},
	}, 0)
	if err != nil {
		tb.Fatal(err)
	}
	opts.Logger = log
	opts.CreateBackoff = 500 * time.Millisecond
	opts.ReadyUp = func(ctx context.Context, inst taskscaler.Instance) error {
		defer s.Pool.Readying(inst.ID, inst.ConnectInfo)()
		lease, err := s.Pool.Get(ctx, inst.ID)
		if err != nil {
			return err
		}
		lease.Release()
		return nil
	}
	opts.HealthCheck = func(ctx context.Context, inst taskscaler.Instance) error { return s.Plugin.Heartbeat(ctx, inst.ID) }
	opts.Gone = func(id string) { s.Pool.Remove(id) }
	s.TS, err = taskscaler.New(s.Plugin, opts)
	if err != nil {
		tb.Fatalf("taskscaler: %v", err)
	}
	s.Pool = connector.NewPool(connector.Config{Keepalive: time.Second, Timeout: 20 * time.Second, Log: log}, s.TS.ConnectInfo)
	s.TS.Start(ctx)
	tb.Cleanup(func() { s.Shutdown(tb) })
	return s
}

// Shutdown stops the taskscaler, the pool and the plugin; a second call does nothing.
func (s *Scaler) Shutdown(tb testing.TB) {
	if s.TS == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.TS.Shutdown(ctx); err != nil {
		tb.Errorf("taskscaler shutdown: %v", err)
	}
	_ = s.Pool.Close()
	_ = s.Plugin.Shutdown(ctx)
	s.TS = nil
}

// Job acquires a slot, makes one round trip on the instance's pooled connection, runs hold and
// releases the slot. It returns the instance it ran on.
func (s *Scaler) Job(ctx context.Context, key string, hold func()) (string, error) {
	defer s.TS.Release(key)
	acq, err := s.TS.Acquire(ctx, key)
	if err != nil {
		return "", fmt.Errorf("job %s: %w", key, err)
	}
	lease, err := s.Pool.Get(acq.Context(), acq.InstanceID)
	if err != nil {
		return acq.InstanceID, fmt.Errorf("job %s on %s: %w", key, acq.InstanceID, err)
	}
	defer lease.Release()
	if _, _, err := lease.Client().SSH().SendRequest("keepalive@openssh.com", true, nil); err != nil {
		return acq.InstanceID, fmt.Errorf("job %s on %s: the pooled connection does not answer: %w", key, acq.InstanceID, err)
	}
	hold()
	return acq.InstanceID, nil
}

// Settled reports whether the taskscaler and the group agree on exactly n ready instances, the same
// ones, with nothing starting or leaving.
func (s *Scaler) Settled(n int) bool {
	st := s.TS.Stats()
	if st.Instances.Ready != n || st.Instances.Requested+st.Instances.Creating+st.Instances.Readying+st.Instances.Removing != 0 ||
		s.W.Sim.DesiredCapacity(s.W.Spec.Name) != n || s.W.InService() != n {
		return false
	}
	return slices.Equal(s.Known(), s.W.GroupIDs())
}

// Known lists the instances the taskscaler knows, sorted.
func (s *Scaler) Known() []string {
	var ids []string
	for _, in := range s.TS.Instances() {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	return ids
}
