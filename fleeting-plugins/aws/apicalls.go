package aws

import (
	"context"
	"strings"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go/middleware"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

var _ fleeting.APICallCounter = (*InstanceGroup)(nil)

// APICalls implements fleeting.APICallCounter: every attempt sent to AWS, by service, operation and
// outcome, plus the calls the SDK's own retry quota or rate limiter refused before sending (throttled).
func (g *InstanceGroup) APICalls() []fleeting.APICallCount { return g.calls.APICalls() }

// countCalls adds the counting middlewares to every client built from the configuration.
func (g *InstanceGroup) countCalls(stack *middleware.Stack) error {
	// After Retry, so each attempt is counted: a call AWS throttled twice before it went through is
	// two throttled attempts and one success, which is what AWS's rate limits count too.
	attempt := middleware.FinalizeMiddlewareFunc("FleetrunnerCountAttempt",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleFinalize(ctx, in)
			outcome := fleeting.OutcomeSuccess
			switch {
			case err == nil:
			case retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == awssdk.TrueTernary:
				outcome = fleeting.OutcomeThrottled
			default:
				outcome = fleeting.OutcomeError
			}
			g.calls.Add(serviceLabel(ctx), awsmiddleware.GetOperationName(ctx), outcome)
			return out, md, err
		})
	if err := stack.Finalize.Insert(attempt, "Retry", middleware.After); err != nil {
		return err
	}
	// Before Retry, the calls it gave up on without sending: no attempt above saw them.
	refused := middleware.FinalizeMiddlewareFunc("FleetrunnerCountRefused",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleFinalize(ctx, in)
			if err != nil && isClientThrottled(err) {
				g.calls.Add(serviceLabel(ctx), awsmiddleware.GetOperationName(ctx), fleeting.OutcomeThrottled)
			}
			return out, md, err
		})
	return stack.Finalize.Insert(refused, "Retry", middleware.Before)
}

// serviceLabel turns the SDK's service ID ("Auto Scaling", "EC2 Instance Connect") into a metric label
// value ("auto_scaling", "ec2_instance_connect").
func serviceLabel(ctx context.Context) string {
	return strings.ReplaceAll(strings.ToLower(awsmiddleware.GetServiceID(ctx)), " ", "_")
}
