// Command fleetrunner-demo is `make demo`: a GitLab simulator with a sample pipeline, the real manager
// with the docker-autoscaler executor on the local fleeting plugin, and a live view of jobs spreading
// over instances as they are created and retired. It exits 1 when a job failed or the machine lacks
// Docker, OpenSSH's sshd or busybox-static.
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
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := demo.Run(ctx, demo.Options{Out: os.Stdout, LogPath: *logPath})
	switch {
	case errors.Is(err, demo.ErrPrerequisite):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	case sum.Failed > 0:
		fmt.Fprintf(os.Stderr, "%d of %d jobs failed\n", sum.Failed, sum.Jobs)
		os.Exit(1)
	}
}
