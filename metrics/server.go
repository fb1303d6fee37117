package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

// Handler serves, without authentication as upstream does:
//
//	/metrics                     Prometheus text format (GET and HEAD; other methods get 405)
//	/debug/jobs/list             the running jobs, one per line
//	/debug/autoscaler/instances  each runner's autoscaled instances, as JSON ([]RunnerInstances)
//	/-/health                    200 while the manager serves, 503 otherwise
//	/debug/pprof/                Go's profiles
//
// The status page at / is not served here: package status sits in front of this handler (cmd wires
// them), since it observes the manager before the metrics do.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	// A "GET" pattern also answers HEAD; ServeMux answers other methods with 405 and an Allow header.
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /debug/jobs/list", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_ = m.writeJobsList(w)
	})
	mux.HandleFunc("GET /debug/autoscaler/instances", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = m.writeInstances(w)
	})
	mux.HandleFunc("GET /-/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !m.serving.Load() {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Server is the HTTP server on listen_address.
type Server struct {
	log  logrus.FieldLogger
	ln   net.Listener
	http *http.Server
	done chan struct{}
}

// Start listens on addr (host:port, see config.ListenAddress) and serves h until Shutdown. A port
// that cannot be bound is an error at once.
func Start(log logrus.FieldLogger, addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: cannot listen on %s (change listen_address or free the port): %w", addr, err)
	}
	s := &Server{
		log: log, ln: ln, done: make(chan struct{}),
		// No write timeout: /debug/pprof/profile streams for as long as it was asked to.
		http: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("metrics server stopped")
		}
	}()
	log.WithField("address", ln.Addr().String()).Info("metrics server listening (/metrics, /debug/jobs/list, /debug/autoscaler/instances, /-/health, /debug/pprof/)")
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops accepting requests and waits, until ctx ends, for those in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		// Requests still running (a long profile) are cut off.
		_ = s.http.Close()
	}
	<-s.done
	if err != nil {
		return fmt.Errorf("metrics server: shutting down: %w", err)
	}
	return nil
}
