package aws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

var _ fleeting.InstanceNoticeReader = (*InstanceGroup)(nil)

// defaultMetadataEndpoint is EC2's instance metadata service, as each instance reaches it. It is set
// explicitly rather than left to the SDK, which would take AWS_EC2_METADATA_SERVICE_ENDPOINT: that
// variable is about the manager's own host, not the job instances.
const defaultMetadataEndpoint = "http://169.254.169.254"

// Metadata paths of the two notices (relative to /latest/meta-data/). Each answers 404 until EC2
// issues the notice.
const (
	// spotActionPath holds {"action": "terminate"|"stop"|"hibernate", "time": "…"} from the
	// interruption notice on, two minutes before the reclaim.
	spotActionPath = "spot/instance-action"
	// rebalancePath holds {"noticeTime": "…"} once EC2 sees the instance at elevated risk of
	// interruption, usually well before the notice.
	rebalancePath = "events/recommendations/rebalance"
)

// ReadNotice reads the instance's spot interruption notice or rebalance recommendation from its
// metadata service, with IMDSv2 (a session token first, no fallback to IMDSv1, which hardened images
// turn off), through dial, which connects from the instance.
//
// Why over the executor's SSH connection: the metadata service answers only from inside the instance,
// and a rebalance recommendation is published nowhere else but EventBridge (which needs a queue and
// IAM the operator would have to set up). Interruptions (interruptions.go) sees the notice through
// the API as well; this sees it from the instance a poll earlier and sees rebalance recommendations.
// It is off with plugin_config instance_metadata = false or AWS_EC2_METADATA_DISABLED=true.
func (g *InstanceGroup) ReadNotice(ctx context.Context, instance string, dial fleeting.DialFunc) (*fleeting.Interruption, error) {
	endpoint := g.MetadataEndpoint
	if endpoint == "" {
		// An endpoint named in plugin_config is asked even with AWS_EC2_METADATA_DISABLED set.
		if strings.EqualFold(os.Getenv("AWS_EC2_METADATA_DISABLED"), "true") {
			return nil, nil
		}
		endpoint = defaultMetadataEndpoint
	}
	if g.InstanceMetadata != nil && !*g.InstanceMetadata {
		return nil, nil
	}
	transport := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1}
	defer transport.CloseIdleConnections()
	client := imds.New(imds.Options{
		Endpoint:          endpoint,
		HTTPClient:        &http.Client{Transport: transport},
		ClientEnableState: imds.ClientEnabled,
		EnableFallback:    awssdk.FalseTernary,
		// The next poll is the retry.
		Retryer: awssdk.NopRetryer{},
	})

	var action struct {
		Action string    `json:"action"`
		Time   time.Time `json:"time"`
	}
	found, err := readMetadata(ctx, client, spotActionPath, &action)
	if err != nil {
		return nil, g.metadataError(instance, spotActionPath, err)
	}
	if found {
		return &fleeting.Interruption{Instance: instance, Reason: fmt.Sprintf("spot interruption notice (%s at %s)", action.Action, action.Time.Format(time.RFC3339))}, nil
	}

	var rebalance struct {
		NoticeTime time.Time `json:"noticeTime"`
	}
	found, err = readMetadata(ctx, client, rebalancePath, &rebalance)
	if err != nil {
		return nil, g.metadataError(instance, rebalancePath, err)
	}
	if found {
		return &fleeting.Interruption{Instance: instance, Reason: "spot rebalance recommendation (elevated risk of interruption)", NoticedAt: rebalance.NoticeTime}, nil
	}
	return nil, nil
}

func (g *InstanceGroup) metadataError(instance, path string, err error) error {
	return fmt.Errorf("%s: instance %s: read %s from its metadata service: %w; if the instance's sshd forbids TCP forwarding or its metadata service is off, set plugin_config instance_metadata = false",
		g.where(), instance, path, err)
}

// readMetadata decodes the JSON document at path into v; found is false when the service answers 404
// (no such notice).
func readMetadata(ctx context.Context, client *imds.Client, path string, v any) (found bool, err error) {
	out, err := client.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) && status.HTTPStatusCode() == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer out.Content.Close()
	body, err := io.ReadAll(io.LimitReader(out.Content, 64<<10))
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return false, fmt.Errorf("malformed document %q: %w", body, err)
	}
	return true, nil
}
