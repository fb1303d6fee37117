package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

func (a *app) verifyCommand() *cobra.Command {
	var del bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that GitLab still knows every configured runner (`check` checks the file offline)",
		Long: "Verify asks GitLab about each runner of config.toml and prints whether it is valid or was removed\n" +
			"from GitLab (deleted, or its token revoked). With --delete, removed runners are dropped from\n" +
			"config.toml. Runners GitLab could not be asked about are kept.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			systemID, err := config.LoadOrCreateSystemID(a.configPath)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var kept []*config.RunnerConfig
			var removed, failed int
			for _, r := range cfg.Runners {
				what := fmt.Sprintf("runner %q (%s) at %s", r.Name, manager.ShortToken(r.Token), r.URL)
				err := a.verifyRunner(cmd, r, systemID)
				switch {
				case err == nil:
					fmt.Fprintf(out, "%s: valid\n", what)
				case errors.Is(err, gitlab.ErrForbidden):
					removed++
					if del {
						fmt.Fprintf(out, "%s: removed from GitLab; deleting it from the config\n", what)
						continue
					}
					fmt.Fprintf(out, "%s: removed from GitLab\n", what)
				default:
					failed++
					fmt.Fprintf(out, "%s: could not verify: %v\n", what, err)
				}
				kept = append(kept, r)
			}
			if del && removed > 0 {
				cfg.Runners = kept
				if err := a.saveConfig(cfg); err != nil {
					return err
				}
			}
			var errs []error
			if removed > 0 && !del {
				errs = append(errs, fmt.Errorf("%d runner(s) no longer exist in GitLab; run `fleetrunner verify --delete` to drop them from %s", removed, a.configPath))
			}
			if failed > 0 {
				errs = append(errs, fmt.Errorf("%d runner(s) could not be verified; they were kept: check that GitLab answers at their url from this host (the lines above say why not), then verify again", failed))
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVar(&del, "delete", false, "drop runners GitLab no longer knows from config.toml")
	return cmd
}

func (a *app) verifyRunner(cmd *cobra.Command, r *config.RunnerConfig, systemID string) error {
	client, err := a.client(r)
	if err != nil {
		return err
	}
	_, err = client.VerifyRunner(cmd.Context(), r.Token, systemID)
	return err
}

// client builds a GitLab client for a configured runner.
func (a *app) client(r *config.RunnerConfig) (*gitlab.Client, error) {
	return gitlab.NewClient(a.log, gitlab.ClientConfig{
		URL: r.URL, TLSCAFile: r.TLSCAFile, TLSCertFile: r.TLSCertFile, TLSKeyFile: r.TLSKeyFile,
		Info: gitlab.NewVersionInfo(r.Executor, r.Shell, nil),
	})
}
