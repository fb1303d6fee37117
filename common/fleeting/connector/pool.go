package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
)

// ConnectInfoFunc fetches an instance's ConnectInfo; a fleeting.InstanceGroup's ConnectInfo method fits.
// The pool calls it only when it has to dial, so credentials that cost something to make (an EC2
// Instance Connect push) are made once per connection, not once per job.
type ConnectInfoFunc func(ctx context.Context, instance string) (fleeting.ConnectInfo, error)

// Pool hands out one shared SSH connection per instance, counting its users. A lost connection is
// replaced on the next Get; idle connections stay open (kept alive) until Evict, Remove or Close. It
// keeps what belongs to an instance's connections until Remove: its Docker session limit, and the
// connection details lent for its ready hook.
type Pool struct {
	cfg  Config
	info ConnectInfoFunc

	mu      sync.Mutex
	entries map[string]*entry
	// answered holds the instances that accepted a connection before: they are not booting any more,
	// so a failed reconnect is not waited out (the job using it moves on at once).
	answered map[string]bool
	// lent holds the connection details lent by Readying.
	lent map[string]fleeting.ConnectInfo
	// sessions holds each instance's Docker session limit (DialStdio only).
	sessions map[string]*sessionLimit
	closed   bool
}

type entry struct {
	ready  chan struct{} // closed once the dial finished
	client *Client
	err    error
	refs   int
}

// NewPool makes a pool. cfg.HostKeys is shared by every connection it opens.
func NewPool(cfg Config, info ConnectInfoFunc) *Pool {
	// Fixed here rather than per dial, so that every connection shares them.
	if cfg.HostKeys == nil {
		cfg.HostKeys = &MemoryHostKeys{}
	}
	cfg.Log = logging.Or(cfg.Log)
	return &Pool{cfg: cfg, info: info, entries: map[string]*entry{}, answered: map[string]bool{},
		lent: map[string]fleeting.ConnectInfo{}, sessions: map[string]*sessionLimit{}}
}

// Readying lends the pool the connection details the caller fetched for an instance's ready hook, until
// done is called: dials of the instance use them, and fetch fresh ones (through the ConnectInfoFunc)
// only once their credentials expired, so that the reconnects of a booting instance make no new
// credentials (an EC2 Instance Connect push each).
func (p *Pool) Readying(instance string, info fleeting.ConnectInfo) (done func()) {
	p.mu.Lock()
	p.lent[instance] = info
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		delete(p.lent, instance)
		p.mu.Unlock()
	}
}

// connectInfo is the instance's lent connection details while they are valid, else the ConnectInfoFunc's.
func (p *Pool) connectInfo(ctx context.Context, instance string) (fleeting.ConnectInfo, error) {
	p.mu.Lock()
	info, lent := p.lent[instance]
	p.mu.Unlock()
	if lent && (info.Expires == nil || time.Now().Before(*info.Expires)) {
		return info, nil
	}
	fresh, err := p.info(ctx, instance)
	if err != nil {
		return fleeting.ConnectInfo{}, err
	}
	if lent {
		p.mu.Lock()
		if _, ok := p.lent[instance]; ok {
			p.lent[instance] = fresh
		}
		p.mu.Unlock()
	}
	return fresh, nil
}

// Connected returns a lease on the instance's connection if one is open and alive, and never dials:
// for work that should cost an instance nothing unless the executor already talks to it.
func (p *Pool) Connected(instance string) (*Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[instance]
	if p.closed || e == nil {
		return nil, false
	}
	select {
	case <-e.ready:
	default:
		return nil, false
	}
	if e.err != nil || !e.client.alive() {
		return nil, false
	}
	e.refs++
	return &Lease{pool: p, instance: instance, e: e}, true
}

// ErrPoolClosed is returned by Get after Close.
var ErrPoolClosed = errors.New("connection pool closed")

// Get returns a lease on the instance's connection, dialing it if there is none or the last one died.
// Concurrent callers share one dial. Release the lease when done.
func (p *Pool) Get(ctx context.Context, instance string) (*Lease, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		e := p.entries[instance]
		if e != nil {
			select {
			case <-e.ready:
				if e.err == nil && e.client.alive() {
					e.refs++
					p.mu.Unlock()
					return &Lease{pool: p, instance: instance, e: e}, nil
				}
				// Dead or failed: replace it below. Holders of the old client keep their reference
				// and see its error.
				e = nil
			default:
			}
		}
		if e != nil {
			p.mu.Unlock()
			select {
			case <-e.ready:
				// Whoever dialed may have been cancelled; try again with our own context.
				if e.err != nil && ctx.Err() == nil && isContextErr(e.err) {
					continue
				}
				if e.err != nil {
					return nil, e.err
				}
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("connect to instance %s: %w", instance, ctx.Err())
			}
		}
		e = &entry{ready: make(chan struct{})}
		p.entries[instance] = e
		p.mu.Unlock()

		e.client, e.err = p.dial(ctx, instance)

		p.mu.Lock()
		if e.err != nil {
			if p.entries[instance] == e {
				delete(p.entries, instance)
			}
			close(e.ready)
			p.mu.Unlock()
			return nil, e.err
		}
		if p.closed || p.entries[instance] != e { // closed or evicted while dialing
			close(e.ready)
			p.mu.Unlock()
			_ = e.client.Close()
			if p.closed {
				return nil, ErrPoolClosed
			}
			return nil, fmt.Errorf("connect to instance %s: evicted while connecting", instance)
		}
		e.refs++
		close(e.ready)
		p.mu.Unlock()
		return &Lease{pool: p, instance: instance, e: e}, nil
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (p *Pool) dial(ctx context.Context, instance string) (*Client, error) {
	info, err := p.connectInfo(ctx, instance)
	if err != nil {
		return nil, fmt.Errorf("get connect info of instance %s: %w", instance, err)
	}
	if info.ID == "" {
		info.ID = instance
	}
	p.mu.Lock()
	answered := p.answered[instance]
	p.mu.Unlock()
	p.cfg.Log.WithFields(logrus.Fields{"instance": instance, "reconnect": answered}).Debug("dialing instance")
	if answered {
		return dialOnceWithin(ctx, info, p.cfg)
	}
	c, err := dialWaiting(ctx, info, p.connectInfo, p.cfg)
	if err == nil {
		p.mu.Lock()
		p.answered[instance] = true
		p.mu.Unlock()
	}
	return c, err
}

// Run runs command on the instance over its pooled connection (see Client.Run), e.g. the
// instance_ready_command.
func (p *Pool) Run(ctx context.Context, instance, command string) ([]byte, int, error) {
	l, err := p.Get(ctx, instance)
	if err != nil {
		return nil, -1, err
	}
	defer l.Release()
	return l.Client().Run(ctx, command)
}

// WaitDocker waits until the instance's Docker Engine answers, for at most the connector's timeout: on a
// fresh machine sshd answers while user data is still installing or starting Docker. Every failed ping
// drops the pooled connection so that the next try logs in afresh, because user data that adds the
// login user to the docker group takes effect for new logins only.
func (p *Pool) WaitDocker(ctx context.Context, instance string) error {
	l, err := p.Get(ctx, instance)
	if err != nil {
		return err
	}
	cfg := l.Client().cfg
	l.Release()
	w := waiter{instance: instance, timeout: cfg.Timeout, log: cfg.Log, what: "Docker Engine",
		hint: "check that the image or its user data installs and starts Docker and lets the login user use it, or raise connector_config timeout"}
	return w.wait(ctx, func(ctx context.Context) error {
		l, err := p.Get(ctx, instance)
		if err != nil {
			return err
		}
		defer l.Release()
		if err := l.Client().PingDocker(ctx); err != nil {
			p.Evict(instance)
			return err
		}
		return nil
	})
}

// Refs is how many leases on the instance's current connection are outstanding.
func (p *Pool) Refs(instance string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.entries[instance]; e != nil {
		return e.refs
	}
	return 0
}

// Evict closes the instance's connection (its current users see it fail) and forgets it, e.g. when the
// instance is found unhealthy; the next Get dials afresh.
func (p *Pool) Evict(instance string) {
	p.mu.Lock()
	e := p.evictLocked(instance)
	p.mu.Unlock()
	if e != nil {
		closeWhenReady(e)
	}
}

// Remove forgets an instance that left the group: Evict, and its session limit and lent connection
// details go too.
func (p *Pool) Remove(instance string) {
	p.mu.Lock()
	e := p.evictLocked(instance)
	delete(p.sessions, instance)
	delete(p.lent, instance)
	p.mu.Unlock()
	if e != nil {
		closeWhenReady(e)
	}
}

// evictLocked forgets the instance's connection and returns its entry for the caller to close.
func (p *Pool) evictLocked(instance string) *entry {
	e := p.entries[instance]
	delete(p.entries, instance)
	delete(p.answered, instance)
	return e
}

// Close closes every connection; later Gets fail with ErrPoolClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	entries := p.entries
	p.entries = map[string]*entry{}
	p.mu.Unlock()
	for _, e := range entries {
		closeWhenReady(e)
	}
	return nil
}

// closeWhenReady closes an entry's client; one still dialing is closed by its dialer, which sees the
// entry gone.
func closeWhenReady(e *entry) {
	select {
	case <-e.ready:
		if e.client != nil {
			_ = e.client.Close()
		}
	default:
	}
}

func (p *Pool) release(instance string, e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.refs--
	if e.refs == 0 && !e.client.alive() && p.entries[instance] == e {
		delete(p.entries, instance)
	}
}

// Lease is one user's hold on a pooled connection.
type Lease struct {
	pool     *Pool
	instance string
	e        *entry
	once     sync.Once
}

// Client is the shared connection; do not Close it (Release the lease instead).
func (l *Lease) Client() *Client { return l.e.client }

// Done is closed when the connection is lost.
func (l *Lease) Done() <-chan struct{} { return l.e.client.Done() }

// DialDocker opens a stream to the instance's Docker Engine (see Client.DialDocker).
func (l *Lease) DialDocker(ctx context.Context) (net.Conn, error) { return l.e.client.DialDocker(ctx) }

// DockerClient is a Docker API client over the lease's connection; with DialStdio its connections
// count against the instance's session limit (sessions.go). closeCli closes it; the lease is still
// the caller's to release.
func (l *Lease) DockerClient() (cli *client.Client, closeCli func(), err error) {
	limit := l.pool.sessionLimit(l.instance)
	dial := l.DialDocker
	if limit != nil {
		dial = limit.dial(dial, l.pool.cfg.IsStream)
	}
	cli, err = NewDockerClient(dial)
	if err != nil {
		return nil, nil, err
	}
	if limit == nil {
		return cli, func() { _ = cli.Close() }, nil
	}
	// Close only drops idle keep-alive connections; other jobs on the instance may ask for that.
	unregister := limit.register(func() { _ = cli.Close() })
	return cli, func() {
		unregister()
		_ = cli.Close()
	}, nil
}

// sessionLimit returns the instance's limit, or nil when Docker connections are not sessions (a
// forwarded socket is a channel, which MaxSessions does not count).
func (p *Pool) sessionLimit(instance string) *sessionLimit {
	if !p.cfg.DialStdio {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.sessions[instance]
	if !ok {
		l = newSessionLimit()
		p.sessions[instance] = l
	}
	return l
}

// DialFrom opens a TCP connection from the instance (see Client.DialFrom).
func (l *Lease) DialFrom(ctx context.Context, network, address string) (net.Conn, error) {
	return l.e.client.DialFrom(ctx, network, address)
}

// Run runs a command on the instance (see Client.Run).
func (l *Lease) Run(ctx context.Context, command string) ([]byte, int, error) {
	return l.e.client.Run(ctx, command)
}

// Release gives the lease back; calling it again does nothing.
func (l *Lease) Release() {
	l.once.Do(func() { l.pool.release(l.instance, l.e) })
}
