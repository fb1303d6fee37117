package dockerautoscaler

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// firstLine returns a job log watch that records when marker first appears in the script's output.
func firstLine(marker string, at *time.Time) *sectionLog {
	var mu sync.Mutex
	var buf bytes.Buffer
	inScript := false
	return &sectionLog{
		onSection: func(name string) {
			mu.Lock()
			inScript = name == "step_script"
			mu.Unlock()
		},
		onOutput: func(p []byte) {
			mu.Lock()
			defer mu.Unlock()
			if !inScript || !at.IsZero() {
				return
			}
			buf.Write(p)
			if bytes.Contains(buf.Bytes(), []byte(marker)) {
				*at = time.Now()
			}
		},
	}
}

// BenchmarkWarmJobStart compares, on a warm instance, a whole job through the provider (job received →
// first script line, over the pooled SSH tunnel, with every executor stage before the script) with the
// same container started bare over one fresh SSH connection (dial → first line).
func BenchmarkWarmJobStart(b *testing.B) {
	r := newRig(b)
	r.runner.Autoscaler.CapacityPerInstance = 1
	r.runner.Autoscaler.Policy = []config.AutoscalerPolicyConfig{{IdleCount: 1, IdleTime: time.Hour}}
	p := r.newProvider(b)
	testrig.WaitFor(b, 30*time.Second, "a warm instance", func() bool { return len(readyInstances(p)) == 1 })

	b.Run("pooled-tunnel-job", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			r.sim.Enqueue(gitlabsim.JobSpec{Name: "warm", Image: r.image, Script: []string{"echo first-line"}})
			var received, first time.Time
			watch := firstLine("first-line", &first)
			watch.onReceived = func() { received = time.Now() }
			if err, snap := r.runOne(b, p, watch); err != nil {
				b.Fatalf("job: %v\n%s", err, snap.Trace)
			}
			total += first.Sub(received)
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-first-line")
		b.ReportMetric(0, "ns/op")
	})

	b.Run("bare-container-one-ssh-connection", func(b *testing.B) {
		id := readyInstances(p)[0].ID
		info, err := p.ts.ConnectInfo(b.Context(), id)
		if err != nil {
			b.Fatal(err)
		}
		var total, dial time.Duration
		for b.Loop() {
			start := time.Now()
			c, err := connector.Dial(b.Context(), info, connector.Config{DialStdio: true})
			if err != nil {
				b.Fatal(err)
			}
			dial += time.Since(start)
			if err := bareContainer(b.Context(), c, r.image); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			_ = c.Close()
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-first-line")
		b.ReportMetric(float64(dial.Milliseconds())/float64(b.N), "ms-ssh-dial")
		b.ReportMetric(0, "ns/op")
	})
}

// bareContainer runs `echo first-line` in image through c's Docker tunnel and returns at the line.
func bareContainer(ctx context.Context, c *connector.Client, image string) error {
	cli, err := connector.NewDockerClient(c.DialDocker)
	if err != nil {
		return err
	}
	defer cli.Close()
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Cmd: []string{"sh", "-c", "echo first-line"}}, nil, nil, nil, "")
	if err != nil {
		return err
	}
	defer func() {
		_ = cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
	}()
	att, err := cli.ContainerAttach(ctx, created.ID, container.AttachOptions{Stream: true, Stdout: true})
	if err != nil {
		return err
	}
	defer att.Close()
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return err
	}
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for !bytes.Contains(seen.Bytes(), []byte("first-line")) {
		n, err := att.Reader.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			return fmt.Errorf("container output ended before its first line: %w", err)
		}
	}
	return nil
}

// BenchmarkBurst measures how long a burst of N jobs takes until every one runs its script, on a cold
// fleet whose instances boot in B (capacity_per_instance 2, so N/2 instances are needed at once).
func BenchmarkBurst(b *testing.B) {
	const n = 8
	for _, boot := range []time.Duration{500 * time.Millisecond, 2 * time.Second} {
		b.Run(fmt.Sprintf("jobs=%d/boot=%s", n, boot), func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				total += burstOnce(b, n, boot)
			}
			avg := total / time.Duration(b.N)
			b.ReportMetric(avg.Seconds(), "s-until-all-running")
			b.ReportMetric(avg.Seconds()/boot.Seconds(), "x-boot-delay")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func burstOnce(b *testing.B, n int, boot time.Duration) time.Duration {
	r := newRig(b)
	ac := r.runner.Autoscaler
	ac.CapacityPerInstance, ac.MaxInstances = 2, n/2
	// The whole boot is B: sshd and Docker are up as soon as the instance runs.
	ac.PluginConfig["boot_delay"] = boot.String()
	ac.PluginConfig["sshd_delay"], ac.PluginConfig["docker_delay"] = "0s", "0s"
	p := r.newProvider(b)
	for i := range n {
		r.sim.Enqueue(gitlabsim.JobSpec{Name: fmt.Sprintf("burst-%d", i), Image: r.image, Script: []string{"echo running", "sleep 2"}})
	}
	start := time.Now()
	var wg sync.WaitGroup
	running := make([]time.Time, n)
	for i := range n {
		wg.Go(func() {
			if err, snap := r.runOne(b, p, firstLine("running", &running[i])); err != nil {
				b.Errorf("job: %v\n%s", err, snap.Trace)
			}
		})
	}
	wg.Wait()
	var last time.Time
	for _, t := range running {
		if t.After(last) {
			last = t
		}
	}
	return last.Sub(start)
}
