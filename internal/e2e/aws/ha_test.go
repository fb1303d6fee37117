package e2eaws_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/builtin"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// TestHAPairHandsOver: two managers share a runner on an awssim group, their state in moto's DynamoDB.
// The second waits on standby, scaling nothing, while the first serves; a graceful stop of the first
// hands the lease over, and the second adopts the same instances (none terminated, none launched for
// the handover, the group's desired capacity unchanged) and runs jobs on them.
func TestHAPairHandsOver(t *testing.T) {
	// awssim checks no credentials, so the made-up ones StateTable puts in the environment do too.
	endpoint := testrig.StateTable(t)

	r := newJobRig(t)
	w := newAWSWorld(t, groupSpec("fleetrunner-e2e-ha", 3), watchedSim)
	path := r.writeConfig(t, w, fleet{capacity: 1, maxInstances: 3, idleCount: 2, idleTime: time.Minute,
		stateStorage: fmt.Sprintf("backend = \"dynamodb\"\n      dynamodb_table = %q\n      dynamodb_region = \"us-east-1\"\n      dynamodb_endpoint = %q\n      lease_duration = \"3s\"", testrig.StateTableName, endpoint)})
	first, stopFirst := testrig.StartManager(t, r.log.logger, path, "s_first", dockerautoscaler.Name, dockerautoscaler.New(builtin.Plugins()))
	p1 := first.(*dockerautoscaler.Provider)
	testrig.WaitFor(t, time.Minute, "two ready instances", func() bool { return settledAt(w, p1, 2) })
	before := w.GroupIDs()
	calls := w.Sim.Calls()

	// The second manager's provider exists only once it holds the lease; the first hands it over a
	// few seconds after the second began waiting.
	go func() {
		time.Sleep(4 * time.Second)
		stopFirst()
	}()
	second, _ := testrig.StartManager(t, r.log.logger, path, "s_second", dockerautoscaler.Name, dockerautoscaler.New(builtin.Plugins()))
	p2 := second.(*dockerautoscaler.Provider)
	testrig.WaitFor(t, 30*time.Second, "the second manager to adopt both instances", func() bool { return p2.Stats().Instances.Ready == 2 })
	var adopted []string
	for _, in := range p2.Instances() {
		adopted = append(adopted, in.ID)
	}
	slices.Sort(adopted)
	if !slices.Equal(adopted, before) || !slices.Equal(w.GroupIDs(), before) {
		t.Errorf("instances before the handover %v; the second manager has %v, the group %v", before, adopted, w.GroupIDs())
	}
	after := w.Sim.Calls()
	for _, call := range []string{"SetDesiredCapacity", "TerminateInstanceInAutoScalingGroup"} {
		if after[call] != calls[call] {
			t.Errorf("%s called %d times during the handover; the group must not change hands by scaling", call, after[call]-calls[call])
		}
	}
	if perInstance := runJobs(t, r, p2, 2, "after-handover", "echo ok"); len(perInstance) == 0 {
		t.Error("no job ran after the handover")
	}
	if !r.log.contains("standby: another manager manages this runner's fleet") || !r.log.contains("released the runner's state lease") {
		t.Error("the log does not show the standby waiting and the lease handed over")
	}
}
