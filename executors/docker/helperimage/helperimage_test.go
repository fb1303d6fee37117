package helperimage

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"gitlab.com/fleetrunner/fleetrunner/common/logging"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/gittest"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

func TestGoarchAndTag(t *testing.T) {
	tests := []struct{ in, want string }{{"x86_64", "amd64"}, {"amd64", "amd64"}, {"aarch64", "arm64"}, {"arm64", "arm64"}, {"s390x", ""}}
	for _, tc := range tests {
		got, err := goarch(tc.in)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("goarch(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for in, want := range map[string]string{"1.2.3": "1.2.3", "v1.2.3-4-gabc+dirty": "v1.2.3-4-gabc-dirty", "-x": "v-x", "": "v"} {
		if got := tagVersion(in); got != want {
			t.Errorf("tagVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFindBinary(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	e := newEnsurer("x")
	e.build = func(context.Context, string, string) (string, error) {
		return "", errors.New("no Go toolchain on PATH")
	}

	_, err := e.findBinary(t.Context(), "arm64", logging.Discard())
	want := filepath.Join(dir, "fleetrunner-helper-linux-arm64")
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "no Go toolchain") {
		t.Fatalf("err = %v, want one naming %s and the build failure", err, want)
	}
	if err := os.WriteFile(want, []byte("bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := e.findBinary(t.Context(), "arm64", logging.Discard()); err != nil || got != want {
		t.Errorf("findBinary = %q, %v; want %q", got, err, want)
	}
}

func TestWriteContext(t *testing.T) {
	var buf bytes.Buffer
	if err := writeContext(&buf, strings.NewReader("ELF"), 3, []byte("PEM")); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	if files["fleetrunner-helper"] != "ELF" || files["ca-certificates.crt"] != "PEM" {
		t.Errorf("context files = %q", files)
	}
	df := files["Dockerfile"]
	for _, want := range []string{"FROM scratch", `ENTRYPOINT ["/usr/bin/fleetrunner-helper"]`, "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q:\n%s", want, df)
		}
	}
}

// countingClient counts image builds, so a test can tell the fast path from a build.
type countingClient struct {
	client.APIClient
	builds atomic.Int32
}

func (c *countingClient) ImageBuild(ctx context.Context, r io.Reader, o build.ImageBuildOptions) (build.ImageBuildResponse, error) {
	c.builds.Add(1)
	return c.APIClient.ImageBuild(ctx, r, o)
}

func TestEnsureOnEngine(t *testing.T) {
	testenv.RequireDocker(t)
	testenv.RequireCommand(t, "go", "install Go to build the helper binary")
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cc := &countingClient{APIClient: cli}
	e := newEnsurer(fmt.Sprintf("fleetrunner-helper-test-%d", os.Getpid()))

	// Concurrent first calls share one build.
	refs := make([]string, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range refs {
		wg.Go(func() { refs[i], errs[i] = e.ensure(ctx, cc, logging.Discard()) })
	}
	wg.Wait()
	for i := range refs {
		if errs[i] != nil {
			t.Fatalf("Ensure: %v", errs[i])
		}
	}
	ref := refs[0]
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.WithoutCancel(ctx), ref, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	if refs[1] != ref || refs[2] != ref || !strings.HasPrefix(ref, e.repository+":") {
		t.Fatalf("refs = %q", refs)
	}
	if n := cc.builds.Load(); n != 1 {
		t.Fatalf("%d builds for three concurrent first calls, want 1", n)
	}
	if _, err := e.ensure(ctx, cc, logging.Discard()); err != nil || cc.builds.Load() != 1 {
		t.Fatalf("second Ensure: err %v, builds %d; want the fast path", err, cc.builds.Load())
	}
	insp, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	arch := "amd64"
	bin := e.bins[arch]
	if bin == nil {
		arch = "arm64"
		bin = e.bins[arch]
	}
	if insp.Config.Labels[LabelDigest] != bin.digest || !slices.Equal(insp.Config.Entrypoint, []string{BinaryPath}) {
		t.Errorf("image labels %v, entrypoint %v", insp.Config.Labels, insp.Config.Entrypoint)
	}

	t.Run("get-sources in a container", func(t *testing.T) { runGetSources(t, ctx, cli, ref) })

	// Another build's image for this architecture goes once it is older than staleAfter; the tag of
	// this build names its digest.
	if want := "-" + strings.TrimPrefix(bin.digest, "sha256:")[:12]; !strings.HasSuffix(ref, want) {
		t.Errorf("ref %s does not end in the digest %s", ref, want)
	}
	stale := filepath.Join(t.TempDir(), "stale")
	if err := os.WriteFile(stale, []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	staleRef := e.repository + ":0.9.0-" + arch + "-000000000000"
	if err := e.buildImage(ctx, cli, &binary{path: stale, digest: "sha256:stale"}, staleRef); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.WithoutCancel(ctx), staleRef, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	if _, err := cli.ImageRemove(ctx, ref, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
		t.Fatal(err)
	}
	e.staleAfter = 0
	if _, err := e.ensure(ctx, cc, logging.Discard()); err != nil || cc.builds.Load() != 2 {
		t.Fatalf("Ensure without its image: err %v, builds %d; want a rebuild", err, cc.builds.Load())
	}
	if insp, err := cli.ImageInspect(ctx, ref); err != nil || insp.Config.Labels[LabelDigest] != bin.digest {
		t.Errorf("after rebuild: labels %v, %v", insp.Config.Labels, err)
	}
	if _, err := cli.ImageInspect(ctx, staleRef); !cerrdefs.IsNotFound(err) {
		t.Errorf("another build's old image %s is still there (%v)", staleRef, err)
	}
}

func runGetSources(t *testing.T, ctx context.Context, cli client.APIClient, ref string) {
	const token = "glcbt-64_cOnTaInErToKeN"
	srv := gittest.NewServer(t, token)
	repo := srv.NewRepo(t, "widget")
	sha := repo.Commit(t, "one", map[string]string{"hello.txt": "hello from git\n"})

	vol, err := cli.VolumeCreate(ctx, volume.CreateOptions{Labels: map[string]string{"org.fleetrunner.test": "helperimage"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.VolumeRemove(context.WithoutCancel(ctx), vol.Name, true) })
	created, err := cli.ContainerCreate(ctx, &container.Config{
		Image: ref,
		Cmd: []string{"get-sources", "--dir", "/builds/group/widget", "--repo-url", srv.RepoURL("widget"), "--sha", sha,
			"--ref", "main", "--ref-type", "branch", "--depth", "1", "--strategy", "clone", "--checkout=true", "--submodules", "none"},
	}, &container.HostConfig{
		NetworkMode: "host",
		Mounts:      []mount.Mount{{Type: mount.TypeVolume, Source: vol.Name, Target: "/builds"}},
	}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
	})
	waitC, errC := cli.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	var code int64
	select {
	case w := <-waitC:
		code = w.StatusCode
	case err := <-errC:
		t.Fatal(err)
	}
	logs, err := cli.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, logs)
	logs.Close()
	if code != 0 {
		t.Fatalf("get-sources exited %d:\n%s", code, out.String())
	}
	if strings.Contains(out.String(), token) || !strings.Contains(out.String(), "Checking out "+sha[:8]) {
		t.Errorf("unexpected output:\n%s", out.String())
	}

	rc, _, err := cli.CopyFromContainer(ctx, created.ID, "/builds/group/widget/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(tr); string(b) != "hello from git\n" {
		t.Errorf("hello.txt in the volume = %q", b)
	}
}

// TestEnsureSurvivesACanceledCaller: concurrent jobs on one engine share one helper build; the job whose
// context started it being aborted must not fail the others.
func TestEnsureSurvivesACanceledCaller(t *testing.T) {
	testenv.RequireDocker(t)
	t.Setenv(EnvDir, t.TempDir()) // no shipped binary: the (slow) build below runs
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	e := newEnsurer(fmt.Sprintf("fleetrunner-helper-cancel-test-%d", os.Getpid()))
	building, release := make(chan struct{}), make(chan struct{})
	var builds atomic.Int32
	e.build = func(ctx context.Context, _, _ string) (string, error) {
		if builds.Add(1) == 1 {
			close(building)
		}
		select {
		case <-release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		p := filepath.Join(t.TempDir(), "fleetrunner-helper")
		return p, os.WriteFile(p, []byte("not really a binary"), 0o755)
	}

	firstCtx, abortFirst := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := e.ensure(firstCtx, cli, logging.Discard())
		first <- err
	}()
	<-building
	second := make(chan error, 1)
	var ref string
	go func() {
		var err error
		ref, err = e.ensure(t.Context(), cli, logging.Discard())
		second <- err
	}()
	abortFirst()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("aborted caller: err %v, want context.Canceled", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Fatalf("the other caller failed with the aborted one: %v", err)
	}
	// Whether or not it joined before the abort, the other caller must not need a build of its own.
	if n := builds.Load(); n != 1 {
		t.Errorf("%d helper builds, want the one the aborted caller started", n)
	}
	_, _ = cli.ImageRemove(context.WithoutCancel(t.Context()), ref, image.RemoveOptions{Force: true, PruneChildren: true})
}
