// Command gitlabsim runs the GitLab runner-API simulator on its own: it prints its URL, the legacy
// registration token and one glrt- runner token, optionally loads a pipeline file, and serves until
// SIGINT or SIGTERM. Point `fleetrunner register --url` at the printed URL, or, with a fixed --listen
// address and --token, write both into config.toml once and keep them across restarts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gitlabsim:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gitlabsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	pipelineFile := fs.String("pipeline", "", "a .gitlab-ci.yml subset whose jobs are queued at start")
	interval := fs.Int("trace-update-interval", 3, "seconds sent as X-GitLab-Trace-Update-Interval")
	longPoll := fs.Duration("long-poll", 0, "hold job requests like Workhorse while nothing changes (e.g. 30s)")
	dataDir := fs.String("data-dir", "", "where repositories live (default: a temporary directory)")
	logLevel := fs.String("log-level", "info", "debug logs every request")
	token := fs.String("token", "", "the runner token to create (glrt-…; default a new random one), so that a restart keeps config.toml valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}
	level, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if *token != "" && !strings.HasPrefix(*token, "glrt-") {
		return fmt.Errorf("--token %q: a runner authentication token starts with glrt-", *token)
	}
	log := logrus.New()
	log.Out = stderr
	log.Level = level

	srv, err := gitlabsim.New(gitlabsim.Options{
		Addr: *listen, DataDir: *dataDir, TraceUpdateInterval: *interval, LongPoll: *longPoll, Logger: log,
	})
	if err != nil {
		return err
	}
	defer func() { _ = srv.Close() }()
	_, runnerToken := srv.CreateRunner(gitlabsim.RunnerOptions{Description: "gitlabsim runner", Token: *token})
	fmt.Fprintf(stdout, "URL:                %s\n", srv.URL())
	fmt.Fprintf(stdout, "Registration token: %s\n", srv.RegistrationToken())
	fmt.Fprintf(stdout, "Runner token:       %s\n", runnerToken)
	if *pipelineFile != "" {
		p, err := srv.LoadPipelineFile(*pipelineFile)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Pipeline %d: jobs %v\n", p.ID, p.JobIDs)
	}
	fmt.Fprintf(stdout, "Inspect:            %s/sim/jobs\n", srv.URL())
	<-ctx.Done()
	log.WithField("signal", context.Cause(ctx)).Info("shutting down")
	return nil
}
