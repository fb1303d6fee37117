// Command fleetrunner is a GitLab Runner whose executor is a built-in Docker Autoscaler. This package
// is wiring only: flags, logging, signals and the subcommands that drive common/config, common/gitlab
// and manager.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/version"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

func main() {
	if err := newRootCommand(executorRegistry()).ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "ERROR:", err)
		os.Exit(1)
	}
}

// app is the state shared by all subcommands.
type app struct {
	registry executors.Registry

	configPath string
	logLevel   string
	logFormat  string

	log *logrus.Logger
	// levelFromCLI and formatFromCLI are set when flags or environment chose them; then config.toml's
	// log_level and log_format do not override them.
	levelFromCLI, formatFromCLI bool
}

func newRootCommand(registry executors.Registry) *cobra.Command {
	a := &app{registry: registry}
	root := &cobra.Command{
		Use:   "fleetrunner",
		Short: "A GitLab Runner with a built-in Docker Autoscaler",
		Long: "fleetrunner runs GitLab CI jobs on an autoscaled fleet of Docker hosts. It reads upstream\n" +
			"gitlab-runner's config.toml (docker and docker-autoscaler executors) unchanged.",
		Version:           fmt.Sprintf("%s (%s)", version.Version, version.Rev()),
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: a.setup,
	}
	// cobra's own words ("unknown flag: --conifg") do not say where the right spelling is.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see `%s --help`)", err, c.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVarP(&a.configPath, "config", "c", "", "config file (env CONFIG_FILE; default "+config.DefaultPath()+")")
	pf.StringVarP(&a.logLevel, "log-level", "l", "", "log level: debug, info, warn, error, fatal, panic (env LOG_LEVEL)")
	pf.StringVar(&a.logFormat, "log-format", "", "log format: text or json (env LOG_FORMAT)")
	root.AddCommand(a.runCommand(), a.registerCommand(), a.verifyCommand(), a.checkCommand(), a.unregisterCommand(), a.resetTokenCommand(), a.listCommand(), a.simulateCommand(), a.tuneCommand(),
		a.installCommand(), a.uninstallCommand(), a.startCommand(), a.stopCommand(), a.restartCommand(), a.statusCommand())
	return root
}

// noArgs is cobra.NoArgs in words that point at flags: cobra's own ("unknown command "config.toml" for
// "fleetrunner run"") reads as if a subcommand were misspelt.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("`%s` takes no arguments, got %q: everything is given with flags, the config file with -c/--config (see `%s --help`)",
			cmd.CommandPath(), args[0], cmd.CommandPath())
	}
	return nil
}

// setup resolves the config path and configures the logger before any subcommand runs.
func (a *app) setup(cmd *cobra.Command, _ []string) error {
	if a.configPath == "" {
		a.configPath = config.DefaultPath()
	}
	a.log = logrus.New()
	a.log.Out = cmd.ErrOrStderr()
	if a.logLevel == "" {
		a.logLevel = os.Getenv("LOG_LEVEL")
	}
	if a.logFormat == "" {
		a.logFormat = os.Getenv("LOG_FORMAT")
	}
	a.levelFromCLI, a.formatFromCLI = a.logLevel != "", a.logFormat != ""
	if err := setLevel(a.log, a.logLevel); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if err := setFormat(a.log, a.logFormat); err != nil {
		return fmt.Errorf("--log-format: %w", err)
	}
	return nil
}

// applyLogConfig applies config.toml's log_level and log_format unless the command line chose them.
func (a *app) applyLogConfig(cfg *config.Config) {
	if !a.levelFromCLI {
		if err := setLevel(a.log, cfg.LogLevel); err != nil {
			a.log.WithError(err).Warn("log_level ignored")
		}
	}
	if !a.formatFromCLI {
		if err := setFormat(a.log, cfg.LogFormat); err != nil {
			a.log.WithError(err).Warn("log_format ignored")
		}
	}
}

func setLevel(log *logrus.Logger, level string) error {
	if level == "" {
		level = "info"
	}
	l, err := logrus.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("unknown log level %q (want debug, info, warn, error, fatal or panic)", level)
	}
	log.SetLevel(l)
	return nil
}

func setFormat(log *logrus.Logger, format string) error {
	switch strings.ToLower(format) {
	case "", "runner", "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return fmt.Errorf("unknown log format %q (want text or json)", format)
	}
	return nil
}

// loadConfig reads config.toml and logs its warnings, each with its key.
func (a *app) loadConfig() (*config.Config, error) {
	cfg, warnings, err := config.Load(a.configPath)
	a.logWarnings(warnings)
	return cfg, err
}

func (a *app) logWarnings(warnings []config.Warning) {
	for _, w := range warnings {
		a.log.WithFields(logrus.Fields{"file": w.File, "key": w.Key}).Warn(w.Message)
	}
}

// saveConfig validates and writes config.toml atomically.
func (a *app) saveConfig(cfg *config.Config) error {
	if err := cfg.Validate(); err != nil {
		return &config.FileError{File: a.configPath, Errs: config.Problems(err)}
	}
	return config.Save(a.configPath, cfg)
}
