package gitlabsim

import (
	"net/http"
	"slices"
	"strconv"
	"time"
)

// runner is one registered runner and the managers (hosts, by system_id) that used its token.
type runner struct {
	id             int64
	token          string
	description    string
	paused         bool
	maximumTimeout int           // seconds; 0 = no cap
	tokenLifetime  time.Duration // kept across resets; 0 = never expires
	tokenExpiresAt *time.Time
	managers       map[string]*runnerManager
	queueValue     string // what X-GitLab-Last-Update carries; changes when the queue changes
}

// runnerManager is what GitLab keeps per system_id: the features declared on the last job request.
type runnerManager struct {
	features map[string]bool
}

// RunnerOptions describe a runner created "in the UI".
type RunnerOptions struct {
	Description    string
	Paused         bool
	TokenExpiresAt *time.Time
	// Token is the runner's token; empty creates a random glrt- token. A fixed token lets a standalone
	// simulator that restarts keep the token that a runner's config.toml already holds.
	Token string
}

// CreateRunner creates a runner as the GitLab UI does and returns its id and glrt- token.
func (s *Server) CreateRunner(o RunnerOptions) (id int64, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.newRunnerLocked("glrt-", o.Description, o.Paused)
	if o.Token != "" {
		r.token = o.Token
	}
	if o.TokenExpiresAt != nil {
		t := o.TokenExpiresAt.UTC()
		r.tokenExpiresAt = &t
		r.tokenLifetime = time.Until(t)
	}
	return r.id, r.token
}

// RegistrationToken is the instance's legacy registration token for POST /runners.
func (s *Server) RegistrationToken() string { return s.registrationToken }

// PersonalAccessToken is an administrator's glpat- token, accepted by
// POST /runners/:id/reset_authentication_token.
func (s *Server) PersonalAccessToken() string { return s.adminPAT }

// RevokeRunner deletes the runner that owns token, as an administrator would in the UI.
func (s *Server) RevokeRunner(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, r := range s.runners {
		if r.token == token {
			delete(s.runners, id)
		}
	}
	s.notifyLocked()
}

// RunnerManagers returns the system_ids that used the runner's token, sorted.
func (s *Server) RunnerManagers(runnerID int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.runners[runnerID]
	if r == nil {
		return nil
	}
	var ids []string
	for id := range r.managers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *Server) newRunnerLocked(prefix, description string, paused bool) *runner {
	r := &runner{
		id:          s.nextRunnerID,
		token:       prefix + randomString(20),
		description: description,
		paused:      paused,
		managers:    map[string]*runnerManager{},
		queueValue:  randomHex(16),
	}
	s.nextRunnerID++
	s.runners[r.id] = r
	return r
}

// runnerByTokenLocked finds the runner whose token is valid now.
func (s *Server) runnerByTokenLocked(token string) *runner {
	if token == "" {
		return nil
	}
	for _, r := range s.runners {
		if r.token == token {
			if r.tokenExpiresAt != nil && time.Now().After(*r.tokenExpiresAt) {
				return nil
			}
			return r
		}
	}
	return nil
}

// seeManagerLocked records a runner manager (heartbeat); features replace the stored ones when given.
func (r *runner) seeManagerLocked(systemID string, features map[string]bool) {
	if systemID == "" {
		systemID = "<legacy>"
	}
	m := r.managers[systemID]
	if m == nil {
		m = &runnerManager{}
		r.managers[systemID] = m
	}
	if features != nil {
		m.features = features
	}
}

// runnerRequest is the body shared by the /runners endpoints and /jobs/request.
type runnerRequest struct {
	Token          string      `json:"token"`
	SystemID       string      `json:"system_id"`
	Description    string      `json:"description"`
	Paused         *bool       `json:"paused"`
	Active         *bool       `json:"active"`
	MaximumTimeout int         `json:"maximum_timeout"`
	LastUpdate     string      `json:"last_update"`
	Info           *runnerInfo `json:"info"`
}

type runnerInfo struct {
	Name     string          `json:"name"`
	Version  string          `json:"version"`
	Executor string          `json:"executor"`
	Features map[string]bool `json:"features"`
}

// readRunnerRequest parses the JSON body; like Grape's params, the query string may carry the token.
func readRunnerRequest(w http.ResponseWriter, r *http.Request) (runnerRequest, bool) {
	var req runnerRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "400 Bad request - invalid JSON body: "+err.Error())
		return req, false
	}
	if req.Token == "" {
		req.Token = r.URL.Query().Get("token")
	}
	return req, true
}

type tokenAnswer struct {
	ID             int64   `json:"id,omitempty"`
	Token          string  `json:"token"`
	TokenExpiresAt *string `json:"token_expires_at"`
}

func (r *runner) answer(withID bool) tokenAnswer {
	a := tokenAnswer{Token: r.token}
	if withID {
		a.ID = r.id
	}
	if r.tokenExpiresAt != nil {
		v := r.tokenExpiresAt.Format(time.RFC3339)
		a.TokenExpiresAt = &v
	}
	return a
}

func (s *Server) routeRunners(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v4/runners", s.registerRunner)
	mux.HandleFunc("POST /api/v4/runners/verify", s.verifyRunner)
	mux.HandleFunc("DELETE /api/v4/runners", s.deleteRunner)
	mux.HandleFunc("DELETE /api/v4/runners/managers", s.deleteRunnerManager)
	mux.HandleFunc("POST /api/v4/runners/reset_authentication_token", s.resetRunnerToken)
	mux.HandleFunc("POST /api/v4/runners/{id}/reset_authentication_token", s.resetRunnerTokenWithPAT)
}

// registerRunner is the legacy POST /runners with a registration token (spec §1.1).
func (s *Server) registerRunner(w http.ResponseWriter, r *http.Request) {
	req, ok := readRunnerRequest(w, r)
	if !ok {
		return
	}
	if req.Token == "" {
		writeError(w, http.StatusBadRequest, "400 Bad request - token is missing")
		return
	}
	if req.Paused != nil && req.Active != nil {
		writeError(w, http.StatusBadRequest, "400 Bad request - paused, active are mutually exclusive")
		return
	}
	if req.Token != s.registrationToken {
		writeError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	paused := (req.Paused != nil && *req.Paused) || (req.Active != nil && !*req.Active)
	s.mu.Lock()
	rn := s.newRunnerLocked("glrtr-", req.Description, paused)
	rn.maximumTimeout = req.MaximumTimeout
	a := rn.answer(true)
	s.notifyLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, a)
}

// verifyRunner is POST /runners/verify (spec §1.2): a heartbeat for the runner and its manager.
func (s *Server) verifyRunner(w http.ResponseWriter, r *http.Request) {
	req, ok := readRunnerRequest(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	rn := s.runnerByTokenLocked(req.Token)
	if rn == nil {
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	rn.seeManagerLocked(req.SystemID, nil)
	a := rn.answer(true)
	s.notifyLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, a)
}

// deleteRunner is DELETE /runners (spec §1.3).
func (s *Server) deleteRunner(w http.ResponseWriter, r *http.Request) {
	req, ok := readRunnerRequest(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	rn := s.runnerByTokenLocked(req.Token)
	if rn != nil {
		delete(s.runners, rn.id)
		s.notifyLocked()
	}
	s.mu.Unlock()
	if rn == nil {
		writeError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteRunnerManager is DELETE /runners/managers (spec §1.4).
func (s *Server) deleteRunnerManager(w http.ResponseWriter, r *http.Request) {
	req, ok := readRunnerRequest(w, r)
	if !ok {
		return
	}
	if req.Token == "" || req.SystemID == "" {
		writeError(w, http.StatusBadRequest, "400 Bad request - token and system_id are required")
		return
	}
	s.mu.Lock()
	rn := s.runnerByTokenLocked(req.Token)
	status := http.StatusNoContent
	switch {
	case rn == nil:
		status = http.StatusForbidden
	case rn.managers[req.SystemID] == nil:
		status = http.StatusNotFound
	default:
		delete(rn.managers, req.SystemID)
		s.notifyLocked()
	}
	s.mu.Unlock()
	switch status {
	case http.StatusForbidden:
		writeError(w, status, "403 Forbidden")
	case http.StatusNotFound:
		writeError(w, status, "404 Runner Manager Not Found")
	default:
		w.WriteHeader(status)
	}
}

// resetRunnerToken is POST /runners/reset_authentication_token (spec §1.6): the old token dies at once.
func (s *Server) resetRunnerToken(w http.ResponseWriter, r *http.Request) {
	req, ok := readRunnerRequest(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	rn := s.runnerByTokenLocked(req.Token)
	if rn == nil {
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	a := s.rotateLocked(rn)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, a)
}

// resetRunnerTokenWithPAT is the PRIVATE-TOKEN variant addressed by runner id.
func (s *Server) resetRunnerTokenWithPAT(w http.ResponseWriter, r *http.Request) {
	pat := r.Header.Get("PRIVATE-TOKEN")
	if pat == "" || pat != s.adminPAT {
		writeError(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	s.mu.Lock()
	rn := s.runners[id]
	if err != nil || rn == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "404 Runner Not Found")
		return
	}
	a := s.rotateLocked(rn)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, a)
}

func (s *Server) rotateLocked(rn *runner) tokenAnswer {
	prefix := "glrt-"
	if len(rn.token) > 6 && rn.token[:6] == "glrtr-" {
		prefix = "glrtr-"
	}
	rn.token = prefix + randomString(20)
	if rn.tokenLifetime > 0 {
		t := time.Now().Add(rn.tokenLifetime).UTC()
		rn.tokenExpiresAt = &t
	}
	s.notifyLocked()
	return rn.answer(false)
}
