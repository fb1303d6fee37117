package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/manager"
)

func (a *app) listCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the runners in config.toml",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			a.log.WithField("config", a.configPath).Info("listing configured runners")
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tEXECUTOR\tTOKEN\tURL")
			for _, r := range cfg.Runners {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Executor, manager.ShortToken(r.Token), r.URL)
			}
			return tw.Flush()
		},
	}
}
