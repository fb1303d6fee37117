package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/manager"
	"gitlab.com/fleetrunner/fleetrunner/metrics"
	"gitlab.com/fleetrunner/fleetrunner/status"
)

// metricsShutdownTimeout bounds the metrics server's shutdown after the manager stopped.
const metricsShutdownTimeout = 5 * time.Second

func (a *app) runCommand() *cobra.Command {
	var listenAddress string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the configured runners: poll GitLab and run jobs",
		Long: "Run polls GitLab for every [[runners]] entry of config.toml and runs their jobs.\n\n" +
			"Signals: SIGQUIT stops gracefully (no new jobs; running jobs finish; executors shut down);\n" +
			"SIGTERM and SIGINT abort running jobs and wait up to shutdown_timeout; a second signal exits\n" +
			"at once. SIGHUP reloads config.toml (a changed file is also picked up within 3 s).\n\n" +
			"With listen_address (or --listen-address) set, an HTTP server serves /metrics,\n" +
			"/debug/jobs/list, /-/health and /debug/pprof/; changing it needs a restart.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(a.configPath); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("config file %s does not exist: register a runner first (fleetrunner register) or pass -c/--config", a.configPath)
			}
			systemID, err := config.LoadOrCreateSystemID(a.configPath)
			if err != nil {
				return err
			}
			if listenAddress == "" {
				listenAddress = os.Getenv("LISTEN_ADDRESS")
			}
			opts := manager.Options{
				ConfigPath: a.configPath,
				Registry:   a.registry,
				SystemID:   systemID,
			}
			stopMetrics, err := a.startMetrics(listenAddress, &opts)
			if err != nil {
				return err
			}
			defer stopMetrics()
			m := manager.New(a.log, opts)
			a.log.WithField("config", a.configPath).WithField("system_id", systemID).Info("starting fleetrunner")

			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
			defer signal.Stop(sigs)

			done := make(chan error, 1)
			go func() { done <- m.Run(cmd.Context()) }()
			stopping := false
			for {
				select {
				case err := <-done:
					return err
				case s := <-sigs:
					a.log.WithField("signal", s.String()).Info("signal received")
					switch {
					case s == syscall.SIGHUP:
						m.Reload()
					case s == syscall.SIGQUIT && !stopping:
						m.StopGracefully()
					default:
						// Any further signal, and SIGTERM/SIGINT, abort; the manager exits on the second.
						m.StopForcefully()
					}
					stopping = stopping || s != syscall.SIGHUP
				}
			}
		},
	}
	cmd.Flags().StringVar(&listenAddress, "listen-address", "", "host:port for /metrics and the debug endpoints; overrides listen_address (env LISTEN_ADDRESS)")
	return cmd
}

// startMetrics starts the metrics server when flagAddr (--listen-address, LISTEN_ADDRESS) or
// config.toml's listen_address asks for one, with the status page at /, makes them the manager's
// observer, and sets opts.OnConfig.
// The server is not restarted on reload: a changed listen_address is warned about. The returned
// function shuts the server down.
func (a *app) startMetrics(flagAddr string, opts *manager.Options) (func(), error) {
	initial := ""
	// A broken file is reported by the manager, which loads it next.
	if cfg, _, err := config.Load(a.configPath); err == nil {
		initial = cfg.ListenAddress
	}
	opts.OnConfig = func(cfg *config.Config) {
		a.applyLogConfig(cfg)
		if flagAddr == "" && cfg.ListenAddress != initial {
			a.log.WithField("listen_address", cfg.ListenAddress).Warn("listen_address changed; restart fleetrunner to apply it")
		}
	}
	addr := flagAddr
	if addr == "" {
		addr = initial
	}
	if addr == "" {
		return func() {}, nil
	}
	hostPort, err := config.ListenAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("--listen-address: %w", err)
	}
	mx := metrics.New(a.log)
	// The status page at / sees the manager first and passes every call on to the metrics.
	tracker := status.NewTracker(mx)
	srv, err := metrics.Start(a.log, hostPort, status.Handler(a.log, tracker.Page, mx.Handler()))
	if err != nil {
		return nil, err
	}
	a.log.AddHook(mx.LogHook())
	opts.Observer = tracker
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			a.log.WithError(err).Warn("metrics server did not stop cleanly")
		}
	}, nil
}
