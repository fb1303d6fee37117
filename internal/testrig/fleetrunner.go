package testrig

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helperimage"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// BuildFleetrunner builds the real fleetrunner binary of this checkout (go build ./cmd/fleetrunner) into
// a temporary directory and returns its path. The helper binary goes beside it, as `make build` lays
// them out: built by this test process, it is the same file Engine made the helper image from, so the
// child finds that image instead of building its own.
func BuildFleetrunner(t testing.TB) string {
	t.Helper()
	gobin := testenv.RequireCommand(t, "go", "install Go to build fleetrunner")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, gobin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fleetrunner")
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", bin, "./cmd/fleetrunner")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fleetrunner in %s: %v\n%s", cmd.Dir, err, out)
	}
	if _, err := helperimage.BuildBinary(ctx, runtime.GOARCH, dir); err != nil {
		t.Fatalf("helper binary: %v", err)
	}
	return bin
}

// JobLeftovers lists what the runner's jobs left on the engine (containers, networks, and volumes other
// than the cache volumes that outlive jobs on purpose), found by the executor's runner label.
func JobLeftovers(t testing.TB, cli client.APIClient, runnerToken string) []string {
	t.Helper()
	cs, ns, vs := JobResources(t, cli, filters.NewArgs(filters.Arg("label", docker.LabelRunner+"="+config.ShortToken(runnerToken))))
	var left []string
	for _, c := range cs {
		left = append(left, "container "+strings.Join(c.Names, ",")+" ("+c.State+")")
	}
	for _, n := range ns {
		left = append(left, "network "+n.Name)
	}
	for _, v := range vs {
		if v.Labels[docker.LabelRole] != "cache" {
			left = append(left, "volume "+v.Name)
		}
	}
	return left
}
