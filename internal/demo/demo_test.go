package demo

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// TestDemo runs the whole demo: every job of the pipeline succeeds, instances are created and retired
// (max_use_count forces more instances than max_instances), and the live view shows it.
func TestDemo(t *testing.T) {
	testenv.RequireDocker(t)
	testenv.RequireSSHD(t)
	testenv.RequireCommand(t, "busybox", "apt-get install busybox-static")
	var out bytes.Buffer
	log := logrus.New()
	log.SetOutput(&bytes.Buffer{})
	sum, err := Run(t.Context(), Options{Out: &out, Log: log})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if sum.Jobs != 12 || sum.Succeeded != 12 || sum.Failed != 0 {
		t.Errorf("summary %+v, want 12 jobs all succeeded\n%s", sum, out.String())
	}
	// 12 jobs at max_use_count 4 need at least 3 instances; each that ran 4 jobs is retired.
	if sum.InstancesCreated < 3 || sum.InstancesRetired < 1 {
		t.Errorf("instances created %d, retired %d; want at least 3 and 1\n%s", sum.InstancesCreated, sum.InstancesRetired, out.String())
	}
	for _, want := range []string{"▲ instance demo-", "● job compile", "✔ job package", "▼ instance demo-", "fleet: ", "Summary: 12 jobs: 12 succeeded, 0 failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("live view lacks %q:\n%s", want, out.String())
		}
	}
}

func TestMissingDocker(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	_, err := Run(t.Context(), Options{})
	if !errors.Is(err, ErrPrerequisite) || !strings.Contains(err.Error(), "no Docker Engine answers") {
		t.Fatalf("Run without an engine = %v, want a prerequisite error naming Docker", err)
	}
}
