package testimage_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testimage"
)

func TestBusyboxRunsShell(t *testing.T) {
	testenv.RequireDocker(t)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ref := testimage.Busybox(t, cli)
	if again := testimage.Busybox(t, cli); again != ref {
		t.Fatalf("second call gave %q, want cached %q", again, ref)
	}

	ctx := t.Context()
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: ref, Cmd: []string{"sh", "-c", "echo hello from $(which echo)"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// A container left behind would pile up on the engine, run after run.
		if err := cli.ContainerRemove(context.WithoutCancel(ctx), c.ID, container.RemoveOptions{Force: true}); err != nil {
			t.Errorf("remove the test container: %v", err)
		}
	}()
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitC, errC := cli.ContainerWait(ctx, c.ID, container.WaitConditionNotRunning)
	select {
	case w := <-waitC:
		if w.StatusCode != 0 {
			t.Fatalf("exit code %d", w.StatusCode)
		}
	case err := <-errC:
		t.Fatal(err)
	}
	logs, err := cli.ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, logs); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "hello from /bin/echo\n"; got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}
