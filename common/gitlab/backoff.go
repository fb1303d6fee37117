package gitlab

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Per-endpoint back-off (spec §0): 100 ms doubling to 60 s, with jitter, reset by a success.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 60 * time.Second
	// backoffForget drops an endpoint's record after this long without a failure, so the map of
	// per-job URIs does not grow for ever.
	backoffForget = 2 * backoffMax
)

type backoffEntry struct {
	failures int
	last     time.Time
}

type backoffs struct {
	mu sync.Mutex
	m  map[string]*backoffEntry
}

func newBackoffs() *backoffs { return &backoffs{m: map[string]*backoffEntry{}} }

// fail records a failure of key and returns how long to wait: a random duration in [d/2, d] where d
// doubles from backoffMin with each consecutive failure up to backoffMax.
func (b *backoffs) fail(key string) time.Duration {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, e := range b.m {
		if now.Sub(e.last) > backoffForget {
			delete(b.m, k)
		}
	}
	e := b.m[key]
	if e == nil {
		e = &backoffEntry{}
		b.m[key] = e
	}
	d := backoffMax
	if e.failures < 10 { // 100 ms << 10 already exceeds the cap
		d = min(backoffMin<<e.failures, backoffMax)
	}
	e.failures++
	e.last = now
	half := d / 2
	return half + rand.N(half+1)
}

func (b *backoffs) reset(key string) {
	b.mu.Lock()
	delete(b.m, key)
	b.mu.Unlock()
}
