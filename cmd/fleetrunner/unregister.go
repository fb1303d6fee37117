package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

func (a *app) unregisterCommand() *cobra.Command {
	var name, url, token string
	var all bool
	cmd := &cobra.Command{
		Use:   "unregister",
		Short: "Unregister runners from GitLab and remove them from config.toml",
		Long: "Unregister removes a runner chosen by --name, by --url and --token, or all of them with\n" +
			"--all-runners. For runners created in GitLab (glrt- tokens) only this host's runner manager is\n" +
			"removed and the runner stays in GitLab; runners registered with a registration token are deleted.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := &config.Config{Concurrent: config.DefaultConcurrent}
			_, statErr := os.Stat(a.configPath)
			exists := statErr == nil
			if exists {
				var err error
				if cfg, err = a.loadConfig(); err != nil {
					return err
				}
			}
			var targets []*config.RunnerConfig
			switch {
			case all:
				targets = slices.Clone(cfg.Runners)
			case name != "":
				for _, r := range cfg.Runners {
					if r.Name == name {
						targets = append(targets, r)
					}
				}
				if len(targets) == 0 {
					return fmt.Errorf("no runner named %q in %s (see `fleetrunner list`)", name, a.configPath)
				}
			case url != "" && token != "":
				for _, r := range cfg.Runners {
					if r.Token == token && sameURL(r.URL, url) {
						targets = append(targets, r)
					}
				}
				if len(targets) == 0 {
					targets = []*config.RunnerConfig{{Name: "(not in config)", RunnerCredentials: config.RunnerCredentials{URL: url, Token: token}}}
				}
			default:
				return errors.New("say which runner to unregister: --name NAME, --url URL --token TOKEN, or --all-runners")
			}
			systemID, err := config.LoadOrCreateSystemID(a.configPath)
			if err != nil {
				return err
			}

			out := cmd.OutOrStdout()
			var errs []error
			dropped := map[*config.RunnerConfig]bool{}
			for _, r := range targets {
				what := fmt.Sprintf("runner %q (%s)", r.Name, manager.ShortToken(r.Token))
				msg, err := a.unregisterRunner(cmd, r, systemID)
				switch {
				case err == nil:
					fmt.Fprintf(out, "%s: %s\n", what, msg)
				case errors.Is(err, gitlab.ErrForbidden), errors.Is(err, gitlab.ErrNotFound):
					fmt.Fprintf(out, "%s: GitLab no longer knows it (%v); removing it from the config\n", what, err)
				default:
					errs = append(errs, fmt.Errorf("%s: %w (it stays in the config)", what, err))
					continue
				}
				dropped[r] = true
			}
			if exists && len(dropped) > 0 {
				cfg.Runners = slices.DeleteFunc(cfg.Runners, func(r *config.RunnerConfig) bool { return dropped[r] })
				if err := a.saveConfig(cfg); err != nil {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "the runner's name in config.toml")
	f.StringVarP(&url, "url", "u", "", "GitLab URL (with --token)")
	f.StringVarP(&token, "token", "t", "", "runner authentication token (with --url)")
	f.BoolVar(&all, "all-runners", false, "unregister every runner in config.toml")
	return cmd
}

// unregisterRunner removes this host's runner manager (glrt- tokens) or the whole runner (legacy).
func (a *app) unregisterRunner(cmd *cobra.Command, r *config.RunnerConfig, systemID string) (string, error) {
	client, err := a.client(r)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(r.Token, "glrt-") {
		if err := client.UnregisterRunnerManager(cmd.Context(), r.Token, systemID); err != nil {
			return "", err
		}
		return fmt.Sprintf("runner manager %s removed (the runner itself stays in GitLab)", systemID), nil
	}
	if err := client.UnregisterRunner(cmd.Context(), r.Token); err != nil {
		return "", err
	}
	return "unregistered", nil
}

func sameURL(a, b string) bool {
	return strings.TrimRight(a, "/") == strings.TrimRight(b, "/")
}
