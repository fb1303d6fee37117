// Package helperimage makes sure a Docker Engine has the fleetrunner helper image, without a registry:
// it builds `FROM scratch` with our own static fleetrunner-helper binary for the engine's architecture,
// through the engine's API, once per engine and binary. The image's tag and labels carry the build's
// version and a digest of its contents; images of other builds are removed once they are an hour old.
package helperimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/singleflight"

	"gitlab.com/fleetrunner/fleetrunner/common/version"
)

const (
	// Repository is the image name; the tag is <version>-<arch>-<first 12 hex digits of the digest>.
	Repository = "fleetrunner-helper"
	// BinaryPath is where the image holds the binary; it is the image's ENTRYPOINT, so a container's
	// Cmd is just the subcommand and its flags.
	BinaryPath = "/usr/bin/fleetrunner-helper"
	// LabelVersion and LabelDigest mark the image; the digest covers binary and CA certificates.
	LabelVersion = "org.fleetrunner.helper.version"
	LabelDigest  = "org.fleetrunner.helper.digest"
	// EnvDir names a directory holding fleetrunner-helper-linux-<arch> binaries.
	EnvDir = "FLEETRUNNER_HELPER_DIR"
	// buildTimeout bounds one shared helper image build (binary and image).
	buildTimeout = 10 * time.Minute
	// caFile is copied from the manager's host into the image when present, for TLS to GitLab.
	caFile = "/etc/ssl/certs/ca-certificates.crt"
)

// BinaryName is the file name of the helper binary for goarch: fleetrunner-helper-linux-<goarch>.
func BinaryName(goarch string) string {
	return "fleetrunner-helper-linux-" + goarch
}

// Ensure returns the reference of an up-to-date helper image on the engine behind cli, building it
// when it is missing or stale. Concurrent calls for one engine share one build.
func Ensure(ctx context.Context, cli client.APIClient, log logrus.FieldLogger) (string, error) {
	return defaultEnsurer.ensure(ctx, cli, log)
}

var defaultEnsurer = newEnsurer(Repository)

type ensurer struct {
	repository string
	// build makes a binary when none is shipped; BuildBinary outside tests.
	build  func(ctx context.Context, goarch, outDir string) (string, error)
	images singleflight.Group // key: engine ID + image reference

	// staleAfter is how old another build's helper image must be before it is removed.
	staleAfter time.Duration

	mu   sync.Mutex
	bins map[string]*binary // by goarch, resolved once per process
	binG singleflight.Group
}

func newEnsurer(repository string) *ensurer {
	return &ensurer{repository: repository, build: BuildBinary, staleAfter: time.Hour, bins: map[string]*binary{}}
}

type binary struct {
	path   string
	certs  []byte
	digest string
}

func (e *ensurer) ensure(ctx context.Context, cli client.APIClient, log logrus.FieldLogger) (string, error) {
	info, err := cli.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("ask the Docker Engine for its platform: %w", err)
	}
	if info.OSType != "" && info.OSType != "linux" {
		return "", fmt.Errorf("the Docker Engine runs %s containers; the fleetrunner helper needs linux", info.OSType)
	}
	arch, err := goarch(info.Architecture)
	if err != nil {
		return "", err
	}
	bin, err := e.binary(ctx, arch, log)
	if err != nil {
		return "", err
	}
	// The tag names the binary's digest: two builds sharing an engine (during an upgrade, or two
	// development checkouts) never overwrite each other's image between its check and a job's use.
	ref := e.repository + ":" + tagVersion(version.Version) + "-" + arch + "-" + strings.TrimPrefix(bin.digest, "sha256:")[:12]
	// The shared build runs on a context of its own: the job that happened to start it may be aborted
	// while other jobs on the same engine wait for the same image.
	shared := e.images.DoChan(info.ID+"|"+ref, func() (any, error) {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), buildTimeout)
		defer cancel()
		return ref, e.ensureImage(bctx, cli, log.WithFields(logrus.Fields{"image": ref, "engine": info.ID}), bin, arch, ref)
	})
	select {
	case res := <-shared:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("wait for the helper image %s: %w", ref, ctx.Err())
	}
}

func (e *ensurer) ensureImage(ctx context.Context, cli client.APIClient, log logrus.FieldLogger, bin *binary, arch, ref string) error {
	old, err := cli.ImageInspect(ctx, ref)
	switch {
	case err == nil && old.Config != nil && old.Config.Labels[LabelDigest] == bin.digest:
		return nil
	case err != nil && !cerrdefs.IsNotFound(err):
		return fmt.Errorf("inspect helper image %s: %w", ref, err)
	}
	start := time.Now()
	if err := e.buildImage(ctx, cli, bin, ref); err != nil {
		return err
	}
	log.WithFields(logrus.Fields{"binary": bin.path, "duration": time.Since(start).Round(time.Millisecond)}).Info("built helper image")
	if old.ID != "" {
		// An image under our tag with other contents lost the tag; remove it unless a container uses it.
		if _, err := cli.ImageRemove(ctx, old.ID, image.RemoveOptions{PruneChildren: true}); err != nil {
			log.WithError(err).Debug("replaced helper image kept")
		}
	}
	e.removeStale(ctx, cli, log, arch, ref)
	return nil
}

// removeStale removes the helper images of other builds for arch once they are older than staleAfter
// (a build still starting its jobs keeps its image) and no container uses them.
func (e *ensurer) removeStale(ctx context.Context, cli client.APIClient, log logrus.FieldLogger, arch, ref string) {
	images, err := cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", e.repository))})
	if err != nil {
		log.WithError(err).Debug("could not list old helper images")
		return
	}
	cutoff := time.Now().Add(-e.staleAfter).Unix()
	for _, img := range images {
		if img.Created > cutoff {
			continue
		}
		for _, tag := range img.RepoTags {
			_, t, _ := strings.Cut(tag, ":")
			if tag == ref || !(strings.HasSuffix(t, "-"+arch) || strings.Contains(t, "-"+arch+"-")) {
				continue
			}
			if _, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{PruneChildren: true}); err != nil {
				log.WithError(err).WithField("stale", tag).Debug("old helper image kept")
			}
		}
	}
}

func (e *ensurer) buildImage(ctx context.Context, cli client.APIClient, bin *binary, ref string) error {
	f, err := os.Open(bin.path)
	if err != nil {
		return fmt.Errorf("open helper binary: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open helper binary: %w", err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeContext(pw, f, fi.Size(), bin.certs)) }()
	defer pr.Close()

	resp, err := cli.ImageBuild(ctx, pr, build.ImageBuildOptions{
		Tags:        []string{ref},
		Labels:      map[string]string{LabelVersion: version.Version, LabelDigest: bin.digest},
		Remove:      true,
		ForceRemove: true,
		Dockerfile:  "Dockerfile",
	})
	if err != nil {
		return fmt.Errorf("build helper image %s on the engine: %w", ref, err)
	}
	defer resp.Body.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil); err != nil {
		return fmt.Errorf("build helper image %s on the engine: %w", ref, err)
	}
	return nil
}

// writeContext writes the build context: Dockerfile, binary, CA bundle, and an empty /tmp (the helper
// stages archives there).
func writeContext(w io.Writer, bin io.Reader, size int64, certs []byte) error {
	dockerfile := "FROM scratch\nCOPY fleetrunner-helper " + BinaryPath + "\nCOPY tmp /tmp\n"
	if certs != nil {
		dockerfile += "COPY ca-certificates.crt " + caFile + "\n"
	}
	dockerfile += "ENV PATH=/usr/bin\nENTRYPOINT [\"" + BinaryPath + "\"]\n"
	tw := tar.NewWriter(w)
	now := time.Unix(0, 0)
	put := func(name string, mode int64, typ byte, size int64, body io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Typeflag: typ, Size: size, ModTime: now}); err != nil {
			return err
		}
		if body == nil {
			return nil
		}
		_, err := io.Copy(tw, body)
		return err
	}
	if err := put("Dockerfile", 0o644, tar.TypeReg, int64(len(dockerfile)), strings.NewReader(dockerfile)); err != nil {
		return err
	}
	if err := put("tmp/", 0o1777, tar.TypeDir, 0, nil); err != nil {
		return err
	}
	if certs != nil {
		if err := put("ca-certificates.crt", 0o644, tar.TypeReg, int64(len(certs)), bytes.NewReader(certs)); err != nil {
			return err
		}
	}
	if err := put("fleetrunner-helper", 0o755, tar.TypeReg, size, bin); err != nil {
		return err
	}
	return tw.Close()
}

var tagUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// tagVersion makes a version usable in an image tag (at most 128 characters of [A-Za-z0-9_.-]).
func tagVersion(v string) string {
	v = tagUnsafe.ReplaceAllString(v, "-")
	if v == "" || v[0] == '.' || v[0] == '-' {
		v = "v" + v
	}
	return v[:min(len(v), 100)]
}

// goarch maps the engine's architecture (uname style or Go style) to a GOARCH we ship.
func goarch(engineArch string) (string, error) {
	switch strings.ToLower(engineArch) {
	case "x86_64", "amd64":
		return "amd64", nil
	case "aarch64", "arm64", "arm64/v8", "armv8", "armv8l":
		return "arm64", nil
	}
	return "", fmt.Errorf("the Docker Engine runs on %q; fleetrunner ships helper binaries for amd64 and arm64 only", engineArch)
}

// binary finds (or, in a dev checkout, builds) the helper for goarch and digests it, once per process.
func (e *ensurer) binary(ctx context.Context, arch string, log logrus.FieldLogger) (*binary, error) {
	e.mu.Lock()
	b := e.bins[arch]
	e.mu.Unlock()
	if b != nil {
		return b, nil
	}
	// Like the image build, the shared binary build outlives the caller that started it.
	ch := e.binG.DoChan(arch, func() (any, error) {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), buildTimeout)
		defer cancel()
		p, err := e.findBinary(bctx, arch, log)
		if err != nil {
			return nil, err
		}
		b, err := digest(p)
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		e.bins[arch] = b
		e.mu.Unlock()
		return b, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*binary), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the helper binary: %w", ctx.Err())
	}
}

func (e *ensurer) findBinary(ctx context.Context, arch string, log logrus.FieldLogger) (string, error) {
	var looked []string
	if dir := os.Getenv(EnvDir); dir != "" {
		looked = append(looked, filepath.Join(dir, BinaryName(arch)))
	}
	if exe, err := os.Executable(); err == nil {
		looked = append(looked, filepath.Join(filepath.Dir(exe), BinaryName(arch)))
	}
	for _, p := range looked {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	outDir := filepath.Join(cache, "fleetrunner", "helper-"+tagVersion(version.Version))
	log.WithField("dir", outDir).Info("no shipped helper binary; building one from source")
	p, err := e.build(ctx, arch, outDir)
	if err != nil {
		return "", fmt.Errorf("no fleetrunner-helper binary for linux/%s: looked for %s, and could not build one (%w); "+
			"put %s beside the fleetrunner binary (make build does) or set %s to its directory",
			arch, strings.Join(looked, " and "), err, BinaryName(arch), EnvDir)
	}
	return p, nil
}

func digest(p string) (*binary, error) {
	h := sha256.New()
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read helper binary: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("read helper binary %s: %w", p, err)
	}
	b := &binary{path: p}
	if certs, err := os.ReadFile(caFile); err == nil {
		b.certs = certs
		h.Write(certs)
	}
	b.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return b, nil
}
