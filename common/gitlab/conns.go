package gitlab

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// connAges retires keep-alive connections older than connection_max_age (upstream-runner.md §1.1), so
// that a load balancer change or a rotated GitLab node is picked up. Go's transport has no per-connection
// lifetime: the dialer records when each connection was made, and before a request, when one has grown
// too old, the idle connections are closed. A connection busy at that moment is retired at a later
// request, once it is idle.
type connAges struct {
	maxAge time.Duration // 0: keep connections as long as the server allows
	now    func() time.Time

	mu        sync.Mutex
	born      map[*agedConn]time.Time
	lastSweep time.Time
}

// sweepEvery bounds how often idle connections are closed while an old one is still busy.
const sweepEvery = time.Second

func newConnAges(maxAge time.Duration) *connAges {
	return &connAges{maxAge: max(maxAge, 0), now: time.Now, born: map[*agedConn]time.Time{}}
}

// wrap makes dial record the connections it opens.
func (a *connAges) wrap(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil || a.maxAge == 0 {
			return conn, err
		}
		c := &agedConn{Conn: conn, ages: a}
		a.mu.Lock()
		a.born[c] = a.now()
		a.mu.Unlock()
		return c, nil
	}
}

// retire closes tr's idle connections when one of the recorded ones is older than maxAge.
func (a *connAges) retire(tr *http.Transport) {
	if a.maxAge == 0 {
		return
	}
	now := a.now()
	a.mu.Lock()
	expired := false
	for _, born := range a.born {
		if now.Sub(born) >= a.maxAge {
			expired = true
			break
		}
	}
	if !expired || (!a.lastSweep.IsZero() && now.Sub(a.lastSweep) < sweepEvery) {
		a.mu.Unlock()
		return
	}
	a.lastSweep = now
	a.mu.Unlock()
	tr.CloseIdleConnections()
}

// agedConn forgets its age when closed.
type agedConn struct {
	net.Conn
	ages *connAges
	once sync.Once
}

func (c *agedConn) Close() error {
	c.once.Do(func() {
		c.ages.mu.Lock()
		delete(c.ages.born, c)
		c.ages.mu.Unlock()
	})
	return c.Conn.Close()
}
