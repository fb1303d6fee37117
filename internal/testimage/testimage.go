// Package testimage builds the small job images tests run, on whatever engine they use, without a
// registry: FROM scratch plus Debian's static busybox, built through the Docker API from a tar stream.
package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// Label marks images built here; its value identifies the content, so a changed binary gives a new image.
const Label = "fleetrunner.testimage"

const dockerfile = `FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["sh"]
`

// builds serialises builds within one test binary; the label check makes the result reusable across
// binaries and runs.
var builds sync.Mutex

// Busybox returns the reference of a busybox image on the engine cli talks to, building it the first
// time from the static busybox on PATH (Debian's busybox-static). It skips (or fails under FLEETRUNNER_REQUIRE_ALL) without an engine or busybox-static.
func Busybox(t testing.TB, cli client.APIClient) string {
	t.Helper()
	testenv.RequireDocker(t)
	path := testenv.RequireCommand(t, "busybox", "apt-get install busybox-static")
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	ref, err := ensure(t.Context(), cli, bin)
	if err != nil {
		t.Fatalf("build busybox test image: %v", err)
	}
	return ref
}

func ensure(ctx context.Context, cli client.APIClient, bin []byte) (string, error) {
	sum := sha256.Sum256(append([]byte(dockerfile), bin...))
	id := "busybox-" + hex.EncodeToString(sum[:6])
	ref := "fleetrunner-test/busybox:" + hex.EncodeToString(sum[:6])

	builds.Lock()
	defer builds.Unlock()
	imgs, err := cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", Label+"="+id))})
	if err != nil {
		return "", fmt.Errorf("list images: %w", err)
	}
	for _, img := range imgs {
		for _, tag := range img.RepoTags {
			if tag == ref {
				return ref, nil
			}
		}
	}

	buildCtx, err := tarOf(map[string][]byte{"Dockerfile": []byte(dockerfile), "busybox": bin})
	if err != nil {
		return "", err
	}
	resp, err := cli.ImageBuild(ctx, buildCtx, build.ImageBuildOptions{
		Tags:        []string{ref},
		Labels:      map[string]string{Label: id},
		Remove:      true,
		ForceRemove: true,
	})
	if err != nil {
		return "", fmt.Errorf("image build: %w", err)
	}
	defer resp.Body.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil); err != nil {
		return "", fmt.Errorf("build test image %s: %w", ref, err)
	}
	return ref, nil
}

func tarOf(files map[string][]byte) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}
