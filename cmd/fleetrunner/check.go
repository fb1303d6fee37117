package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

// checkCommand checks config files without GitLab: `run` only warns about an unknown key, so that a
// file written for upstream still starts, but an operator's CI wants a typo to fail.
func (a *app) checkCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "check [FILE...]",
		Short: "Check config files offline; fail on any unknown key or invalid value",
		Long: "Check reads each config file (the -c/--config file when none is given) as `run` would, without\n" +
			"talking to GitLab, and prints every problem as FILE: KEY: MESSAGE. It exits non-zero when a file\n" +
			"has an invalid value, is not valid TOML, or has a key fleetrunner does not read (a typo names\n" +
			"the closest known key); other warnings are printed and do not fail the check.",
		RunE: func(cmd *cobra.Command, files []string) error {
			if len(files) == 0 {
				files = []string{a.configPath}
			}
			out := cmd.OutOrStdout()
			var failed []error
			for _, file := range files {
				_, warnings, err := config.Load(file)
				unknown := 0
				for _, w := range warnings {
					fmt.Fprintln(out, w.String())
					if w.Unknown {
						unknown++
					}
				}
				var fe *config.FileError
				switch {
				case errors.As(err, &fe):
					for _, p := range fe.Errs {
						fmt.Fprintf(out, "%s: %v\n", file, p)
					}
					failed = append(failed, fmt.Errorf("%s: %d invalid value(s), %d unknown key(s)", file, len(fe.Errs), unknown))
				case err != nil:
					failed = append(failed, err)
				case unknown > 0:
					failed = append(failed, fmt.Errorf("%s: %d unknown key(s)", file, unknown))
				default:
					fmt.Fprintf(out, "%s: ok\n", file)
				}
			}
			return errors.Join(failed...)
		},
	}
}
