package fleeting

import (
	"slices"
	"testing"
)

func TestAPICallsCountsBySeriesSorted(t *testing.T) {
	var c APICalls
	if got := c.APICalls(); len(got) != 0 {
		t.Fatalf("a fresh counter has counts: %v", got)
	}
	c.Add("ec2", "DescribeInstances", OutcomeSuccess)
	c.Add("autoscaling", "SetDesiredCapacity", OutcomeThrottled)
	c.Add("autoscaling", "SetDesiredCapacity", OutcomeThrottled)
	c.Add("autoscaling", "SetDesiredCapacity", OutcomeSuccess)
	want := []APICallCount{
		{"autoscaling", "SetDesiredCapacity", OutcomeSuccess, 1},
		{"autoscaling", "SetDesiredCapacity", OutcomeThrottled, 2},
		{"ec2", "DescribeInstances", OutcomeSuccess, 1},
	}
	if got := c.APICalls(); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
