package connector

import (
	"context"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// With dial-stdio every Docker connection is one SSH session, and OpenSSH refuses more than MaxSessions
// (10 by default) on one connection, which all jobs on an instance share. So the jobs of one instance
// open at most maxDockerSessions at once, leaving two for instance_ready_command and the SSH heartbeat.
// At most maxStreamSessions of them are attach streams, which stay open while a container runs; the
// others always serve plain requests, which end by themselves, so a job holding a stream can always make
// the request it needs next and the limit cannot deadlock.
const (
	maxDockerSessions = 8
	maxStreamSessions = 6
	// idleRetry is how often a dial waiting for a session closes the instance's idle connections again.
	idleRetry = time.Second
)

// sessionLimit caps the Docker connections of all jobs on one instance.
type sessionLimit struct {
	all     *semaphore.Weighted
	streams *semaphore.Weighted

	mu      sync.Mutex
	closers map[*idleCloser]struct{}
}

// idleCloser closes a job's idle keep-alive connections, which hold sessions without using them.
type idleCloser struct{ close func() }

func newSessionLimit() *sessionLimit {
	return &sessionLimit{
		all:     semaphore.NewWeighted(maxDockerSessions),
		streams: semaphore.NewWeighted(maxStreamSessions),
		closers: map[*idleCloser]struct{}{},
	}
}

// register adds a job's idle-connection closer; the returned func removes it.
func (l *sessionLimit) register(closeIdle func()) func() {
	c := &idleCloser{close: closeIdle}
	l.mu.Lock()
	l.closers[c] = struct{}{}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.closers, c)
		l.mu.Unlock()
	}
}

func (l *sessionLimit) closeIdle() {
	l.mu.Lock()
	cs := make([]*idleCloser, 0, len(l.closers))
	for c := range l.closers {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
}

// acquireAll takes one session, closing idle keep-alive connections (of any job on the instance) while
// none is free.
func (l *sessionLimit) acquireAll(ctx context.Context) error {
	for !l.all.TryAcquire(1) {
		l.closeIdle()
		wctx, cancel := context.WithTimeout(ctx, idleRetry)
		err := l.all.Acquire(wctx, 1)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// dial wraps dial so that the connection holds a session until it is closed; isStream (nil: never)
// tells a dial for an attach stream.
func (l *sessionLimit) dial(dial func(context.Context) (net.Conn, error), isStream func(context.Context) bool) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		stream := isStream != nil && isStream(ctx)
		if stream {
			if err := l.streams.Acquire(ctx, 1); err != nil {
				return nil, err
			}
		}
		release := func() {
			l.all.Release(1)
			if stream {
				l.streams.Release(1)
			}
		}
		if err := l.acquireAll(ctx); err != nil {
			if stream {
				l.streams.Release(1)
			}
			return nil, err
		}
		conn, err := dial(ctx)
		if err != nil {
			release()
			return nil, err
		}
		return &limitedConn{Conn: conn, release: sync.OnceFunc(release)}, nil
	}
}

// limitedConn gives its session back when closed. CloseWrite is passed through: the Docker client ends
// an attach's stdin with it.
type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
