package aws

import (
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/smithy-go"
)

// apiError wraps a failed call with the group, the call and what an operator can do about it.
func (g *InstanceGroup) apiError(call string, err error) error {
	return fmt.Errorf("%s: %s: %w; %s", g.where(), call, err, fixFor(call, err))
}

// fixFor suggests a fix from the AWS error code.
func fixFor(call string, err error) string {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		if isCredentialsError(err) {
			return "fix: give the manager credentials (an IAM role on its instance, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or plugin_config profile/credentials_file)"
		}
		if isClientThrottled(err) {
			return "fix: AWS throttled this manager and the SDK is pacing its calls; it recovers on its own, lower the runner's scale_throttle or update_interval pressure if it persists"
		}
		return "fix: check that the manager reaches the AWS endpoint (network, proxy, AWS_ENDPOINT_URL)"
	}
	switch apiErr.ErrorCode() {
	case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthException":
		return fmt.Sprintf("fix: allow %s to the manager's IAM role (deploy/aws/iam-policy.json) and check the group's tags match its conditions", iamAction(call))
	case "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "AuthFailure":
		return "fix: the manager's AWS credentials are invalid or expired; renew them or use an IAM role"
	case "Throttling", "ThrottlingException", "RequestLimitExceeded":
		return "fix: AWS kept throttling after all retries; lower the runner's scale_throttle or ask AWS for a higher API rate"
	case "ValidationError":
		return "fix: the group may have been changed or deleted outside the runner; check it with aws autoscaling describe-auto-scaling-groups"
	}
	return "fix: see the AWS error above"
}

// isCredentialsError recognises the SDK's failure to find or fetch credentials: it happens before any
// request is sent, so it is not an API error and has no exported type.
func isCredentialsError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "get credentials") || strings.Contains(msg, "failed to retrieve credentials")
}

// isClientThrottled recognises the SDK giving up before sending: its retry quota or its adaptive
// client-side rate limiter ran out (both follow AWS throttling answers), which are not API errors.
func isClientThrottled(err error) bool {
	var quota ratelimit.QuotaExceededError
	if errors.As(err, &quota) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "failed to get retry Send token") || strings.Contains(msg, "failed to wait for token to be available")
}

// iamAction is the IAM action behind an API call.
func iamAction(call string) string {
	switch call {
	case "SendSSHPublicKey":
		return "ec2-instance-connect:SendSSHPublicKey"
	case "DescribeInstances", "DescribeSpotInstanceRequests", "DescribeLaunchTemplates":
		return "ec2:" + call
	}
	return "autoscaling:" + call
}
