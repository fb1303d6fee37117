// Package gitlabsim is a GitLab simulator for the runner API (/api/v4, spec gitlab-api.md): runners and
// their tokens, a job queue fed from Go or from a .gitlab-ci.yml subset, job states including
// canceling, the append-only trace, an artifact store, git repositories over smart HTTP and fault
// injection. Tests, benchmarks and `make demo` talk to it over loopback with the real client.
package gitlabsim

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/logging"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Addr is the listen address; default "127.0.0.1:0".
	Addr string
	// DataDir holds the git repositories; default a temporary directory that Close removes.
	DataDir string
	// TraceUpdateInterval is sent as X-GitLab-Trace-Update-Interval (seconds); default 3.
	TraceUpdateInterval int
	// LongPoll holds POST /jobs/request the way Workhorse does while nothing changes; 0 = off.
	LongPoll time.Duration
	// TraceSizeLimit is the job log limit in bytes; 0 = unlimited. A PATCH beyond it fails the job
	// with trace_size_exceeded and answers 403.
	TraceSizeLimit int64
	// Logger receives one debug line per request; nil discards.
	Logger logrus.FieldLogger
}

// Server is a running simulator. All methods are safe for concurrent use.
type Server struct {
	opts     Options
	log      logrus.FieldLogger
	ln       net.Listener
	http     *http.Server
	url      string
	dataDir  string
	ownsData bool

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change; waiters watch it

	registrationToken string
	adminPAT          string
	runners           map[int64]*runner
	nextRunnerID      int64

	jobs           map[int64]*jobRecord
	jobOrder       []int64
	nextJobID      int64
	nextPipelineID int64
	projects       map[string]*project // by path
	nextProjectID  int64

	faults    faultState
	heldPolls int // job requests held by the long poll, for tests
	closed    bool

	backendOnce sync.Once
	backendPath string
	backendErr  error
}

// New starts a simulator; it is listening when New returns.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.TraceUpdateInterval <= 0 {
		opts.TraceUpdateInterval = 3
	}
	log := logging.Or(opts.Logger)
	s := &Server{
		opts:              opts,
		log:               log.WithField("component", "gitlabsim"),
		changed:           make(chan struct{}),
		registrationToken: "GR1348941" + randomString(20),
		adminPAT:          "glpat-" + randomString(20),
		runners:           map[int64]*runner{},
		nextRunnerID:      1,
		jobs:              map[int64]*jobRecord{},
		nextJobID:         1001,
		nextPipelineID:    501,
		projects:          map[string]*project{},
		nextProjectID:     1,
	}
	s.dataDir = opts.DataDir
	if s.dataDir == "" {
		d, err := os.MkdirTemp("", "gitlabsim-")
		if err != nil {
			return nil, fmt.Errorf("gitlabsim: create data directory (set Options.DataDir to a writable path): %w", err)
		}
		s.dataDir, s.ownsData = d, true
	} else if err := os.MkdirAll(s.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("gitlabsim: create data directory %s: %w", s.dataDir, err)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		s.removeData()
		return nil, fmt.Errorf("gitlabsim: listen on %s (choose another --listen address): %w", opts.Addr, err)
	}
	s.ln = ln
	s.url = "http://" + ln.Addr().String()
	s.http = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.WithError(err).Error("gitlabsim stopped serving")
		}
	}()
	return s, nil
}

// URL is the base URL, e.g. http://127.0.0.1:PORT (configure it as the runner's GitLab URL).
func (s *Server) URL() string { return s.url }

// Close stops the server, ends long polls and removes a temporary data directory.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.notifyLocked()
	s.mu.Unlock()
	err := s.http.Close()
	s.removeData()
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) removeData() {
	if s.ownsData {
		_ = os.RemoveAll(s.dataDir)
	}
}

// handler routes the runner API, git over HTTP and the inspection API. Faults and X-Request-Id wrap
// everything; faults leave /sim/ alone so that tests can always inspect.
func (s *Server) handler() http.Handler {
	api := http.NewServeMux()
	s.routeRunners(api)
	s.routeJobs(api)
	s.routeTrace(api)
	s.routeArtifacts(api)
	api.HandleFunc("/", s.serveGitOrNotFound)

	sim := http.NewServeMux()
	s.routeInspect(sim)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", strings.ReplaceAll(uuid.NewString(), "-", ""))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		defer func() {
			s.log.WithFields(logrus.Fields{
				"method": r.Method, "path": r.URL.Path, "status": rec.status,
				"duration": time.Since(start).Round(time.Millisecond).String(),
			}).Debug("request")
		}()
		if strings.HasPrefix(r.URL.Path, "/sim/") {
			sim.ServeHTTP(rec, r)
			return
		}
		if s.injectFault(rec, r) {
			return
		}
		api.ServeHTTP(rec, r)
	})
}

// notifyLocked wakes every waiter (WaitJob, long polls). Callers hold s.mu.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitChange blocks until the state changes, ctx ends or d passes (d <= 0: no limit).
func waitChange(ctx context.Context, ch <-chan struct{}, d time.Duration) {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ch:
	case <-ctx.Done():
	case <-timer:
	}
}

// writeJSON answers with a JSON body and the Content-Type the runner insists on.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeStatusBody answers the way Grape does for `status N; body N.to_s`: the code as a JSON number.
func writeStatusBody(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "%d", status)
}

// writeError answers GitLab's error shape {"message": "..."}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}

// readJSON decodes a request body of at most 1 MiB into v. An empty body leaves v untouched.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomString returns n characters a token masker treats as token characters.
func randomString(n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(tokenAlphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(fmt.Sprintf("gitlabsim: crypto/rand failed: %v", err))
		}
		b[i] = tokenAlphabet[v.Int64()]
	}
	return string(b)
}

// randomHex returns n hex characters (queue values).
func randomHex(n int) string {
	return strings.ReplaceAll(uuid.NewString(), "-", "")[:n]
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (hijack for dropped connections).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
