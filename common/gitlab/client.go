// Package gitlab is fleetrunner's client for GitLab's runner API (/api/v4): runner registration and
// verification, job requests, job updates and trace uploads. It follows the header, token, status-code,
// back-off and rate-limit rules of ../shared/spec/gitlab-api.md §0 and §1, so that a real GitLab accepts
// what it sends. Artifacts are uploaded and downloaded inside the job's helper container, by
// executors/docker/helper/artifacts.
package gitlab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/version"
)

// Timeouts of the HTTP transport (spec §0): job requests may be held by Workhorse for a long time.
const (
	responseHeaderTimeout = 10 * time.Minute
	overallTimeout        = 60 * time.Minute
	// maxIdleConns is how many keep-alive connections to GitLab a client keeps idle: enough that the
	// trace patches of hundreds of concurrent jobs reuse connections instead of dialing each time.
	maxIdleConns = 512
	// maxRateLimitRetries bounds the 429 + RateLimit-ResetTime retries of one call.
	maxRateLimitRetries = 5
	// rateLimitFallback is the wait when RateLimit-ResetTime cannot be parsed.
	rateLimitFallback = time.Minute
	// maxResponseBody bounds what is read of any non-artifact answer.
	maxResponseBody = 64 << 20
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// URL is GitLab's base URL; a trailing "/" and "/ci" are stripped and "/api/v4/" appended.
	URL                                string
	TLSCAFile, TLSCertFile, TLSKeyFile string
	// Info is the runner info object sent on register, job request and job update (§1.5).
	Info VersionInfo
	// ConnectionMaxAge is the lifetime of a keep-alive connection (config connection_max_age, see
	// config.Config.GetConnectionMaxAge); 0 keeps connections as long as the server allows.
	ConnectionMaxAge time.Duration
	// Sleep waits for back-off and rate-limit delays; nil means a real, context-aware sleep.
	Sleep func(ctx context.Context, d time.Duration) error
	// OnResponse, when set, is told every HTTP answer: the endpoint in upstream's metric naming
	// (request_job, update_job, patch_trace, …; see Endpoint) and the status. It must return at once.
	OnResponse func(endpoint string, status int)
}

// Client talks to one GitLab instance. It is safe for concurrent use.
type Client struct {
	log       logrus.FieldLogger
	base      *url.URL
	http      *http.Client
	transport *http.Transport
	conns     *connAges
	info      VersionInfo
	sleep     func(ctx context.Context, d time.Duration) error
	onResp    func(endpoint string, status int)

	backoff *backoffs

	mu         sync.Mutex
	lastUpdate map[string]string // runner token -> X-GitLab-Last-Update
}

// NewClient validates cfg and builds a client. It sends nothing.
func NewClient(log logrus.FieldLogger, cfg ClientConfig) (*Client, error) {
	base, err := apiBase(cfg.URL)
	if err != nil {
		return nil, err
	}
	tlsConf, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	tr.ResponseHeaderTimeout = responseHeaderTimeout
	// Every running job patches its trace to the same host; Go's default of 2 idle connections per host
	// made most patches dial anew (and leave sockets in TIME_WAIT) once a few hundred jobs ran at once.
	tr.MaxIdleConns = maxIdleConns
	tr.MaxIdleConnsPerHost = maxIdleConns
	conns := newConnAges(cfg.ConnectionMaxAge)
	tr.DialContext = conns.wrap(tr.DialContext)
	sleep := cfg.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	return &Client{
		log:       log.WithField("gitlab", base.Host),
		base:      base,
		transport: tr,
		conns:     conns,
		http: &http.Client{
			Transport: tr,
			Timeout:   overallTimeout,
			// A redirect to another host (object storage) must not carry the job token.
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 10 {
					return errors.New("stopped after 10 redirects")
				}
				if req.URL.Host != via[0].URL.Host {
					req.Header.Del("JOB-TOKEN")
					req.Header.Del("PRIVATE-TOKEN")
					req.Header.Del("Runner-Token")
				}
				return nil
			},
		},
		info:       cfg.Info,
		onResp:     cfg.OnResponse,
		sleep:      sleep,
		backoff:    newBackoffs(),
		lastUpdate: map[string]string{},
	}, nil
}

// apiBase turns the configured URL into the /api/v4/ base.
func apiBase(raw string) (*url.URL, error) {
	s := strings.TrimRight(strings.TrimSpace(raw), "/")
	s = strings.TrimSuffix(s, "/ci")
	s = strings.TrimRight(s, "/")
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("gitlab url %q is not a valid URL: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("gitlab url %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("gitlab url %q has no host", raw)
	}
	u.Path += "/api/v4/"
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

func tlsConfig(cfg ClientConfig) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading tls-ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls-ca-file %s holds no PEM certificate", cfg.TLSCAFile)
		}
		c.RootCAs = pool
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("tls-cert-file and tls-key-file must be set together")
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading TLS client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// call describes one HTTP request to the API.
type call struct {
	method string
	path   string // relative to the API base, e.g. "jobs/request"
	query  url.Values
	// body makes a fresh request body for every attempt (nil: no body).
	body        func() (io.Reader, error)
	contentType string
	acceptJSON  bool
	header      http.Header
	// runnerToken, when set, keys the X-GitLab-Last-Update store.
	runnerToken string
}

func jsonBody(v any) (func() (io.Reader, error), error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding request: %w", err)
	}
	return func() (io.Reader, error) { return bytes.NewReader(b), nil }, nil
}

func (c *Client) url(path string, q url.Values) *url.URL {
	u := c.base.JoinPath(path)
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u
}

// do sends the call, retrying 429 answers that carry RateLimit-ResetTime, and applies the per-endpoint
// back-off to error statuses and transport errors before returning. The caller closes the response body.
func (c *Client) do(ctx context.Context, cl call) (*http.Response, error) {
	u := c.url(cl.path, cl.query)
	key := cl.method + " " + u.Path
	log := c.log.WithFields(logrus.Fields{"method": cl.method, "path": u.Path})
	for attempt := 0; ; attempt++ {
		resp, reqID, err := c.send(ctx, cl, u)
		if err != nil {
			if ctx.Err() == nil {
				// Callers retry transport errors too; the same back-off keeps those retries polite.
				d := c.backoff.fail(key)
				log.WithError(err).WithField("backoff", d).Debug("request failed")
				_ = c.sleep(ctx, d)
			}
			return nil, err
		}
		if c.onResp != nil {
			c.onResp(Endpoint(cl.method, cl.path), resp.StatusCode)
		}
		log := log.WithFields(logrus.Fields{"status": resp.StatusCode, "request_id": reqID})
		if resp.StatusCode == http.StatusTooManyRequests && attempt < maxRateLimitRetries {
			if reset := resp.Header.Get("RateLimit-ResetTime"); reset != "" {
				drain(resp)
				wait := rateLimitWait(reset, time.Now())
				log.WithField("wait", wait).Warn("GitLab rate limit hit, waiting until it resets")
				if err := c.sleep(ctx, wait); err != nil {
					return nil, err
				}
				continue
			}
		}
		if resp.StatusCode >= 400 {
			d := c.backoff.fail(key)
			log.WithField("backoff", d).Debug("error status, backing off")
			_ = c.sleep(ctx, d)
		} else {
			c.backoff.reset(key)
		}
		if cl.runnerToken != "" {
			if lu := resp.Header.Get("X-GitLab-Last-Update"); lu != "" {
				c.mu.Lock()
				c.lastUpdate[cl.runnerToken] = lu
				c.mu.Unlock()
			}
		}
		return resp, nil
	}
}

// Endpoint names a runner-API call the way upstream's gitlab_runner_api_request_statuses_total labels
// it; path is relative to /api/v4/.
func Endpoint(method, path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case parts[0] == "runners" && strings.HasSuffix(path, "reset_authentication_token"):
		return "reset_token"
	case parts[0] == "runners" && len(parts) == 1 && method == http.MethodPost:
		return "register_runner"
	case parts[0] == "runners" && len(parts) == 1 && method == http.MethodDelete:
		return "unregister_runner"
	case parts[0] == "runners" && len(parts) == 2 && parts[1] == "verify":
		return "verify_runner"
	case parts[0] == "runners" && len(parts) == 2 && parts[1] == "managers":
		return "unregister_runner_manager"
	case parts[0] == "jobs" && len(parts) == 2 && parts[1] == "request":
		return "request_job"
	case parts[0] == "jobs" && len(parts) == 2 && method == http.MethodPut:
		return "update_job"
	case parts[0] == "jobs" && len(parts) == 3 && parts[2] == "trace":
		return "patch_trace"
	}
	return "other"
}

// send performs one attempt and returns the X-Request-Id it sent.
func (c *Client) send(ctx context.Context, cl call, u *url.URL) (*http.Response, string, error) {
	var body io.Reader
	if cl.body != nil {
		b, err := cl.body()
		if err != nil {
			return nil, "", err
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u.String(), body)
	if err != nil {
		return nil, "", fmt.Errorf("building %s %s: %w", cl.method, u.Path, err)
	}
	for k, vs := range cl.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	reqID := strings.ReplaceAll(uuid.NewString(), "-", "")
	req.Header.Set("User-Agent", version.UserAgent())
	req.Header.Set("X-Request-Id", reqID)
	if cl.acceptJSON {
		req.Header.Set("Accept", "application/json")
	}
	if body != nil && cl.contentType != "" {
		req.Header.Set("Content-Type", cl.contentType)
	}
	c.conns.retire(c.transport)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, reqID, fmt.Errorf("%s %s: %w", cl.method, u.Path, err)
	}
	return resp, reqID, nil
}

// rateLimitWait is how long to wait for a RateLimit-ResetTime value (RFC 1123), a minute when it
// cannot be parsed.
func rateLimitWait(v string, now time.Time) time.Duration {
	for _, layout := range []string{time.RFC1123, time.RFC1123Z, http.TimeFormat} {
		if t, err := time.Parse(layout, v); err == nil {
			return max(t.Sub(now), 0)
		}
	}
	return rateLimitFallback
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	_ = resp.Body.Close()
}

// isJSON reports whether the response's media type is exactly application/json.
func isJSON(resp *http.Response) bool {
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// decodeJSON reads a JSON answer with the expected status into v. Any other status, or a body that is
// not application/json, is an error; the body is always consumed and closed.
func decodeJSON(resp *http.Response, want int, v any) error {
	defer drain(resp)
	if resp.StatusCode != want {
		return statusError(resp)
	}
	if !isJSON(resp) {
		return &StatusError{Status: resp.StatusCode, Message: fmt.Sprintf("answer is %q, not application/json", resp.Header.Get("Content-Type"))}
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBody)).Decode(v); err != nil {
		return &StatusError{Status: resp.StatusCode, Message: "invalid JSON answer: " + err.Error()}
	}
	return nil
}

// Errors callers match with errors.Is.
var (
	// ErrForbidden is a 403: the token is unknown, revoked, or the job no longer runs.
	ErrForbidden = errors.New("forbidden")
	// ErrGone is a 410, e.g. registration tokens disabled on the instance.
	ErrGone = errors.New("gone")
	// ErrNotFound is a 404.
	ErrNotFound = errors.New("not found")
)

// StatusError is an unexpected answer: its HTTP status and GitLab's message.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("GitLab answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("GitLab answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Is matches the sentinel errors by status.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrGone:
		return e.Status == http.StatusGone
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	}
	return false
}

// statusError builds a StatusError from an answer, reading GitLab's message from its body.
func statusError(resp *http.Response) *StatusError {
	e := &StatusError{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if isJSON(resp) {
		e.Message = errorMessage(b)
	}
	return e
}

// errorMessage flattens GitLab's `{"message": "..."}`, `{"message": {"field": ["msg", ...]}}` and
// Grape's `{"error": "..."}` bodies into one line.
func errorMessage(b []byte) string {
	var body struct {
		Message json.RawMessage `json:"message"`
		Error   string          `json:"error"`
	}
	if json.Unmarshal(b, &body) != nil {
		return ""
	}
	if len(body.Message) == 0 {
		return body.Error
	}
	var s string
	if json.Unmarshal(body.Message, &s) == nil {
		return s
	}
	var fields map[string][]string
	if json.Unmarshal(body.Message, &fields) == nil {
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, k+": "+strings.Join(fields[k], "; "))
		}
		return strings.Join(parts, "; ")
	}
	return string(body.Message)
}

// TokenPrefix is what may be logged of a token: its first 8 characters at most.
func TokenPrefix(token string) string {
	return token[:min(8, len(token))]
}
