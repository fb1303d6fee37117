package connector_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

func TestDockerThroughTunnel(t *testing.T) {
	testenv.RequireDocker(t)
	testenv.RequireSSHD(t)
	r := startRig(t, "i-docker")
	host := "unix://" + testenv.DockerSocket()
	tests := []struct {
		name      string
		dialStdio bool
	}{
		{"native socket forwarding", false},
		{"docker system dial-stdio", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.dialStdio {
				testenv.RequireCommand(t, "docker", "install the docker CLI (docker-ce-cli or docker.io)")
			}
			var calls atomic.Int32
			p := connector.NewPool(connector.Config{DialStdio: tt.dialStdio, DockerHost: host}, infoFunc(r, &calls))
			defer p.Close()
			l, err := p.Get(t.Context(), "i-docker")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()

			cli, err := connector.NewDockerClient(l.DialDocker)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ping, err := cli.Ping(t.Context())
			if err != nil {
				t.Fatalf("/_ping through the tunnel: %v", err)
			}
			if ping.APIVersion == "" {
				t.Errorf("/_ping gave no API version")
			}
			v, err := cli.ServerVersion(t.Context())
			if err != nil {
				t.Fatalf("docker version through the tunnel: %v", err)
			}
			if v.Version == "" || v.Os != "linux" {
				t.Errorf("docker version = %q on %q, want a version on linux", v.Version, v.Os)
			}
			// Several requests in a row share the pooled SSH connection.
			for range 3 {
				if _, err := cli.Info(t.Context()); err != nil {
					t.Fatalf("docker info through the tunnel: %v", err)
				}
			}
			if calls.Load() != 1 {
				t.Errorf("dialed the instance %d times, want once", calls.Load())
			}
		})
	}
}

func TestDockerDialErrors(t *testing.T) {
	testenv.RequireSSHD(t)
	r := startRig(t, "i-dockerr")
	tests := []struct {
		name      string
		cfg       connector.Config
		wantInErr string
	}{
		{"missing socket", connector.Config{DockerHost: "unix:///nonexistent/docker.sock"}, "/nonexistent/docker.sock"},
		{"bad scheme", connector.Config{DockerHost: "ssh://elsewhere"}, "only unix:// and tcp://"},
		{"dial-stdio to missing socket", connector.Config{DialStdio: true, DockerHost: "unix:///nonexistent/docker.sock"}, "dial-stdio"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := connector.Dial(t.Context(), r.info, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = dockerRoundTrip(t.Context(), c)
			if err == nil || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("Docker through the tunnel = %v, want an error containing %q", err, tt.wantInErr)
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
}

// dockerRoundTrip opens a stream and speaks one HTTP request over it.
func dockerRoundTrip(ctx context.Context, c *connector.Client) error {
	conn, err := c.DialDocker(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := fmt.Fprint(conn, "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"); err != nil {
		return err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	return fmt.Errorf("unexpected answer %q", b)
}
