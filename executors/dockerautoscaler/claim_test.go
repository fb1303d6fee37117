package dockerautoscaler

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// TestOneManagerPerGroup runs two managers of different system IDs on one group (the local plugin's
// group on one state_dir, with the file state backend): the second is refused and told which manager
// scales the group, and the first keeps its instance; after the first's graceful stop the second
// starts at once and adopts it. A refresh that finds another manager's claim stops refreshing and
// leaves that claim at the stop.
func TestOneManagerPerGroup(t *testing.T) {
	r, pluginDir := newSharedRig(t, 1, 1, time.Minute)
	start := func(systemID string) (*Provider, error) { return r.startAs(t, systemID) }
	stop := func(p *Provider) { stopProvider(t, p) }
	host, _ := os.Hostname()

	first, err := start("s_first")
	if err != nil {
		t.Fatal(err)
	}
	testrig.WaitFor(t, 30*time.Second, "the first manager's idle instance ready", func() bool { return first.Stats().Instances.Ready == 1 })
	instance := first.Instances()[0].ID

	if second, err := start("s_second"); err == nil {
		stop(second)
		t.Fatal("a second manager started on a group the first scales")
	} else if !errors.Is(err, fleeting.ErrGroupClaimed) {
		t.Fatalf("second manager refused with %v; want ErrGroupClaimed", err)
	} else {
		for _, want := range []string{"manager s_first on host " + host, "stop that manager", `backend "dynamodb"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal does not say %q: %v", want, err)
			}
		}
		t.Logf("refusal: %v", err)
	}
	if !slices.ContainsFunc(first.Instances(), func(in taskscaler.InstanceInfo) bool { return in.ID == instance && in.State == "ready" }) ||
		!slices.Contains(pluginInstances(t, pluginDir), instance) {
		t.Fatalf("the refused manager touched the first's instance %s: the first has %v, the group %v", instance, first.Instances(), pluginInstances(t, pluginDir))
	}

	stop(first)
	second, err := start("s_second")
	if err != nil {
		t.Fatalf("the second manager did not start after the first stopped: %v", err)
	}
	if !slices.ContainsFunc(second.Instances(), func(in taskscaler.InstanceInfo) bool { return in.ID == instance }) {
		t.Errorf("the second manager did not adopt instance %s: %v", instance, second.Instances())
	}

	// Another manager takes the group over (as one with the dynamodb backend would): the second's next
	// refresh gives way, and its stop leaves the new claim.
	taker := second.group.(fleeting.GroupClaimer)
	other := fleeting.Claim{SystemID: "s_third", Host: "elsewhere", MaxAge: claimMaxAge, TakeOver: true}
	if err := taker.Claim(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	second.refreshClaim()
	if second.gaveUp.Load() == nil {
		t.Error("the second manager's refresh did not notice the third's claim")
	}
	var standby *executors.StandbyError
	if _, err := second.Reserve(t.Context()); !errors.As(err, &standby) || !errors.Is(err, errClaimLost) {
		t.Errorf("Reserve after the group was claimed away = %v; want a StandbyError wrapping errClaimLost, so the manager builds the provider again", err)
	}
	stop(second)
	if err := taker.Claim(t.Context(), fleeting.Claim{SystemID: "s_fourth", Host: "h", MaxAge: claimMaxAge}); !errors.Is(err, fleeting.ErrGroupClaimed) {
		t.Errorf("after the second manager's stop the group is free (%v); the third's claim should stand", err)
	}
}
