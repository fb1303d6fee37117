package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/service"
)

// newServiceManager builds the systemd manager; tests replace it to use a temporary unit directory and
// a recording systemctl.
var newServiceManager = service.New

// serviceFlags are the flags every service command takes.
type serviceFlags struct {
	name        string
	userService bool
}

func (f *serviceFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.name, "service", "n", service.DefaultName, "service (systemd unit) name")
	cmd.Flags().BoolVar(&f.userService, "user-service", false, "manage a systemd user unit (systemctl --user) instead of a system unit")
}

func (a *app) serviceManager(f serviceFlags) (*service.Manager, error) {
	return newServiceManager(a.log, f.name, f.userService)
}

func (a *app) installCommand() *cobra.Command {
	var (
		f     serviceFlags
		spec  service.Spec
		force bool
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install fleetrunner as a systemd service (enabled, not started)",
		Long: "Install writes a systemd unit that runs `fleetrunner run --config <config>` (stopped with SIGQUIT so\n" +
			"running jobs finish), reloads systemd and enables the unit. The unit goes to /etc/systemd/system,\n" +
			"or with --user-service to ~/.config/systemd/user. An existing unit that differs is replaced only\n" +
			"with --force.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.serviceManager(f)
			if err != nil {
				return err
			}
			if spec.Executable, err = os.Executable(); err != nil {
				return fmt.Errorf("find the fleetrunner binary for the unit's ExecStart: %w", err)
			}
			if spec.ConfigFile, err = filepath.Abs(a.configPath); err != nil {
				return fmt.Errorf("--config: %w", err)
			}
			if spec.WorkingDirectory != "" {
				if spec.WorkingDirectory, err = filepath.Abs(spec.WorkingDirectory); err != nil {
					return fmt.Errorf("--working-directory: %w", err)
				}
			}
			path, err := m.Install(cmd.Context(), spec, force)
			if err != nil {
				return err
			}
			if _, err := os.Stat(spec.ConfigFile); errors.Is(err, fs.ErrNotExist) {
				a.log.WithField("config", spec.ConfigFile).Warn("config file does not exist yet: register a runner before starting the service")
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Installed %s.\nStart it with: fleetrunner start%s\n", path, f.cliSuffix())
			if f.userService {
				fmt.Fprintln(out, "To keep it running while you are logged out: loginctl enable-linger \"$USER\"")
			}
			return nil
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&spec.WorkingDirectory, "working-directory", "d", "", "working directory of the service (default: the config file's directory)")
	fl.StringVarP(&spec.User, "user", "u", "", "run the system service as this user (default root)")
	fl.BoolVar(&spec.Syslog, "syslog", false, "tag the service's log lines with the service name in the journal (forwarded to syslog)")
	fl.BoolVar(&force, "force", false, "replace an existing unit file that differs")
	return cmd
}

// cliSuffix repeats the non-default flags in a suggested command line.
func (f serviceFlags) cliSuffix() string {
	s := ""
	if f.name != service.DefaultName {
		s += " --service " + f.name
	}
	if f.userService {
		s += " --user-service"
	}
	return s
}

func (a *app) uninstallCommand() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop, disable and remove the systemd service",
		Long:  "Uninstall stops the service (running jobs finish first), disables it and removes its unit file.",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.serviceManager(f)
			if err != nil {
				return err
			}
			path, err := m.Uninstall(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed %s.\n", path)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func (a *app) startCommand() *cobra.Command {
	return a.serviceActionCommand("start", "Start the systemd service", (*service.Manager).Start)
}

func (a *app) stopCommand() *cobra.Command {
	return a.serviceActionCommand("stop", "Stop the systemd service; running jobs finish first", (*service.Manager).Stop)
}

func (a *app) restartCommand() *cobra.Command {
	return a.serviceActionCommand("restart", "Restart the systemd service; running jobs finish first", (*service.Manager).Restart)
}

func (a *app) serviceActionCommand(verb, short string, do func(*service.Manager, context.Context) error) *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   verb,
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.serviceManager(f)
			if err != nil {
				return err
			}
			return do(m, cmd.Context())
		},
	}
	f.register(cmd)
	return cmd
}

func (a *app) statusCommand() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the systemd service's state; exit 0 only when it is running",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.serviceManager(f)
			if err != nil {
				return err
			}
			state, running, err := m.Status(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", f.name, state)
			if !running {
				journal := "journalctl -u " + f.name
				if f.userService {
					journal = "journalctl --user -u " + f.name
				}
				return fmt.Errorf("service %s is not running (%s): see its log with %s", f.name, state, journal)
			}
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
