package fleeting

import (
	"cmp"
	"slices"
	"sync"
)

// API call outcomes, as APICallCount.Outcome names them.
const (
	OutcomeSuccess   = "success"
	OutcomeError     = "error"
	OutcomeThrottled = "throttled" // the cloud refused the call for its rate; retried calls count once per attempt
)

// APICallCount is how many calls a plugin made to one operation of its cloud's API with one outcome.
type APICallCount struct {
	Service   string // e.g. "autoscaling", "ec2"
	Operation string // e.g. "SetDesiredCapacity"
	Outcome   string // OutcomeSuccess, OutcomeError or OutcomeThrottled
	Count     uint64
}

// APICallCounter is implemented by plugins that count their calls to the cloud's API, so that the
// executor can export them (throttling is what an operator of a large fleet needs to see first). It is
// optional: the contract works without it.
type APICallCounter interface {
	// APICalls returns the counts since the plugin was made, sorted by service, operation and outcome.
	APICalls() []APICallCount
}

// APICalls is a ready APICallCounter for plugins: Add each call's outcome. The zero value is ready;
// it is safe for concurrent use.
type APICalls struct {
	mu     sync.Mutex
	counts map[APICallCount]uint64 // keyed with Count 0
}

// Add counts one call.
func (c *APICalls) Add(service, operation, outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[APICallCount]uint64{}
	}
	c.counts[APICallCount{Service: service, Operation: operation, Outcome: outcome}]++
}

// APICalls implements APICallCounter.
func (c *APICalls) APICalls() []APICallCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]APICallCount, 0, len(c.counts))
	for k, n := range c.counts {
		k.Count = n
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b APICallCount) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Operation, b.Operation), cmp.Compare(a.Outcome, b.Outcome))
	})
	return out
}
