package demo

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
)

// BusyboxPath is Debian's busybox-static, the only content of the demo's job image.
const BusyboxPath = "/bin/busybox"

// JobImage is the tag of the demo's job image.
const JobImage = "fleetrunner-demo/busybox:latest"

const dockerfile = `FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["sh"]
`

// buildJobImage builds JobImage from the static busybox through the engine's API: no registry needed.
func buildJobImage(ctx context.Context, cli client.APIClient) error {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return fmt.Errorf("read %s (apt-get install busybox-static): %w", BusyboxPath, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
	}{{"Dockerfile", []byte(dockerfile)}, {"busybox", bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o755, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: []string{JobImage}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("build the job image: %w", err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("build the job image: read the engine's answer: %w", err)
		}
		if msg.Error != "" {
			return fmt.Errorf("build the job image: %s", msg.Error)
		}
	}
}
