package gitlabsim

import (
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Faults are injected problems. Rates and latency apply to every request except the /sim/ API and
// are decided before the request is handled, so a faulted request changes no state.
type Faults struct {
	ErrorRate float64       // share of answers that are 500, 502 or 503
	Latency   time.Duration // delay before every answer
	DropRate  float64       // share of connections closed without an answer
	// Conflict409 and RateLimit429: the next N POST /jobs/request answers are 409, or 429 with
	// RateLimit-ResetTime 1-2 s ahead.
	Conflict409  int
	RateLimit429 int
	// FinalState202: the first N final-state PUTs of every job answer 202 with
	// X-GitLab-Trace-Update-Interval: 1. TraceValidation412: the first N answer 412 (before any 202).
	FinalState202      int
	TraceValidation412 int
	// RangeMismatch416: the next N trace PATCHes answer 416 even when in order.
	RangeMismatch416 int
	// Artifacts413 and ArtifactsRedirect307: the next N authenticated artifact uploads answer 413, or
	// 307 back to the same URL.
	Artifacts413         int
	ArtifactsRedirect307 int
}

type faultState struct {
	mu               sync.Mutex
	cfg              Faults
	conflict409      int
	rateLimit429     int
	rangeMismatch416 int
	artifacts413     int
	redirect307      int
}

// SetFaults replaces the fault configuration and resets the "next N" counters.
func (s *Server) SetFaults(f Faults) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.cfg = f
	s.faults.conflict409 = f.Conflict409
	s.faults.rateLimit429 = f.RateLimit429
	s.faults.rangeMismatch416 = f.RangeMismatch416
	s.faults.artifacts413 = f.Artifacts413
	s.faults.redirect307 = f.ArtifactsRedirect307
}

func (s *Server) faultConfig() Faults {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.cfg
}

// takeFault consumes one unit of a "next N" counter.
func (s *Server) takeFault(counter *int) bool {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	if *counter > 0 {
		*counter--
		return true
	}
	return false
}

// injectFault delays, drops or fails the request; it returns true when it answered (or hung up).
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request) bool {
	f := s.faultConfig()
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		}
	}
	if f.DropRate > 0 && rand.Float64() < f.DropRate {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler) // the server closes the connection without an answer
		}
		_ = conn.Close()
		return true
	}
	if f.ErrorRate > 0 && rand.Float64() < f.ErrorRate {
		codes := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}
		code := codes[rand.IntN(len(codes))]
		writeError(w, code, http.StatusText(code))
		return true
	}
	return false
}
