package docker_test

import (
	"context"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
)

// BenchmarkTrivialJob measures a warm engine's per-job overhead for `true`, split by stage, next to
// the same container run bare through the API (create, attach, start, wait, remove).
func BenchmarkTrivialJob(b *testing.B) {
	rg := newRig(b)
	b.Run("job", func(b *testing.B) {
		stages := map[string]time.Duration{}
		var order []string
		var total time.Duration
		for b.Loop() {
			start := time.Now()
			l, err := rg.run(b, rg.newJob("true"))
			total += time.Since(start)
			if err != nil {
				b.Fatalf("job failed: %v\n%s", err, l)
			}
			l.mu.Lock()
			for _, s := range l.sections {
				if _, ok := stages[s.name]; !ok {
					order = append(order, s.name)
				}
				stages[s.name] += s.end.Sub(s.start)
			}
			l.mu.Unlock()
		}
		var inStages time.Duration
		for _, name := range order {
			inStages += stages[name]
			b.ReportMetric(float64(stages[name].Microseconds())/1000/float64(b.N), name+"-ms/op")
		}
		// Outside any section: mostly the cleanup of containers and volumes.
		b.ReportMetric(float64((total-inStages).Microseconds())/1000/float64(b.N), "cleanup-ms/op")
	})
	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			bareRun(b, rg)
		}
	})
}

func bareRun(b *testing.B, rg *rig) {
	ctx := b.Context()
	c, err := rg.cli.ContainerCreate(ctx, &container.Config{Image: rg.image, Cmd: []string{"true"}, AttachStdout: true, AttachStderr: true}, nil, nil, nil, "")
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = rg.cli.ContainerRemove(context.WithoutCancel(ctx), c.ID, container.RemoveOptions{Force: true})
	}()
	att, err := rg.cli.ContainerAttach(ctx, c.ID, container.AttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		b.Fatal(err)
	}
	defer att.Close()
	waitC, errC := rg.cli.ContainerWait(ctx, c.ID, container.WaitConditionNextExit)
	if err := rg.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		b.Fatal(err)
	}
	select {
	case w := <-waitC:
		if w.StatusCode != 0 {
			b.Fatalf("exit %d", w.StatusCode)
		}
	case err := <-errC:
		b.Fatal(err)
	}
}
