package gitlabsim

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
)

func (s *Server) routeTrace(mux *http.ServeMux) {
	mux.HandleFunc("PATCH /api/v4/jobs/{id}/trace", s.patchTrace)
}

// patchTrace is PATCH /jobs/:id/trace (spec §1.9): strictly append-only. Only the start of
// Content-Range counts; the end is start plus the body length, whatever the header says.
func (s *Server) patchTrace(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "400 Bad request - cannot read the body: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobAuthLocked(w, id, jobToken(r, ""))
	if j == nil {
		return
	}
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		writeError(w, http.StatusBadRequest, "400 Missing header Content-Range")
		return
	}
	startText, _, _ := strings.Cut(cr, "-")
	start, err := strconv.ParseInt(strings.TrimSpace(startText), 10, 64)
	if err != nil || start < 0 {
		writeError(w, http.StatusBadRequest, "400 Bad request - Content-Range must be <start>-<end>")
		return
	}
	// GitLab checks the size limit before the offset (AppendBuildTraceService). Written so that a
	// start near the int64 maximum cannot overflow past the check.
	if limit := s.opts.TraceSizeLimit; limit > 0 && start > limit-int64(len(body)) {
		j.failureReason = "trace_size_exceeded"
		s.finishJobLocked(j, StatusFailed)
		w.Header().Set("Job-Status", j.status)
		writeError(w, http.StatusForbidden, "403 Forbidden - trace size exceeded")
		return
	}
	size := int64(len(j.trace))
	if start != size || s.takeFault(&s.faults.rangeMismatch416) {
		w.Header().Set("Range", "0-"+strconv.FormatInt(size, 10))
		writeError(w, http.StatusRequestedRangeNotSatisfiable, "416 Range Not Satisfiable")
		return
	}
	j.trace = append(j.trace, hideSecrets(body, j.token, s.registrationToken)...)
	s.notifyLocked()
	w.Header().Set("Job-Status", j.status)
	w.Header().Set("Range", "0-"+strconv.Itoa(len(j.trace)))
	w.Header().Set("X-GitLab-Trace-Update-Interval", strconv.Itoa(s.opts.TraceUpdateInterval))
	w.WriteHeader(http.StatusAccepted)
}

// hideSecrets is GitLab's server-side masking of an appended chunk: the job token and the runner
// registration token become as many x characters, so the length (and every offset) is unchanged. A
// token split across two chunks is not found, as in GitLab.
func hideSecrets(chunk []byte, secrets ...string) []byte {
	for _, sec := range secrets {
		if sec != "" && bytes.Contains(chunk, []byte(sec)) {
			chunk = bytes.ReplaceAll(chunk, []byte(sec), bytes.Repeat([]byte("x"), len(sec)))
		}
	}
	return chunk
}
