package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/manager"
)

func (a *app) runCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the configured runners: poll GitLab and run jobs",
		Long: "Run polls GitLab for every [[runners]] entry of config.toml and runs their jobs.\n\n" +
			"Signals: SIGQUIT stops gracefully (no new jobs; running jobs finish; executors shut down);\n" +
			"SIGTERM and SIGINT abort running jobs and wait up to shutdown_timeout; a second signal exits\n" +
			"at once. SIGHUP reloads config.toml (a changed file is also picked up within 3 s).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(a.configPath); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("config file %s does not exist: register a runner first (fleetrunner register) or pass -c/--config", a.configPath)
			}
			systemID, err := config.LoadOrCreateSystemID(a.configPath)
			if err != nil {
				return err
			}
			m := manager.New(a.log, manager.Options{
				ConfigPath: a.configPath,
				Registry:   a.registry,
				SystemID:   systemID,
				OnConfig:   a.applyLogConfig,
			})
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
}
