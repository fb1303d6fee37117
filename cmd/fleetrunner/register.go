package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// undoTimeout bounds the removal of a runner whose registration was interrupted.
const undoTimeout = 30 * time.Second

type registerOptions struct {
	nonInteractive     bool
	url                string
	token              string
	registrationToken  string
	name               string
	executor           string
	dockerImage        string
	templateConfig     string
	limit              int
	requestConcurrency int

	// Legacy registration only (sent to GitLab with the registration token).
	tagList         string
	runUntagged     bool
	locked          bool
	accessLevel     string
	maximumTimeout  int
	paused          bool
	maintenanceNote string
}

// registerEnv are the environment variables upstream reads for register's flags.
var registerEnv = map[string]string{
	"non-interactive":     "REGISTER_NON_INTERACTIVE",
	"url":                 "CI_SERVER_URL",
	"token":               "CI_SERVER_TOKEN",
	"registration-token":  "REGISTRATION_TOKEN",
	"name":                "RUNNER_NAME",
	"executor":            "RUNNER_EXECUTOR",
	"docker-image":        "DOCKER_IMAGE",
	"template-config":     "TEMPLATE_CONFIG_FILE",
	"limit":               "RUNNER_LIMIT",
	"request-concurrency": "RUNNER_REQUEST_CONCURRENCY",
	"tag-list":            "RUNNER_TAG_LIST",
	"run-untagged":        "REGISTER_RUN_UNTAGGED",
	"locked":              "REGISTER_LOCKED",
	"access-level":        "REGISTER_ACCESS_LEVEL",
	"maximum-timeout":     "REGISTER_MAXIMUM_TIMEOUT",
	"paused":              "REGISTER_PAUSED",
	"maintenance-note":    "REGISTER_MAINTENANCE_NOTE",
}

func (a *app) registerCommand() *cobra.Command {
	o := &registerOptions{}
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register a runner with GitLab and add it to config.toml",
		Long: "Register adds a [[runners]] entry. With --token (a glrt- runner authentication token created in\n" +
			"GitLab) the token is verified and saved; with --registration-token the runner is registered the\n" +
			"legacy way. Autoscaler settings have no flags: put them in a --template-config file holding one\n" +
			"[[runners]] entry. Missing values are asked for on stdin unless --non-interactive is given.\n" +
			"An interrupt (Ctrl-C) after GitLab accepted the runner removes it from GitLab again.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagsFromEnv(cmd.Flags(), registerEnv); err != nil {
				return err
			}
			return a.register(cmd, o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.nonInteractive, "non-interactive", "n", false, "do not ask; fail when a required value is missing")
	f.StringVarP(&o.url, "url", "u", "", "GitLab URL, e.g. https://gitlab.example.com")
	f.StringVarP(&o.token, "token", "t", "", "runner authentication token (glrt-...) of a runner created in GitLab")
	f.StringVarP(&o.registrationToken, "registration-token", "r", "", "legacy registration token")
	f.StringVar(&o.name, "name", "", "runner name (default: the host name)")
	f.StringVar(&o.name, "description", "", "alias of --name")
	f.StringVar(&o.executor, "executor", "", fmt.Sprintf("executor: %s or %s", config.ExecutorDockerAutoscaler, config.ExecutorDocker))
	f.StringVar(&o.dockerImage, "docker-image", "", "default job image ([runners.docker] image)")
	f.StringVar(&o.templateConfig, "template-config", "", "TOML file with one [[runners]] entry merged into the new runner")
	f.IntVar(&o.limit, "limit", 0, "most jobs this runner runs at once (0: no limit)")
	f.IntVar(&o.requestConcurrency, "request-concurrency", 0, "most job requests in flight at once")
	f.StringVar(&o.tagList, "tag-list", "", "legacy registration: comma-separated tags")
	f.BoolVar(&o.runUntagged, "run-untagged", false, "legacy registration: also run untagged jobs")
	f.BoolVar(&o.locked, "locked", true, "legacy registration: lock the runner to its project")
	f.StringVar(&o.accessLevel, "access-level", "", "legacy registration: not_protected or ref_protected")
	f.IntVar(&o.maximumTimeout, "maximum-timeout", 0, "legacy registration: maximum job timeout in seconds")
	f.BoolVar(&o.paused, "paused", false, "legacy registration: register the runner paused")
	f.StringVar(&o.maintenanceNote, "maintenance-note", "", "legacy registration: maintenance note")
	return cmd
}

// flagsFromEnv sets flags the command line left unset from their environment variables.
func flagsFromEnv(f *pflag.FlagSet, env map[string]string) error {
	for name, key := range env {
		if f.Changed(name) {
			continue
		}
		if v := os.Getenv(key); v != "" {
			if err := f.Set(name, v); err != nil {
				return fmt.Errorf("environment variable %s: %w", key, err)
			}
		}
	}
	return nil
}

func (a *app) register(cmd *cobra.Command, o *registerOptions) (err error) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
	defer stop()
	ask := newPrompter(ctx, cmd.InOrStdin(), cmd.OutOrStdout(), !o.nonInteractive)
	defer ask.close()

	cfg, err := a.loadOrNewConfig()
	if err != nil {
		return err
	}
	rc, err := a.loadTemplate(o.templateConfig)
	if err != nil {
		return err
	}
	if o.executor != "" {
		rc.Executor = o.executor
	}
	if rc.Executor != "" {
		if err := checkExecutor(rc); err != nil {
			return err
		}
	}

	if o.url, err = ask.ask("Enter the GitLab instance URL (for example, https://gitlab.com/):", o.url, "", "--url", true); err != nil {
		return err
	}
	if o.token == "" && o.registrationToken == "" {
		tok, err := ask.ask("Enter the runner authentication token (glrt-...) or a registration token:", "", "", "--token or --registration-token", true)
		if err != nil {
			return err
		}
		o.registrationToken = tok
	}
	if strings.HasPrefix(o.registrationToken, "glrt-") {
		// An authentication token given where a registration token was expected: upstream verifies it.
		o.token, o.registrationToken = o.registrationToken, ""
	}
	if o.token != "" && o.registrationToken != "" {
		return errors.New("give either --token (glrt-...) or --registration-token, not both")
	}
	if o.token != "" {
		if i := slices.IndexFunc(cfg.Runners, func(r *config.RunnerConfig) bool { return r.Token == o.token }); i >= 0 {
			return fmt.Errorf("this token is already configured as runner %q in %s", cfg.Runners[i].Name, a.configPath)
		}
	}
	host, _ := os.Hostname()
	if o.name, err = ask.ask("Enter a name for the runner:", o.name, host, "--name", true); err != nil {
		return err
	}
	if o.registrationToken != "" {
		if o.tagList, err = ask.ask("Enter tags for the runner (comma-separated):", o.tagList, "", "--tag-list", false); err != nil {
			return err
		}
		if o.maintenanceNote, err = ask.ask("Enter an optional maintenance note for the runner:", o.maintenanceNote, "", "--maintenance-note", false); err != nil {
			return err
		}
	}

	systemID, err := config.LoadOrCreateSystemID(a.configPath)
	if err != nil {
		return err
	}
	rc.Name, rc.URL = o.name, o.url
	client, err := gitlab.NewClient(a.log, gitlab.ClientConfig{
		URL: rc.URL, TLSCAFile: rc.TLSCAFile, TLSCertFile: rc.TLSCertFile, TLSKeyFile: rc.TLSKeyFile,
		Info: gitlab.NewVersionInfo(rc.Executor, rc.Shell, nil),
	})
	if err != nil {
		return err
	}

	var resp gitlab.TokenResponse
	if o.token != "" {
		resp, err = client.VerifyRunner(ctx, o.token, systemID)
		if resp.Token == "" {
			resp.Token = o.token
		}
	} else {
		resp, err = client.RegisterRunner(ctx, gitlab.RegisterRequest{
			Token:           o.registrationToken,
			Description:     o.name,
			MaintenanceNote: o.maintenanceNote,
			AccessLevel:     o.accessLevel,
			Tags:            splitTags(o.tagList),
			RunUntagged:     o.runUntagged,
			Locked:          o.locked,
			Paused:          o.paused,
			MaximumTimeout:  o.maximumTimeout,
		})
	}
	if err != nil {
		return err
	}
	rc.ID, rc.Token = resp.ID, resp.Token
	rc.TokenObtainedAt = time.Now().UTC().Truncate(time.Second)
	rc.TokenExpiresAt = resp.TokenExpiresAt
	a.log.WithField("runner", manager.ShortToken(rc.Token)).Info("GitLab accepted the runner")

	// From here on, a failure or an interrupt removes what GitLab just recorded.
	defer func() {
		if err != nil {
			err = a.undoRegistration(ctx, client, rc.Token, systemID, err)
		}
	}()

	if rc.Executor == "" {
		if rc.Executor, err = ask.ask(fmt.Sprintf("Enter an executor (%s, %s):", config.ExecutorDockerAutoscaler, config.ExecutorDocker),
			"", "", "--executor", true); err != nil {
			return err
		}
		if err = checkExecutor(rc); err != nil {
			return err
		}
	}
	image := o.dockerImage
	if rc.Docker != nil && image == "" {
		image = rc.Docker.Image
	}
	if image, err = ask.ask("Enter the default Docker image (for example, alpine:latest):", image, "", "--docker-image", true); err != nil {
		return err
	}
	if rc.Docker == nil {
		rc.Docker = &config.DockerConfig{}
	}
	rc.Docker.Image = image
	if cmd.Flags().Changed("limit") {
		rc.Limit = o.limit
	}
	if cmd.Flags().Changed("request-concurrency") {
		rc.RequestConcurrency = o.requestConcurrency
	}
	if err = ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	cfg.Runners = append(cfg.Runners, rc)
	if err = a.saveConfig(cfg); err != nil {
		return err
	}
	a.log.WithFields(map[string]any{"runner": manager.ShortToken(rc.Token), "config": a.configPath}).
		Info("Runner registered successfully. Start it with `fleetrunner run`; a running fleetrunner picks the change up by itself.")
	return nil
}

// undoRegistration removes a runner GitLab accepted when the registration did not complete: the runner
// manager of this host for glrt- tokens (the runner itself belongs to whoever created it in GitLab),
// the whole runner for legacy registrations.
func (a *app) undoRegistration(ctx context.Context, client *gitlab.Client, token, systemID string, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	var err error
	if strings.HasPrefix(token, "glrt-") {
		err = client.UnregisterRunnerManager(ctx, token, systemID)
	} else {
		err = client.UnregisterRunner(ctx, token)
	}
	if err != nil {
		return fmt.Errorf("%w; removing the half-registered runner %s from GitLab also failed (remove it in GitLab's UI): %w", cause, manager.ShortToken(token), err)
	}
	return fmt.Errorf("%w; the runner was removed from GitLab again and config.toml is unchanged", cause)
}

func splitTags(s string) []string {
	var tags []string
	for t := range strings.SplitSeq(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}

// checkExecutor refuses executors this build cannot run and a docker-autoscaler without its settings.
func checkExecutor(rc *config.RunnerConfig) error {
	switch rc.Executor {
	case config.ExecutorDocker:
	case config.ExecutorDockerAutoscaler:
		if rc.Autoscaler == nil {
			return fmt.Errorf("executor %q needs [runners.autoscaler] settings, which have no flags: put them in a file with one [[runners]] entry and pass --template-config FILE", rc.Executor)
		}
	default:
		return fmt.Errorf("executor %q is not supported (want %q or %q)", rc.Executor, config.ExecutorDockerAutoscaler, config.ExecutorDocker)
	}
	return nil
}

// loadOrNewConfig reads config.toml, or starts an empty one when the file does not exist yet.
func (a *app) loadOrNewConfig() (*config.Config, error) {
	if _, err := os.Stat(a.configPath); errors.Is(err, os.ErrNotExist) {
		return &config.Config{Concurrent: config.DefaultConcurrent}, nil
	}
	return a.loadConfig()
}

// loadTemplate reads the one [[runners]] entry of a --template-config file; without one it returns an
// empty entry.
func (a *app) loadTemplate(path string) (*config.RunnerConfig, error) {
	if path == "" {
		return &config.RunnerConfig{}, nil
	}
	var t config.Config
	md, err := toml.DecodeFile(path, &t)
	if err != nil {
		return nil, fmt.Errorf("--template-config %s: %w", path, err)
	}
	if len(t.Runners) != 1 {
		return nil, fmt.Errorf("--template-config %s: want exactly one [[runners]] entry, found %d", path, len(t.Runners))
	}
	for _, k := range md.Undecoded() {
		a.log.WithFields(map[string]any{"file": path, "key": k.String()}).Warn("template key is not a fleetrunner setting; ignored")
	}
	return t.Runners[0], nil
}
