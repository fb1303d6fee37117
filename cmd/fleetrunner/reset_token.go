package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// resetTokenFlags are reset-token's flags: which runners, and how the reset is authorised.
type resetTokenFlags struct {
	name string
	url  string
	id   int64
	pat  string
	all  bool
	// idSet and patSet tell an explicit --id 0 or --pat "" from an absent flag.
	idSet, patSet bool
}

func (a *app) resetTokenCommand() *cobra.Command {
	var f resetTokenFlags
	cmd := &cobra.Command{
		Use:   "reset-token",
		Short: "Reset runner authentication tokens and save the new ones in config.toml",
		Long: "Reset-token asks GitLab for a new authentication token for the runner chosen by --name, by\n" +
			"--url and --id (its id in config.toml), or for all runners with --all-runners, and writes it into\n" +
			"config.toml with token_obtained_at and token_expires_at. No other setting changes (comments are\n" +
			"not kept, as with every command that saves config.toml). The old token stops working at once.\n\n" +
			"The runner's current token authorises the reset. With --pat, a personal access token (api\n" +
			"scope) does instead, addressed by the runner's id: this also works when the current token was\n" +
			"revoked or has expired.\n\n" +
			"A running `fleetrunner run` loads the new token within a few seconds, without a restart, and\n" +
			"keeps the runner's executor and instances when the entry has an id (set by register): it is\n" +
			"matched by url and id. An entry without an id looks like a new runner: the old one drains and a\n" +
			"new executor starts, so stop fleetrunner first. Tokens that expire are rotated by\n" +
			"`fleetrunner run` itself.",
		Example: "  fleetrunner reset-token --name my-runner\n" +
			"  fleetrunner reset-token --url https://gitlab.example.com --id 42 --pat glpat-…\n" +
			"  fleetrunner reset-token --all-runners",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.idSet, f.patSet = cmd.Flags().Changed("id"), cmd.Flags().Changed("pat")
			if err := f.validate(); err != nil {
				return err
			}
			return a.resetTokens(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "the runner's name in config.toml")
	fl.StringVarP(&f.url, "url", "u", "", "GitLab URL of the runner (with --id)")
	fl.Int64Var(&f.id, "id", 0, "the runner's ID in GitLab, its id in config.toml (with --url)")
	fl.StringVar(&f.pat, "pat", "", "personal access token (api scope) that authorises the reset instead of the runner's token")
	fl.BoolVar(&f.all, "all-runners", false, "reset the token of every runner in config.toml")
	return cmd
}

// validate checks the flag combination before config.toml is read.
func (f resetTokenFlags) validate() error {
	byURL := f.url != "" || f.idSet
	chosen := 0
	for _, set := range []bool{f.name != "", byURL, f.all} {
		if set {
			chosen++
		}
	}
	switch {
	case chosen == 0:
		return errors.New("say which runner's token to reset: --name NAME, --url URL --id ID (optionally with --pat PAT), or --all-runners")
	case chosen > 1:
		return errors.New("choose one of --name, --url with --id, and --all-runners")
	case byURL && f.url == "":
		return errors.New("--id needs --url: the GitLab URL of the runner, as in config.toml")
	case byURL && !f.idSet:
		return errors.New("--url needs --id: the runner's ID in GitLab (its id in config.toml)")
	case f.idSet && f.id <= 0:
		return fmt.Errorf("--id %d is not a runner ID: use the runner's id from config.toml or GitLab's runner page", f.id)
	case f.patSet && f.pat == "":
		return errors.New("--pat is empty: pass a personal access token, or leave --pat out to use the runner's own token")
	}
	return nil
}

// resetTokens resets the chosen runners' tokens and saves the new ones. Runners are reset one by one;
// those that succeeded are saved even when others failed, because GitLab already killed their old token.
func (a *app) resetTokens(cmd *cobra.Command, f resetTokenFlags) error {
	cfg, err := a.loadConfig()
	if err != nil {
		return err
	}
	targets, err := a.resetTargets(cfg, f)
	if err != nil {
		return err
	}
	// A new token that cannot be saved is lost, and with it the runner: find out before asking GitLab.
	if err := checkWritable(a.configPath); err != nil {
		return err
	}

	out := cmd.OutOrStdout()
	fresh := map[string]config.RunnerCredentials{}
	tried := map[string]bool{}
	var reset []string
	var errs []error
	for _, r := range targets {
		if tried[r.Token] {
			continue // an entry repeating a token gets the same new one below
		}
		tried[r.Token] = true
		what := fmt.Sprintf("runner %q (%s)", r.Name, manager.ShortToken(r.Token))
		creds, err := a.resetToken(cmd, r, f.pat)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			continue
		}
		fresh[r.Token] = creds
		reset = append(reset, what)
		expiry := "never expires"
		if !creds.TokenExpiresAt.IsZero() {
			expiry = "expires " + creds.TokenExpiresAt.Format(time.RFC3339)
		}
		fmt.Fprintf(out, "%s: token reset, new token %s (%s)\n", what, manager.ShortToken(creds.Token), expiry)
	}
	if len(fresh) == 0 {
		return errors.Join(errs...)
	}

	for _, r := range cfg.Runners {
		if c, ok := fresh[r.Token]; ok {
			r.Token, r.TokenObtainedAt, r.TokenExpiresAt = c.Token, c.TokenObtainedAt, c.TokenExpiresAt
		}
	}
	if err := a.saveConfig(cfg); err != nil {
		errs = append(errs, fmt.Errorf("the tokens of %s were reset in GitLab but could not be saved, so the old tokens no longer work: "+
			"fix %s, then reset them again with --url URL --id ID --pat PAT, or register the runners again: %w",
			strings.Join(reset, ", "), a.configPath, err))
		return errors.Join(errs...)
	}
	fmt.Fprintf(out, "saved %d new token(s) in %s\n", len(fresh), a.configPath)
	return errors.Join(errs...)
}

// resetTargets picks the entries of cfg the flags name.
func (a *app) resetTargets(cfg *config.Config, f resetTokenFlags) ([]*config.RunnerConfig, error) {
	var targets []*config.RunnerConfig
	for _, r := range cfg.Runners {
		switch {
		case f.all,
			f.name != "" && r.Name == f.name,
			f.url != "" && r.ID == f.id && sameURL(r.URL, f.url):
			targets = append(targets, r)
		}
	}
	if len(targets) > 0 {
		return targets, nil
	}
	switch {
	case f.all:
		return nil, fmt.Errorf("no runners in %s: register one first (fleetrunner register)", a.configPath)
	case f.name != "":
		return nil, fmt.Errorf("no runner named %q in %s (see `fleetrunner list`)", f.name, a.configPath)
	default:
		// Without an entry the new token could be neither saved nor shown, and the runner would be lost.
		return nil, fmt.Errorf("no runner with id %d and url %s in %s: reset-token saves the new token into an existing entry; "+
			"check the id and url there (or register the runner with fleetrunner register)", f.id, f.url, a.configPath)
	}
}

// resetToken asks GitLab for a new token for r, authorised by its current token or by pat.
func (a *app) resetToken(cmd *cobra.Command, r *config.RunnerConfig, pat string) (config.RunnerCredentials, error) {
	if pat != "" && r.ID == 0 {
		return config.RunnerCredentials{}, errors.New("its entry in config.toml has no id, which --pat needs: add the runner's ID from GitLab's runner page as id, or leave --pat out")
	}
	client, err := a.client(r)
	if err != nil {
		return config.RunnerCredentials{}, err
	}
	var resp gitlab.TokenResponse
	if pat != "" {
		resp, err = client.ResetTokenWithPAT(cmd.Context(), r.ID, pat)
	} else {
		resp, err = client.ResetToken(cmd.Context(), r.Token)
	}
	if err != nil {
		return config.RunnerCredentials{}, explainResetError(err, r, pat != "")
	}
	if resp.Token == "" {
		return config.RunnerCredentials{}, errors.New("GitLab answered without a new token; the old one may no longer work: check the runner with fleetrunner verify")
	}
	return config.RunnerCredentials{
		Token:           resp.Token,
		TokenObtainedAt: time.Now().UTC().Truncate(time.Second),
		TokenExpiresAt:  resp.TokenExpiresAt,
	}, nil
}

// explainResetError says what a refused reset means and what to do about it (gitlab-api.md §1.6).
func explainResetError(err error, r *config.RunnerConfig, withPAT bool) error {
	var se *gitlab.StatusError
	if !errors.As(err, &se) {
		return err
	}
	switch {
	case !withPAT && se.Status == http.StatusForbidden:
		fix := "register the runner again (fleetrunner register)"
		if r.ID != 0 {
			fix = fmt.Sprintf("if the runner still exists in GitLab, reset its token with a personal access token (fleetrunner reset-token --url %s --id %d --pat PAT); otherwise %s", r.URL, r.ID, fix)
		}
		return fmt.Errorf("GitLab does not know the runner's current token: it was revoked or has expired, or the runner was deleted (%w); %s", err, fix)
	case withPAT && se.Status == http.StatusUnauthorized:
		return fmt.Errorf("GitLab did not accept the personal access token: it is wrong, expired or revoked (%w); pass a valid one with --pat", err)
	case withPAT && se.Status == http.StatusForbidden:
		return fmt.Errorf("the personal access token may not reset this runner's token (%w): it needs the api scope and a user who may edit the runner "+
			"(Maintainer of its project, Owner of its group, or an administrator for instance runners)", err)
	case withPAT && se.Status == http.StatusNotFound:
		return fmt.Errorf("GitLab at %s knows no runner with ID %d, or the token's user cannot see it (%w): check id in config.toml against the runner's page in GitLab", r.URL, r.ID, err)
	}
	return err
}

// checkWritable fails when config.toml cannot be replaced: Save writes a temporary file beside it
// and renames it over the file.
func checkWritable(path string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".check-*")
	if err != nil {
		return fmt.Errorf("%s cannot be saved, so a new token would be lost; no token was reset: run as a user who may write to %s: %w", path, dir, err)
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}
