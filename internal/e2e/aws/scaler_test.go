package e2eaws_test

import (
	"context"
	"fmt"
	"slices"
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
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// scalerFleet is the taskscaler's part of [runners.autoscaler] for a scaler.
type scalerFleet struct {
	capacity, maxInstances, idleCount int
	idleTime                          time.Duration
}

// scaler is the real taskscaler and aws plugin on an awssim group, with the connector's pool wired as
// the docker-autoscaler executor wires it: the ready hook lends the pool its ConnectInfo to open the
// instance's one pooled connection (waiting for a booting sshd), later dials ask the taskscaler, and an
// instance that leaves the group leaves the pool. No Docker is involved: a job
// is a round trip on the pooled connection.
type scaler struct {
	w      *awsWorld
	plugin *fleetingtest.CountingGroup
	pool   *connector.Pool
	ts     *taskscaler.Taskscaler
}

// startScaler starts a scaler on w's group; it is shut down at cleanup if the test did not.
func (w *awsWorld) startScaler(tb testing.TB, f scalerFleet, log logrus.FieldLogger) *scaler {
	tb.Helper()
	log = logging.Or(log)
	s := &scaler{w: w, plugin: &fleetingtest.CountingGroup{InstanceGroup: &awsplugin.InstanceGroup{Name: w.spec.Name, Region: w.sim.Region(),
		Profile: awsProfile, ConfigFile: w.configFile, CredentialsFile: w.credentialsFile}}}
	ctx := context.WithoutCancel(tb.Context())
	if _, err := s.plugin.Init(ctx, log, fleeting.Settings{ConnectorConfig: fleeting.ConnectorConfig{
		Username: "root", ProtocolPort: w.sim.SSHPort()}}); err != nil {
		tb.Fatalf("plugin Init: %v", err)
	}
	preemptive := false
	opts, err := dockerautoscaler.TaskscalerOptions(&config.AutoscalerConfig{
		CapacityPerInstance: f.capacity, MaxInstances: f.maxInstances,
		UpdateInterval: time.Second, UpdateIntervalWhenExpecting: 200 * time.Millisecond, DeletionRetryInterval: time.Second,
		Policy: []config.AutoscalerPolicyConfig{{IdleCount: f.idleCount, IdleTime: f.idleTime, PreemptiveMode: &preemptive}},
	}, 0)
	if err != nil {
		tb.Fatal(err)
	}
	opts.Logger = log
	opts.CreateBackoff = 500 * time.Millisecond
	opts.ReadyUp = func(ctx context.Context, inst taskscaler.Instance) error {
		defer s.pool.Readying(inst.ID, inst.ConnectInfo)()
		lease, err := s.pool.Get(ctx, inst.ID)
		if err != nil {
			return err
		}
		lease.Release()
		return nil
	}
	opts.HealthCheck = func(ctx context.Context, inst taskscaler.Instance) error { return s.plugin.Heartbeat(ctx, inst.ID) }
	opts.Gone = func(id string) { s.pool.Remove(id) }
	s.ts, err = taskscaler.New(s.plugin, opts)
	if err != nil {
		tb.Fatalf("taskscaler: %v", err)
	}
	s.pool = connector.NewPool(connector.Config{Keepalive: time.Second, Timeout: 20 * time.Second, Log: log}, s.ts.ConnectInfo)
	s.ts.Start(ctx)
	tb.Cleanup(func() { s.shutdown(tb) })
	return s
}

// shutdown stops the taskscaler, the pool and the plugin; a second call does nothing.
func (s *scaler) shutdown(tb testing.TB) {
	if s.ts == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.ts.Shutdown(ctx); err != nil {
		tb.Errorf("taskscaler shutdown: %v", err)
	}
	_ = s.pool.Close()
	_ = s.plugin.Shutdown(ctx)
	s.ts = nil
}

// job acquires a slot, makes one round trip on the instance's pooled connection, runs hold and
// releases the slot. It returns the instance it ran on.
func (s *scaler) job(ctx context.Context, key string, hold func()) (string, error) {
	defer s.ts.Release(key)
	acq, err := s.ts.Acquire(ctx, key)
	if err != nil {
		return "", fmt.Errorf("job %s: %w", key, err)
	}
	lease, err := s.pool.Get(acq.Context(), acq.InstanceID)
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

// settled reports whether the taskscaler and the group agree on exactly n ready instances, the same
// ones, with nothing starting or leaving.
func (s *scaler) settled(n int) bool {
	st := s.ts.Stats()
	if st.Instances.Ready != n || st.Instances.Requested+st.Instances.Creating+st.Instances.Readying+st.Instances.Removing != 0 ||
		s.w.sim.DesiredCapacity(s.w.spec.Name) != n || s.w.inService() != n {
		return false
	}
	return slices.Equal(s.known(), s.w.groupIDs())
}

// known lists the instances the taskscaler knows, sorted.
func (s *scaler) known() []string {
	var ids []string
	for _, in := range s.ts.Instances() {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	return ids
}
