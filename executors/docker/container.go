package docker

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerSpec is one container a stage runs to completion.
type containerSpec struct {
	role     string // LabelRole value
	stage    string // part of the container name
	name     string // full container name; r.name(stage) when empty
	config   *container.Config
	host     *container.HostConfig
	net      *network.NetworkingConfig
	platform *ocispec.Platform
	// stdin, when set, is written to the container's stdin, which is then closed.
	stdin string
	// output receives stdout and stderr; nil discards.
	output io.Writer
}

// created remembers what a job made on the engine, for cleanup.
type created struct {
	mu         sync.Mutex
	containers []string
	networks   []string
	volumes    []string
}

func (c *created) add(list *[]string, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*list = append(*list, id)
}

var nameUnsafe = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// name gives a container, network or volume a readable, unique name.
func (r *run) name(kind string) string {
	r.created.mu.Lock()
	r.seq++
	n := r.seq
	r.created.mu.Unlock()
	s := fmt.Sprintf("fleetrunner-%s-job-%d-%s-%s-%d", r.short, r.j.ID, r.uid, kind, n)
	return nameUnsafe.ReplaceAllString(s, "_")
}

func (r *run) labels(role string) map[string]string {
	l := make(map[string]string, len(r.baseLabels)+1)
	for k, v := range r.baseLabels {
		l[k] = v
	}
	l[LabelRole] = role
	return l
}

// createContainer creates (does not start) a container and records it for cleanup.
func (r *run) createContainer(ctx context.Context, s containerSpec) (string, error) {
	s.config.Labels = r.labels(s.role)
	if s.host == nil {
		s.host = &container.HostConfig{}
	}
	if s.name == "" {
		s.name = r.name(s.stage)
	}
	resp, err := r.cli.ContainerCreate(ctx, s.config, s.host, s.net, s.platform, s.name)
	if err != nil {
		return "", fmt.Errorf("create %s container: %w", s.stage, err)
	}
	r.created.add(&r.created.containers, resp.ID)
	for _, w := range resp.Warnings {
		r.logger.WithField("container", resp.ID).Warn(w)
	}
	return resp.ID, nil
}

// streamKey marks the context of a connection that stays open while a container runs.
type streamKey struct{}

// IsStream reports whether a connection is dialed, with ctx, for a stream that stays open while a
// container runs (an attach), rather than for one API request that ends by itself. A tunnel that limits
// its connections (dial-stdio: one SSH session each) keeps room for requests with it, so a job holding a
// stream can always make the request it needs next.
func IsStream(ctx context.Context) bool {
	v, _ := ctx.Value(streamKey{}).(bool)
	return v
}

// runContainer runs s to completion and returns its exit code. When ctx ends first the container is
// killed at once and the context's cause is returned. A running container holds one connection to the
// engine (its attach stream); the exit code is asked for once the stream has ended.
func (r *run) runContainer(ctx context.Context, s containerSpec) (int, error) {
	s.config.AttachStdout, s.config.AttachStderr = true, true
	if s.stdin != "" {
		s.config.AttachStdin, s.config.OpenStdin, s.config.StdinOnce = true, true, true
	}
	id, err := r.createContainer(ctx, s)
	if err != nil {
		return -1, err
	}
	// Attached before start, so no output is missed.
	att, err := r.cli.ContainerAttach(context.WithValue(ctx, streamKey{}, true), id,
		container.AttachOptions{Stream: true, Stdin: s.stdin != "", Stdout: true, Stderr: true})
	if err != nil {
		return -1, fmt.Errorf("attach to %s container: %w", s.stage, err)
	}
	defer att.Close()
	if err := r.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return -1, fmt.Errorf("start %s container: %w", s.stage, err)
	}
	out := s.output
	if out == nil {
		out = io.Discard
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = stdcopy.StdCopy(out, out, att.Reader)
	}()
	if s.stdin != "" {
		go func() {
			_, _ = io.WriteString(att.Conn, s.stdin)
			_ = att.CloseWrite()
		}()
	}
	aborted := func() (int, error) {
		r.kill(ctx, id)
		att.Close()
		<-copied
		return -1, context.Cause(ctx)
	}
	// The stream ends when the container exits (or the connection to the engine is lost).
	select {
	case <-copied:
	case <-ctx.Done():
		return aborted()
	}
	waitC, errC := r.cli.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case w := <-waitC:
		if w.Error != nil && w.Error.Message != "" {
			return -1, fmt.Errorf("wait for %s container: %s", s.stage, w.Error.Message)
		}
		return int(w.StatusCode), nil
	case err := <-errC:
		if ctx.Err() != nil {
			return aborted()
		}
		return -1, fmt.Errorf("wait for %s container: %w", s.stage, err)
	}
}

// kill stops a container at once, on a context of its own: the stage's may already be cancelled.
func (r *run) kill(parent context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), killTimeout)
	defer cancel()
	if err := r.cli.ContainerKill(ctx, id, "KILL"); err != nil && !strings.Contains(err.Error(), "is not running") {
		r.logger.WithError(err).WithField("container", id).Debug("kill container")
	}
}

// cleanup removes every container, network and volume of the job (tracked ones, plus any found by the
// job's build label), on a fresh context bounded by CleanupTimeout.
func (r *run) cleanup(parent context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), CleanupTimeout)
	defer cancel()
	start := time.Now()
	r.created.mu.Lock()
	rm := removal{
		cli:        r.cli,
		filter:     filters.NewArgs(filters.Arg("label", LabelBuild+"="+r.uid)),
		containers: slices.Clone(r.created.containers),
		networks:   slices.Clone(r.created.networks),
		volumes:    slices.Clone(r.created.volumes),
	}
	r.created.mu.Unlock()
	_, err := rm.run(ctx)
	log := r.logger.WithField("duration", time.Since(start).Round(time.Millisecond))
	if err != nil {
		log.WithError(err).Warn("job cleanup left resources on the engine; they carry the label " + LabelBuild + "=" + r.uid +
			"; fleetrunner removes them once it reaches the engine again after a lost connection, or at its next start")
		return
	}
	log.Debug("job cleanup done")
}

func appendNew(list []string, id string) []string {
	for _, x := range list {
		if x == id {
			return list
		}
	}
	return append(list, id)
}

func shortID(id string) string {
	return id[:min(12, len(id))]
}
