package aws

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/smithy-go"
)

func TestFixFor(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"access denied", &smithy.GenericAPIError{Code: "AccessDenied"}, "autoscaling:SetDesiredCapacity"},
		{"throttled by AWS", &smithy.GenericAPIError{Code: "Throttling"}, "scale_throttle"},
		{"retry quota", fmt.Errorf("operation error: %w", ratelimit.QuotaExceededError{Available: 0, Requested: 5}), "pacing its calls"},
		{"adaptive limiter", errors.New("operation error Auto Scaling: failed to get retry Send token, failed to wait for token to be available, context deadline exceeded"), "pacing its calls"},
		{"no credentials", errors.New("failed to retrieve credentials: no EC2 IMDS role found"), "give the manager credentials"},
		{"network", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), "reaches the AWS endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fixFor("SetDesiredCapacity", tt.err); !strings.Contains(got, tt.want) {
				t.Errorf("fixFor(%v) = %q, want it to mention %q", tt.err, got, tt.want)
			}
		})
	}
}

// TestIAMAction: each call the plugin makes names the IAM action an AccessDenied fix must allow.
func TestIAMAction(t *testing.T) {
	for call, want := range map[string]string{
		"SetDesiredCapacity":           "autoscaling:SetDesiredCapacity",
		"DescribeInstances":            "ec2:DescribeInstances",
		"DescribeSpotInstanceRequests": "ec2:DescribeSpotInstanceRequests",
		"SendSSHPublicKey":             "ec2-instance-connect:SendSSHPublicKey",
		"CreateOrUpdateTags":           "autoscaling:CreateOrUpdateTags",
		"DeleteTags":                   "autoscaling:DeleteTags",
	} {
		if got := iamAction(call); got != want {
			t.Errorf("iamAction(%s) = %s, want %s", call, got, want)
		}
	}
}
