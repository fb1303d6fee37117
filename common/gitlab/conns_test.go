package gitlab

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeClock is a settable clock for connection ages.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestConnectionMaxAge: connection_max_age retires a keep-alive connection once it is older than the
// limit; younger connections, and all of them with a limit of 0, are reused.
func TestConnectionMaxAge(t *testing.T) {
	tests := []struct {
		name    string
		maxAge  time.Duration
		advance time.Duration
		newConn bool
	}{
		{"young connection is reused", 15 * time.Minute, time.Minute, false},
		{"old connection is replaced", 15 * time.Minute, 16 * time.Minute, true},
		{"0 keeps connections", 0, 100 * time.Hour, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opened atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					opened.Add(1)
				}
			}
			srv.Start()
			t.Cleanup(srv.Close)
			clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			c, err := NewClient(logrus.New(), ClientConfig{URL: srv.URL, ConnectionMaxAge: tc.maxAge, Sleep: (&sleeps{}).sleep})
			if err != nil {
				t.Fatal(err)
			}
			c.conns.now = clock.now
			request := func() {
				t.Helper()
				if res := c.RequestJob(t.Context(), "glrt-x", ""); res.Err != nil || res.Status != http.StatusNoContent {
					t.Fatalf("request: %+v", res)
				}
			}
			request()
			// A connection goes back to the idle pool just after its answer was read: give it a few
			// requests to be found idle.
			for range 3 {
				request()
			}
			if n := opened.Load(); n != 1 {
				t.Fatalf("%d connections before the clock moved, want 1 (keep-alive)", n)
			}
			clock.advance(tc.advance)
			for range 5 {
				request()
			}
			if got := opened.Load() > 1; got != tc.newConn {
				t.Fatalf("after %s with connection_max_age %s: %d connections opened, want a new one: %v", tc.advance, tc.maxAge, opened.Load(), tc.newConn)
			}
		})
	}
}
