// Package aws is the fleeting plugin for one AWS EC2 Auto Scaling group (plugin = "aws"). It sizes the
// group with SetDesiredCapacity, removes named instances with TerminateInstanceInAutoScalingGroup, maps
// each instance's lifecycle state for the taskscaler, and hands out connection details, pushing a fresh
// SSH key per connection with EC2 Instance Connect unless static credentials are configured.
//
// Credentials, region and endpoints come from the SDK's default chain (environment, shared files, the
// instance's IAM role), narrowed by plugin_config; AWS_ENDPOINT_URL and its per-service variants point
// the plugin at another endpoint, such as awssim. API use grows with scaling events, not with jobs: the
// last Update's listing answers Heartbeat and membership checks, and instance details are fetched in
// batches and kept. AWS's listings are eventually consistent, so an instance is reported deleted only
// once it was seen leaving or EC2 confirms it is gone, never because one listing left it out.
package aws

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
)

// Version is reported in ProviderInfo.
const Version = "1.0.0"

// Retry settings: throttling (Throttling, RequestLimitExceeded) is retried with backoff by the SDK's
// adaptive retryer, which also slows the client down while AWS throttles it; enough attempts that a
// throttled call during a scaling burst does not fail a job.
const (
	defaultMaxAttempts = 10
	defaultMaxBackoff  = 20 * time.Second
)

// InstanceGroup is the plugin; its exported fields are the plugin_config keys.
type InstanceGroup struct {
	// Name is the Auto Scaling group's name.
	Name string `json:"name"`
	// Region overrides the SDK's region chain (AWS_REGION, the profile's region).
	Region string `json:"region"`
	// Profile names the shared-config profile to use.
	Profile string `json:"profile"`
	// ConfigFile and CredentialsFile replace ~/.aws/config and ~/.aws/credentials.
	ConfigFile      string `json:"config_file"`
	CredentialsFile string `json:"credentials_file"`
	// InstanceMetadata turns off reading notices from each instance's metadata service when false
	// (metadata.go); nil means on.
	InstanceMetadata *bool `json:"instance_metadata"`
	// MetadataEndpoint is where an instance reaches its metadata service; empty means EC2's
	// http://169.254.169.254. Tests point it at a fake on loopback.
	MetadataEndpoint string `json:"metadata_endpoint"`

	log      logrus.FieldLogger
	settings fleeting.Settings
	client   awsclient.Client
	region   string

	// Tests shorten these; zero means the defaults above.
	maxAttempts int
	maxBackoff  time.Duration

	// scaleMu serialises Increase and Decrease: each reads desired, calls AWS, then adjusts it.
	scaleMu sync.Mutex

	mu sync.Mutex
	// desired tracks the group's desired capacity: read from each listing, kept in step by Increase
	// and Decrease so that one Increase needs one call.
	desired int
	// writes counts capacity changes sent to AWS; a listing started before the latest one may predate
	// it, so its desired capacity must not overwrite ours (the next Increase would shrink the group).
	writes  uint64
	maxSize int
	// members is the last listing, by instance ID, with the members it left out that are still there;
	// listedAt is when it was taken.
	members  map[string]awsclient.Member
	listedAt time.Time
	// missing remembers since when each member kept that way has been left out of the listings.
	missing map[string]time.Time
	// departed holds the members that left the group until Update reports them deleted; a listing
	// taken for Heartbeat or ConnectInfo may be the one that noticed.
	departed map[string]bool
	// reportedGone holds when Update reported each member deleted: a listing that lags may still show
	// it (Terminating), and the taskscaler must not see a deleted instance come back.
	reportedGone map[string]time.Time
	// pendingSince remembers when an instance was first seen booting, to tell slow from stuck.
	pendingSince map[string]time.Time
	// details caches DescribeInstances answers; an instance's addresses do not change while it lives.
	details map[string]awsclient.Instance
	// launchConfig and templates are what the last listing says the group launches from (outdated.go);
	// versions holds the launch templates' version numbers as resolved for the listing of versionsFor.
	launchConfig string
	templates    []awsclient.TemplateSpec
	versions     map[string]awsclient.LaunchTemplate
	versionsFor  time.Time

	// calls counts the API calls for APICalls (apicalls.go); it outlives Init and Shutdown.
	calls fleeting.APICalls
}

var _ fleeting.InstanceGroup = (*InstanceGroup)(nil)

// where names the group in every error, so an operator with several runners knows which one.
func (g *InstanceGroup) where() string {
	if g.region == "" {
		return fmt.Sprintf("aws group %q", g.Name)
	}
	return fmt.Sprintf("aws group %q in %s", g.Name, g.region)
}

// validate checks plugin_config and joins every problem.
func (g *InstanceGroup) validate() error {
	var errs []error
	if g.Name == "" {
		errs = append(errs, errors.New("aws plugin: missing required plugin_config key name: set it to the Auto Scaling group's name"))
	}
	return errors.Join(errs...)
}

// loadConfig builds the SDK configuration from the default chain, narrowed by plugin_config.
func (g *InstanceGroup) loadConfig(ctx context.Context) (awssdk.Config, error) {
	attempts, backoff := defaultMaxAttempts, defaultMaxBackoff
	if g.maxAttempts > 0 {
		attempts = g.maxAttempts
	}
	if g.maxBackoff > 0 {
		backoff = g.maxBackoff
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() awssdk.Retryer {
			return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
				o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
					so.MaxAttempts = attempts
					so.MaxBackoff = backoff
					so.Backoff = retry.NewExponentialJitterBackoff(backoff)
				})
			})
		}),
	}
	if g.Region != "" {
		opts = append(opts, config.WithRegion(g.Region))
	}
	if g.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(g.Profile))
	}
	if g.ConfigFile != "" {
		opts = append(opts, config.WithSharedConfigFiles([]string{g.ConfigFile}))
	}
	if g.CredentialsFile != "" {
		opts = append(opts, config.WithSharedCredentialsFiles([]string{g.CredentialsFile}))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return cfg, fmt.Errorf("%s: load AWS configuration (profile %q, config_file %q, credentials_file %q): %w; fix the profile or file named in plugin_config",
			g.where(), g.Profile, g.ConfigFile, g.CredentialsFile, err)
	}
	if cfg.Region == "" {
		return cfg, fmt.Errorf("%s: no AWS region: set plugin_config region, the AWS_REGION environment variable or region in the profile of ~/.aws/config", g.where())
	}
	return cfg, nil
}

// Init checks that the group exists and is set up for a runner, and returns its identity and MaxSize.
func (g *InstanceGroup) Init(ctx context.Context, log logrus.FieldLogger, settings fleeting.Settings) (fleeting.ProviderInfo, error) {
	if err := g.validate(); err != nil {
		return fleeting.ProviderInfo{}, err
	}
	cfg, err := g.loadConfig(ctx)
	if err != nil {
		return fleeting.ProviderInfo{}, err
	}
	g.region = cfg.Region
	cfg.APIOptions = append(cfg.APIOptions, g.countCalls)
	g.client = awsclient.New(cfg)
	g.log = log.WithFields(logrus.Fields{"plugin": "aws", "group": g.Name, "region": g.region})
	g.settings = settings
	g.resetState()

	grp, err := g.client.Group(ctx, g.Name)
	if errors.Is(err, awsclient.ErrGroupNotFound) {
		return fleeting.ProviderInfo{}, fmt.Errorf("%s: DescribeAutoScalingGroups lists no such group: create it (deploy/aws/fleetrunner-asg.yaml) or fix plugin_config name and region", g.where())
	}
	if err != nil {
		return fleeting.ProviderInfo{}, g.apiError("DescribeAutoScalingGroups", err)
	}
	if grp.MaxSize <= 0 {
		return fleeting.ProviderInfo{}, fmt.Errorf("%s: DescribeAutoScalingGroups reports MaxSize %d: raise the group's MaxSize to at least the runner's max_instances", g.where(), grp.MaxSize)
	}
	grp = withoutWarmPool(grp)
	g.remember(grp, 0, nil)
	g.warnSetup(ctx, grp)
	g.logWarmPool(ctx)
	g.log.WithFields(logrus.Fields{"max_size": grp.MaxSize, "desired": grp.DesiredCapacity, "instances": len(grp.Members)}).Info("auto scaling group found")
	return fleeting.ProviderInfo{ID: "aws/" + g.region + "/" + g.Name, MaxSize: grp.MaxSize, Version: Version}, nil
}

// warnSetup logs, with the fix, every group setting that lets AWS remove or add instances behind the
// runner's back or keeps it from removing them (spec: scale-in protection on, AZRebalance suspended,
// no scaling policy; MinSize 0 as the plugin README asks).
func (g *InstanceGroup) warnSetup(ctx context.Context, grp awsclient.Group) {
	if !grp.ProtectNewInstances {
		g.log.Warn("new instances are not protected from scale-in, so AWS may pick instances running jobs to terminate; " +
			"fix: aws autoscaling update-auto-scaling-group --new-instances-protected-from-scale-in --auto-scaling-group-name " + g.Name)
	}
	if grp.MinSize > 0 {
		// TerminateInstanceInAutoScalingGroup with a decrement fails with ValidationError once desired
		// equals MinSize, so the runner could not remove idle or broken instances below it.
		g.log.WithField("min_size", grp.MinSize).Warn("the group's MinSize is above 0, so the runner cannot scale in below it and removing instances there fails; " +
			"fix: aws autoscaling update-auto-scaling-group --min-size 0 --auto-scaling-group-name " + g.Name + " (keep warm instances with idle_count instead)")
	}
	if len(grp.AvailabilityZones) > 1 && !slices.Contains(grp.SuspendedProcesses, "AZRebalance") {
		g.log.Warn("AZRebalance is not suspended in a multi-AZ group, so AWS moves instances between zones and kills running jobs; " +
			"fix: aws autoscaling suspend-processes --scaling-processes AZRebalance --auto-scaling-group-name " + g.Name)
	}
	policies, err := g.client.Policies(ctx, g.Name)
	switch {
	case err != nil:
		g.log.WithError(g.apiError("DescribePolicies", err)).Warn("could not check the group for scaling policies")
	case len(policies) > 0:
		g.log.WithField("policies", policies).Warn("scaling policies are attached and will fight the runner over desired capacity; " +
			"fix: delete them (aws autoscaling delete-policy --auto-scaling-group-name " + g.Name + " --policy-name NAME)")
	}
}

// logWarmPool tells the operator about the group's warm pool, if it has one (DescribeWarmPool). AWS
// manages the pool: the group starts pool instances first when the runner raises the desired capacity,
// and the runner sees them only from then on, booting (creating) until they are InService. Without
// the permission the runner works all the same, blind to the pool.
func (g *InstanceGroup) logWarmPool(ctx context.Context) {
	pool, err := g.client.WarmPool(ctx, g.Name)
	switch {
	case err != nil:
		g.log.WithError(g.apiError("DescribeWarmPool", err)).Warn("could not read the group's warm pool; scaling works without it, but its size and state are not logged")
	case !pool.Configured:
		g.log.Debug("the group has no warm pool")
	default:
		states := map[string]int{}
		for _, m := range pool.Instances {
			states[m.LifecycleState]++
		}
		g.log.WithFields(logrus.Fields{
			"warm_pool_min_size": pool.MinSize, "warm_pool_max_prepared": pool.MaxGroupPreparedCapacity, "warm_pool_state": pool.PoolState,
			"warm_pool_status": pool.Status, "warm_pool_reuse_on_scale_in": pool.ReuseOnScaleIn, "warm_pool_instances": len(pool.Instances),
			"warm_pool_lifecycle_states": states,
		}).Info("warm pool found: the group starts these instances first when the runner scales out; they count as runner capacity only once the group takes them")
	}
}

// resetState empties what the plugin knows of the group.
func (g *InstanceGroup) resetState() {
	g.members = map[string]awsclient.Member{}
	g.missing = map[string]time.Time{}
	g.departed = map[string]bool{}
	g.reportedGone = map[string]time.Time{}
	g.pendingSince = map[string]time.Time{}
	g.details = map[string]awsclient.Instance{}
}

// Shutdown drops the cached state; the plugin holds no cloud resources of its own.
func (g *InstanceGroup) Shutdown(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.resetState()
	return nil
}
