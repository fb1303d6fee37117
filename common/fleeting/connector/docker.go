package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/crypto/ssh"
)

// DockerTunnelHost is the fake host the Docker client is given for a tunnelled engine (upstream's, so
// API errors read the same: `Post "http://internal.tunnel.invalid/v1.41/...": ...`).
const DockerTunnelHost = "http://internal.tunnel.invalid"

// DialDocker opens one stream to the instance's Docker Engine through the SSH connection: a forwarded
// unix socket (or TCP address) named by DockerHost, or, with DialStdio, the stdin/stdout of
// `docker system dial-stdio` run on the instance.
func (c *Client) DialDocker(ctx context.Context) (net.Conn, error) {
	if c.cfg.DialStdio {
		return c.dialStdio(ctx)
	}
	network, addr, err := parseDockerHost(c.cfg.DockerHost)
	if err != nil {
		return nil, err
	}
	conn, err := c.ssh.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("ssh tunnel: open %s %s on instance %s (is the engine running there, and does the sshd allow stream-local forwarding?): %w", network, addr, c.ID, err)
	}
	return conn, nil
}

// DialFrom opens a TCP connection from the instance to address, through this SSH connection (a
// direct-tcpip channel, which sshd allows unless AllowTcpForwarding is off): what the instance alone
// reaches, such as a cloud's link-local metadata service, is reached as the instance.
func (c *Client) DialFrom(ctx context.Context, network, address string) (net.Conn, error) {
	conn, err := c.ssh.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("ssh tunnel: connect to %s %s from instance %s (does its sshd allow TCP forwarding?): %w", network, address, c.ID, err)
	}
	return conn, nil
}

// PingDocker asks the instance's Docker Engine for /_ping through this connection. A failure that a
// starting engine gives (socket missing or refused, an error status) is worth trying again.
func (c *Client) PingDocker(ctx context.Context) error {
	hc := DockerHTTPClient(c.DialDocker)
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, DockerTunnelHost+"/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if !c.alive() {
			return c.Err()
		}
		return fmt.Errorf("ping the Docker Engine on instance %s: %w", c.ID, errDockerNotUp{err})
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1024))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping the Docker Engine on instance %s: %s: %w", c.ID, resp.Status, errDockerNotUp{})
	}
	return nil
}

// errDockerNotUp marks a Docker ping that failed in a way a starting engine gives (socket missing or
// refusing, engine answering 5xx while it starts): worth trying again.
type errDockerNotUp struct{ err error }

func (e errDockerNotUp) Error() string {
	if e.err == nil {
		return "engine not ready"
	}
	return e.err.Error()
}
func (e errDockerNotUp) Unwrap() error { return e.err }

func parseDockerHost(host string) (network, addr string, err error) {
	if host == "" {
		host = DefaultDockerHost
	}
	u, err := url.Parse(host)
	if err != nil {
		return "", "", fmt.Errorf("docker host %q: %w", host, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return "", "", fmt.Errorf("docker host %q names no socket path", host)
		}
		return "unix", u.Path, nil
	case "tcp":
		return "tcp", u.Host, nil
	default:
		return "", "", fmt.Errorf("docker host %q: only unix:// and tcp:// can be reached through an ssh tunnel", host)
	}
}

func (c *Client) dialStdio(ctx context.Context) (net.Conn, error) {
	cmd := "docker system dial-stdio"
	if c.cfg.DockerHost != "" {
		cmd = "docker -H " + shellQuote(c.cfg.DockerHost) + " system dial-stdio"
	}
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, err := c.startStdio(ctx, cmd)
		ch <- result{conn, err}
	}()
	select {
	case r := <-ch:
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				_ = r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("ssh tunnel: start %q on instance %s: %w", cmd, c.ID, ctx.Err())
	}
}

func (c *Client) startStdio(ctx context.Context, cmd string) (net.Conn, error) {
	s, err := c.newSession(ctx)
	if err != nil {
		return nil, fmt.Errorf("ssh tunnel: open session on instance %s: %w", c.ID, err)
	}
	stdin, err := s.StdinPipe()
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("ssh tunnel: %w", err)
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("ssh tunnel: %w", err)
	}
	stderr := &limitedBuffer{max: 4096}
	s.Stderr = stderr
	if err := s.Start(cmd); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("ssh tunnel: start %q on instance %s: %w", cmd, c.ID, err)
	}
	conn := &stdioConn{
		instance: c.ID, cmd: cmd, session: s, stdin: stdin, stdout: stdout, stderr: stderr,
		exited: make(chan struct{}),
	}
	go func() {
		conn.exitErr = s.Wait()
		close(conn.exited)
	}()
	return conn, nil
}

// shellQuote quotes s for a POSIX shell (the remote side runs commands through the user's shell).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// stdioConn is a net.Conn over a remote `docker system dial-stdio`. Deadlines are not supported (the
// HTTP client does not need them); closing the connection ends the remote command.
type stdioConn struct {
	instance, cmd string
	session       *ssh.Session
	stdin         io.WriteCloser
	stdout        io.Reader
	stderr        *limitedBuffer
	exited        chan struct{}
	exitErr       error
}

// stdioExitWait is how long a reader at EOF waits for the remote exit status, to tell "the engine closed
// the stream" from "dial-stdio failed" (docker CLI missing, socket unreachable).
const stdioExitWait = time.Second

func (c *stdioConn) Read(p []byte) (int, error) {
	n, err := c.stdout.Read(p)
	if errors.Is(err, io.EOF) {
		select {
		case <-c.exited:
			if c.exitErr != nil {
				return n, fmt.Errorf("ssh tunnel: %q on instance %s ended: %v: %s", c.cmd, c.instance, c.exitErr, strings.TrimSpace(c.stderr.String()))
			}
		case <-time.After(stdioExitWait):
		}
	}
	return n, err
}

func (c *stdioConn) Write(p []byte) (int, error) { return c.stdin.Write(p) }

// CloseWrite half-closes the stream, which the Docker client uses after an attach's stdin ends.
func (c *stdioConn) CloseWrite() error { return c.stdin.Close() }

// Close closes the session's channel, which ends the remote command. It must not half-close stdin:
// x/crypto/ssh does not allow CloseWrite concurrently with a Write, and the HTTP transport closes a
// connection from its read loop while its write loop may still be writing.
func (c *stdioConn) Close() error {
	return c.session.Close()
}

func (c *stdioConn) LocalAddr() net.Addr              { return stdioAddr(c.instance) }
func (c *stdioConn) RemoteAddr() net.Addr             { return stdioAddr(c.instance) }
func (c *stdioConn) SetDeadline(time.Time) error      { return nil }
func (c *stdioConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stdioConn) SetWriteDeadline(time.Time) error { return nil }

type stdioAddr string

func (a stdioAddr) Network() string { return "ssh+dial-stdio" }
func (a stdioAddr) String() string  { return string(a) }

// DockerHTTPClient is an HTTP client whose every connection comes from dial, for
// client.WithHTTPClient together with client.WithHost(DockerTunnelHost). Make one per Docker client:
// the Docker client wraps the transport of the http.Client it is given.
func DockerHTTPClient(dial func(ctx context.Context) (net.Conn, error)) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConns:    6,
		IdleConnTimeout: 30 * time.Second,
	}}
}

// NewDockerClient is a Docker API client (with version negotiation) whose connections come from dial.
// WithHost must precede WithHTTPClient: WithHost reconfigures the transport it finds.
func NewDockerClient(dial func(ctx context.Context) (net.Conn, error), opts ...client.Opt) (*client.Client, error) {
	opts = append([]client.Opt{
		client.WithHost(DockerTunnelHost),
		client.WithHTTPClient(DockerHTTPClient(dial)),
		client.WithAPIVersionNegotiation(),
	}, opts...)
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client through ssh tunnel: %w", err)
	}
	return c, nil
}
