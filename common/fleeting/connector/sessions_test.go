package connector

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

type streamKey struct{}

func isStream(ctx context.Context) bool { return ctx.Value(streamKey{}) != nil }

// TestSessionLimit: at most maxStreamSessions attach streams, so that requests always find a session;
// at most maxDockerSessions in all, and a dial that finds none closes the jobs' idle connections.
func TestSessionLimit(t *testing.T) {
	l := newSessionLimit()
	var idleClosed atomic.Int32
	defer l.register(func() { idleClosed.Add(1) })()
	dial := l.dial(func(context.Context) (net.Conn, error) {
		c, _ := net.Pipe()
		return c, nil
	}, isStream)
	short := func(stream bool) (context.Context, context.CancelFunc) {
		ctx := context.Background()
		if stream {
			ctx = context.WithValue(ctx, streamKey{}, true)
		}
		return context.WithTimeout(ctx, 50*time.Millisecond)
	}

	var open []net.Conn
	for range maxStreamSessions {
		ctx, cancel := short(true)
		c, err := dial(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	ctx, cancel := short(true)
	if _, err := dial(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stream dial beyond %d streams = %v, want it to wait", maxStreamSessions, err)
	}
	cancel()
	for range maxDockerSessions - maxStreamSessions {
		ctx, cancel := short(false)
		c, err := dial(ctx)
		cancel()
		if err != nil {
			t.Fatalf("request dial with the streams at their limit: %v", err)
		}
		open = append(open, c)
	}
	ctx, cancel = short(false)
	if _, err := dial(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial beyond %d sessions = %v, want it to wait", maxDockerSessions, err)
	}
	cancel()
	if idleClosed.Load() == 0 {
		t.Error("a dial waiting for a session did not close the idle connections")
	}
	_ = open[0].Close()
	ctx, cancel = short(true)
	defer cancel()
	if _, err := dial(ctx); err != nil {
		t.Errorf("stream dial after a stream closed: %v", err)
	}
}
