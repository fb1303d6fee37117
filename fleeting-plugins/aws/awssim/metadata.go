package awssim

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Metadata is one instance's metadata service (IMDS) as far as notices go: IMDSv2 only (a session
// token from PUT /latest/api/token, required on every read, as hardened images configure it), with
// the spot interruption notice and the rebalance recommendation, each answering 404 until issued.
// Serve it with httptest; the plugin reaches it through the instance's SSH connection.
type Metadata struct {
	mu        sync.Mutex
	tokens    map[string]time.Time
	action    map[string]any
	rebalance map[string]any
	reads     int
}

// NewMetadata is a metadata service with no notice.
func NewMetadata() *Metadata { return &Metadata{tokens: map[string]time.Time{}} }

// Rebalance issues a rebalance recommendation.
func (m *Metadata) Rebalance(at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rebalance = map[string]any{"noticeTime": at.UTC().Format(time.RFC3339)}
}

// Interrupt issues a spot interruption notice: action is terminate, stop or hibernate, at the time
// of the reclaim.
func (m *Metadata) Interrupt(action string, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.action = map[string]any{"action": action, "time": at.UTC().Format(time.RFC3339)}
}

// Clear withdraws both notices, as EC2 does once the risk passed (and as a replacement instance,
// which has its own metadata service, would show).
func (m *Metadata) Clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.action, m.rebalance = nil, nil
}

// Reads counts the notice documents asked for with a valid token.
func (m *Metadata) Reads() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads
}

func (m *Metadata) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.URL.Path == "/latest/api/token" {
		ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		if r.Method != http.MethodPut || err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "", http.StatusBadRequest)
			return
		}
		token := rand.Text()
		m.tokens[token] = time.Now().Add(time.Duration(ttl) * time.Second)
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
		_, _ = w.Write([]byte(token))
		return
	}
	if exp, ok := m.tokens[r.Header.Get("X-aws-ec2-metadata-token")]; !ok || time.Now().After(exp) {
		http.Error(w, "", http.StatusUnauthorized)
		return
	}
	var doc map[string]any
	switch r.URL.Path {
	case "/latest/meta-data/spot/instance-action":
		doc = m.action
	case "/latest/meta-data/events/recommendations/rebalance":
		doc = m.rebalance
	}
	m.reads++
	if doc == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_ = json.NewEncoder(w).Encode(doc)
}
