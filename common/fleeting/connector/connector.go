// Package connector opens SSH connections to fleeting instances from their ConnectInfo: credentials
// (a plugin-provided key, a key file or a password), host keys pinned on first use per instance,
// dial timeout and keepalive, a pool sharing one connection per instance, and the Docker API tunnelled
// through it (forwarded unix socket or `docker system dial-stdio`).
package connector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/ssh"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/logging"
)

// Defaults for the Config fields left zero.
const (
	// DefaultTimeout matches upstream's connector (its dial errors read "1m0s").
	DefaultTimeout   = time.Minute
	DefaultKeepalive = 30 * time.Second
	// DefaultKeepaliveMaxMissed closes a connection whose keepalive went unanswered until the next
	// one was due, so a dead instance is noticed within 2× the keepalive interval.
	DefaultKeepaliveMaxMissed = 1
	// DefaultDockerHost is the engine socket on an instance.
	DefaultDockerHost = "unix:///var/run/docker.sock"
	defaultSSHPort    = 22
	maxRunOutput      = 1 << 20
)

// Config is how the connector connects; ConnectInfo's Timeout and Keepalive, when set, override
// Timeout and Keepalive here.
type Config struct {
	// Timeout bounds the TCP dial and the SSH handshake together.
	Timeout time.Duration
	// Keepalive is how often keepalive@openssh.com is sent on an open connection.
	Keepalive time.Duration
	// KeepaliveMaxMissed is how many keepalives may go unanswered (each given until the next is due)
	// before the connection is closed.
	KeepaliveMaxMissed int
	// UseExternalAddr prefers the instance's external address when it has one.
	UseExternalAddr bool
	// HostKeys pins host keys; nil means an in-memory store private to the Pool or call.
	HostKeys HostKeyStore
	// DialStdio reaches Docker by running `docker system dial-stdio` on the instance
	// (FF_USE_DOCKER_AUTOSCALER_DIAL_STDIO) instead of forwarding the engine's socket.
	DialStdio bool
	// DockerHost is [runners.docker] host as seen from the instance; empty means DefaultDockerHost.
	DockerHost string
	// IsStream tells a Docker dial made for a stream that stays open while a container runs (an attach)
	// from one for a request that ends by itself, so that with DialStdio the pool keeps sessions free
	// for requests (sessions.go). Nil counts every dial as a request.
	IsStream func(ctx context.Context) bool
	// Log receives connection events; nil discards them.
	Log logrus.FieldLogger
}

func (c Config) withDefaults(info fleeting.ConnectInfo) Config {
	if info.Timeout > 0 {
		c.Timeout = info.Timeout
	}
	if info.Keepalive > 0 {
		c.Keepalive = info.Keepalive
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Keepalive <= 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.KeepaliveMaxMissed <= 0 {
		c.KeepaliveMaxMissed = DefaultKeepaliveMaxMissed
	}
	if c.HostKeys == nil {
		c.HostKeys = &MemoryHostKeys{}
	}
	c.Log = logging.Or(c.Log)
	return c
}

// Address returns host:port to dial for info: the external address when asked for and present, else the
// internal one, with ProtocolPort (or 22) added when the address has no port.
func Address(info fleeting.ConnectInfo, useExternal bool) (string, error) {
	addr := info.InternalAddr
	if useExternal && info.ExternalAddr != "" || addr == "" {
		addr = info.ExternalAddr
	}
	if addr == "" {
		return "", fmt.Errorf("instance %s has no address to connect to", info.ID)
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr, nil
	}
	port := info.ProtocolPort
	if port == 0 {
		port = defaultSSHPort
	}
	return net.JoinHostPort(addr, strconv.Itoa(port)), nil
}

// authMethods turns the credentials in info into SSH auth methods. No secret is logged or wrapped into
// an error.
func authMethods(info fleeting.ConnectInfo) ([]ssh.AuthMethod, error) {
	var methods []ssh.AuthMethod
	key := info.Key
	if len(key) == 0 && info.KeyPath != "" {
		b, err := os.ReadFile(info.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("read key_path for instance %s: %w", info.ID, err)
		}
		key = b
	}
	if len(key) > 0 {
		signer, err := ssh.ParsePrivateKey(key)
		if err != nil {
			src := "the plugin's key"
			if len(info.Key) == 0 {
				src = "key_path " + info.KeyPath
			}
			return nil, fmt.Errorf("parse private key (%s) for instance %s: %w", src, info.ID, err)
		}
		methods = append(methods, ssh.PublicKeys(signer))
	}
	if info.Password != "" {
		methods = append(methods, ssh.Password(info.Password))
	}
	if len(methods) == 0 {
		return nil, fmt.Errorf("no credentials for instance %s: set key_path or password in connector_config, or use a plugin that provides a key", info.ID)
	}
	return methods, nil
}

// Client is one SSH connection to an instance, kept alive by keepalives. It closes itself when the
// instance stops answering; Done then fires and Err says why.
type Client struct {
	ID  string
	ssh *ssh.Client
	cfg Config

	done      chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	err       error
}

// Dial opens an SSH connection to the instance described by info, pinning or checking its host key. It
// waits for an instance that is still booting (see dialWaiting) for at most the connector's timeout.
func Dial(ctx context.Context, info fleeting.ConnectInfo, cfg Config) (*Client, error) {
	return dialWaiting(ctx, info, nil, cfg)
}

// Pacing of the attempts to reach a booting instance: quick at first, because sshd usually comes up
// a few seconds after the instance is running, then every few seconds.
const (
	firstRetryWait = 250 * time.Millisecond
	maxRetryWait   = 3 * time.Second
	// maxAttemptTime bounds one attempt, so that a handshake stuck on a half-started sshd does not use
	// up the whole timeout.
	maxAttemptTime = 20 * time.Second
	// waitLogEvery is how often a wait that goes on is logged again.
	waitLogEvery = 15 * time.Second
)

// dialWaiting dials the instance until it answers, as upstream's connector does: on EC2 an instance is
// `running` 10–40 s before its sshd listens, and its key (from user data or EC2 Instance Connect) may
// be installed after that. The failures a booting machine gives (refused, unreachable, reset, EOF or a
// timeout during the handshake, authentication refused) are retried with a short backoff until
// cfg.Timeout has passed; a changed host key, a bad config and the caller's cancellation are not.
// refresh, when not nil, is asked for new ConnectInfo once the credentials in hand expired (an EC2
// Instance Connect key is accepted for 60 s only).
func dialWaiting(ctx context.Context, info fleeting.ConnectInfo, refresh ConnectInfoFunc, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults(info)
	var c *Client
	w := waiter{instance: info.ID, timeout: cfg.Timeout, log: cfg.Log, what: "SSH",
		hint: "check the instance's security group, sshd and key, or raise connector_config timeout for a slow-booting image"}
	err := w.wait(ctx, func(ctx context.Context) error {
		if refresh != nil && info.Expires != nil && !time.Now().Before(*info.Expires) {
			fresh, err := refresh(ctx, info.ID)
			if err != nil {
				return fmt.Errorf("fresh connect info for instance %s (the last credentials expired at %s): %w", info.ID, info.Expires.Format(time.RFC3339), err)
			}
			if fresh.ID == "" {
				fresh.ID = info.ID
			}
			info = fresh
		}
		var err error
		c, err = dialOnce(ctx, info, cfg)
		if refresh == nil && errors.Is(err, errCredentialsExpired) {
			return permanent(err)
		}
		return err
	})
	return c, err
}

// dialOnceWithin makes a single attempt, bounded by the connector's timeout.
func dialOnceWithin(ctx context.Context, info fleeting.ConnectInfo, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults(info)
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	c, err := dialOnce(ctx, info, cfg)
	var perm permanentError
	if errors.As(err, &perm) {
		return nil, perm.err
	}
	return c, err
}

// waiter retries an attempt on a booting instance until it succeeds, fails for good, or the connector's
// timeout passes, logging while the wait goes on so that an operator sees why an instance is not ready.
type waiter struct {
	instance string
	timeout  time.Duration
	log      logrus.FieldLogger
	// what is waited for ("SSH", "Docker Engine"); hint tells the operator what to do after the timeout.
	what, hint string
}

// permanentError marks an attempt's failure that waiting does not cure.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

func (w waiter) wait(ctx context.Context, attempt func(ctx context.Context) error) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	log := w.log.WithField("instance", w.instance)
	pause, attempts, lastLog := firstRetryWait, 0, time.Time{}
	var cause error
	for {
		attempts++
		err := attempt(ctx)
		if err == nil {
			if attempts > 1 {
				log.WithFields(logrus.Fields{"after": time.Since(start).Round(time.Millisecond), "attempts": attempts}).
					Infof("instance %s answers now", w.what)
			}
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		if !retryable(err) {
			return err
		}
		// An attempt cut short by the wait's own deadline says nothing new: report the one before.
		if cause == nil || ctx.Err() == nil || !errors.Is(err, context.DeadlineExceeded) {
			cause = err
		}
		err = cause
		if time.Since(lastLog) >= waitLogEvery {
			lastLog = time.Now()
			log.WithError(err).WithFields(logrus.Fields{"waited": time.Since(start).Round(time.Second), "timeout": w.timeout, "attempts": attempts}).
				Infof("instance %s does not answer yet (still booting?); trying again", w.what)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) || time.Since(start) < w.timeout {
				// The caller gave up (or its own deadline came first): say so rather than blame the instance.
				return fmt.Errorf("instance %s: %w while waiting for its %s (last error: %w)", w.instance, ctx.Err(), w.what, err)
			}
			return fmt.Errorf("instance %s: %s did not answer within the connector timeout of %s (%d attempts; %s): %w",
				w.instance, w.what, w.timeout, attempts, w.hint, err)
		case <-t.C:
		}
		pause = min(2*pause, maxRetryWait)
	}
}

// errCredentialsExpired marks ConnectInfo whose credentials are past their expiry.
var errCredentialsExpired = errors.New("credentials expired")

// retryable tells the failures of a machine still booting from those that waiting does not cure.
func retryable(err error) bool {
	var netErr net.Error
	switch {
	case errors.Is(err, ErrHostKeyChanged), errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, errCredentialsExpired), errors.As(err, new(errDockerNotUp)):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EPIPE), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr):
		return true
	}
	// x/crypto/ssh has no error type for it: the key is not (yet) in authorized_keys, as while cloud-init
	// or an Instance Connect push is still installing it.
	return strings.Contains(err.Error(), "unable to authenticate")
}

// dialOnce makes one attempt: TCP dial and SSH handshake, bounded by maxAttemptTime and ctx.
func dialOnce(ctx context.Context, info fleeting.ConnectInfo, cfg Config) (*Client, error) {
	// Configuration mistakes: waiting does not cure them.
	if info.Protocol != "" && info.Protocol != fleeting.ProtocolSSH {
		return nil, permanent(fmt.Errorf("instance %s: protocol %q is not supported, only %q", info.ID, info.Protocol, fleeting.ProtocolSSH))
	}
	addr, err := Address(info, cfg.UseExternalAddr)
	if err != nil {
		return nil, permanent(err)
	}
	auth, err := authMethods(info)
	if err != nil {
		return nil, permanent(err)
	}
	sshCfg := &ssh.ClientConfig{
		User:              info.Username,
		Auth:              auth,
		HostKeyCallback:   hostKeyCallback(cfg.HostKeys, info.ID),
		HostKeyAlgorithms: hostKeyAlgorithms(cfg.HostKeys, info.ID),
	}
	if info.Expires != nil && time.Now().After(*info.Expires) {
		return nil, fmt.Errorf("credentials for instance %s expired at %s; ask the plugin for fresh ConnectInfo: %w", info.ID, info.Expires.Format(time.RFC3339), errCredentialsExpired)
	}

	ctx, cancel := context.WithTimeout(ctx, maxAttemptTime)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial instance %s at %s: %w", info.ID, addr, err)
	}
	// The handshake does not take a context: a deadline bounds it, and cancellation moves the deadline
	// to the past.
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, sshCfg)
	if !stop() {
		if err == nil {
			_ = cc.Close()
		}
		_ = conn.Close()
		return nil, fmt.Errorf("ssh handshake with instance %s at %s: %w", info.ID, addr, ctx.Err())
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ssh handshake with instance %s at %s as %q: %w", info.ID, addr, info.Username, err)
	}
	_ = conn.SetDeadline(time.Time{})

	c := &Client{ID: info.ID, ssh: ssh.NewClient(cc, chans, reqs), cfg: cfg, done: make(chan struct{})}
	go func() {
		err := c.ssh.Wait()
		if err == nil {
			err = errors.New("connection closed")
		}
		c.closeWith(fmt.Errorf("ssh connection to instance %s lost: %w", info.ID, err))
	}()
	go c.keepalive()
	cfg.Log.WithFields(logrus.Fields{"instance": info.ID, "address": addr}).Debug("instance connected")
	return c, nil
}

// SSH is the underlying client, for callers that open their own channels.
func (c *Client) SSH() *ssh.Client { return c.ssh }

// Done is closed once the connection is closed or lost.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended; nil while it is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection.
func (c *Client) Close() error {
	c.closeWith(fmt.Errorf("ssh connection to instance %s closed", c.ID))
	return nil
}

func (c *Client) closeWith(err error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		_ = c.ssh.Close()
		close(c.done)
	})
}

func (c *Client) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// keepalive sends keepalive@openssh.com every interval. A request still unanswered when the next one is
// due counts as missed; after KeepaliveMaxMissed misses the connection is closed, so that everything
// using it fails instead of hanging on an instance that went away without a TCP reset.
func (c *Client) keepalive() {
	t := time.NewTicker(c.cfg.Keepalive)
	defer t.Stop()
	replies := make(chan error, 1)
	inflight, missed := false, 0
	for {
		select {
		case <-c.done:
			return
		case err := <-replies:
			inflight = false
			if err != nil {
				c.closeWith(fmt.Errorf("ssh keepalive to instance %s failed: %w", c.ID, err))
				return
			}
			missed = 0
		case <-t.C:
			if inflight {
				missed++
				if missed >= c.cfg.KeepaliveMaxMissed {
					c.cfg.Log.WithField("instance", c.ID).Warn("instance stopped answering ssh keepalives; closing its connection")
					c.closeWith(fmt.Errorf("instance %s missed %d ssh keepalive(s) %s apart", c.ID, missed, c.cfg.Keepalive))
					return
				}
				continue
			}
			inflight = true
			go func() {
				// The reply's content does not matter: any answer (even "unsupported") shows the peer lives.
				_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
				replies <- err
			}()
		}
	}
}

// sessionRetryFor bounds how long a refused session is tried again. OpenSSH frees a closed session a
// moment after the client has let go of it, so on a connection that many jobs share a new session can be
// refused (MaxSessions reached) although the client counts one free; it is never refused for long.
const sessionRetryFor = 10 * time.Second

// newSession opens a session, trying again while the server refuses the channel.
func (c *Client) newSession(ctx context.Context) (*ssh.Session, error) {
	deadline := time.Now().Add(sessionRetryFor)
	wait := 10 * time.Millisecond
	for {
		s, err := c.ssh.NewSession()
		var refused *ssh.OpenChannelError
		if err == nil || !errors.As(err, &refused) || time.Now().After(deadline) {
			return s, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// Run runs command in a session on the instance and returns its combined output (at most 1 MiB), its exit
// code and an error only when the command could not be run or waited for (-1 as the exit code then).
func (c *Client) Run(ctx context.Context, command string) ([]byte, int, error) {
	s, err := c.newSession(ctx)
	if err != nil {
		return nil, -1, fmt.Errorf("open ssh session on instance %s: %w", c.ID, err)
	}
	defer s.Close()
	out := &limitedBuffer{max: maxRunOutput}
	s.Stdout, s.Stderr = out, out
	if err := s.Start(command); err != nil {
		return nil, -1, fmt.Errorf("start command on instance %s: %w", c.ID, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.Wait() }()
	select {
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGKILL)
		_ = s.Close()
		return out.Bytes(), -1, fmt.Errorf("command on instance %s: %w", c.ID, ctx.Err())
	case err := <-waited:
		var exit *ssh.ExitError
		switch {
		case err == nil:
			return out.Bytes(), 0, nil
		case errors.As(err, &exit):
			return out.Bytes(), exit.ExitStatus(), nil
		default:
			return out.Bytes(), -1, fmt.Errorf("command on instance %s: %w", c.ID, err)
		}
	}
}

// limitedBuffer keeps the first max bytes written to it and drops the rest.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func (b *limitedBuffer) String() string { return string(b.Bytes()) }
