// Command fleetrunner-demo is `make demo`: a GitLab simulator with a sample pipeline, the real
// `fleetrunner run` binary as a child process with the docker-autoscaler executor on the local fleeting
// plugin, and a live view of jobs spreading over instances as they are created and retired. It builds
// fleetrunner from this checkout unless --fleetrunner names a binary. It exits 1 when a job failed,
// the runner misbehaved, or the machine lacks Docker, OpenSSH's sshd, busybox-static or Go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"gitlab.com/fleetrunner/fleetrunner/internal/demo"
)

func main() {
	logPath := flag.String("log", "", "write the runner's own log here (default: fleetrunner-demo.log in the temp dir)")
	bin := flag.String("fleetrunner", "", "run this fleetrunner binary instead of building one with go build ./cmd/fleetrunner")
	flag.Parse()

	// Ctrl-C ends the context; the demo then stops the runner and removes what it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := demo.Run(ctx, demo.Options{Out: os.Stdout, LogPath: *logPath, Fleetrunner: *bin})
	switch {
	case errors.Is(err, demo.ErrPrerequisite):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "demo interrupted; what it started was stopped")
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	case sum.Failed > 0:
		fmt.Fprintf(os.Stderr, "%d of %d jobs failed\n", sum.Failed, sum.Jobs)
		os.Exit(1)
	}
}
