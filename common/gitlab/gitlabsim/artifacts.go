package gitlabsim

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
)

// maxArtifactSize caps one upload (GitLab's default max artifacts size is 100 MB).
const maxArtifactSize = 100 << 20

// artifactTypes are GitLab's job artifact file types a runner may upload.
var artifactTypes = []string{
	"archive", "metadata", "trace", "junit", "sast", "dependency_scanning", "container_scanning", "dast",
	"codequality", "license_scanning", "performance", "metrics", "metrics_referee", "network_referee", "lsif",
	"dotenv", "cobertura", "terraform", "accessibility", "secret_detection", "requirements",
	"coverage_fuzzing", "browser_performance", "load_performance", "api_fuzzing", "cluster_image_scanning",
	"cyclonedx", "requirements_v2", "annotations", "repository_xray", "jacoco",
}

func (s *Server) routeArtifacts(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v4/jobs/{id}/artifacts", s.uploadArtifact)
	mux.HandleFunc("GET /api/v4/jobs/{id}/artifacts", s.downloadArtifacts)
}

// uploadArtifact is POST /jobs/:id/artifacts (spec §1.10): one multipart part named "file", options in
// the query string.
func (s *Server) uploadArtifact(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	a := StoredArtifact{Type: q.Get("artifact_type"), Format: q.Get("artifact_format"), ExpireIn: q.Get("expire_in")}
	if a.Type == "" {
		a.Type = "archive"
	}
	if a.Format == "" {
		a.Format = "zip"
	}
	if !slices.Contains(artifactTypes, a.Type) {
		writeError(w, http.StatusBadRequest, "artifact_type does not have a valid value")
		return
	}
	if !slices.Contains([]string{"raw", "zip", "gzip"}, a.Format) {
		writeError(w, http.StatusBadRequest, "artifact_format does not have a valid value")
		return
	}
	token := jobToken(r, "")
	s.mu.Lock()
	j := s.jobAuthLocked(w, id, token)
	s.mu.Unlock()
	if j == nil {
		return
	}
	if s.takeFault(&s.faults.artifacts413) {
		writeError(w, http.StatusRequestEntityTooLarge, "413 Request Entity Too Large")
		return
	}
	if s.takeFault(&s.faults.redirect307) {
		// GitLab may send the runner elsewhere; the runner repeats the upload to Location.
		w.Header().Set("Location", r.URL.String())
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	filename, data, err := readFilePart(r)
	switch {
	case errors.Is(err, errTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "413 Request Entity Too Large")
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "400 Bad request - "+err.Error())
		return
	}
	a.Filename, a.Data = filename, data

	s.mu.Lock()
	defer s.mu.Unlock()
	if j = s.jobAuthLocked(w, id, token); j == nil {
		return
	}
	if slices.ContainsFunc(j.artifacts, func(o StoredArtifact) bool { return o.Type == a.Type }) {
		writeError(w, http.StatusBadRequest, "Another artifact of the same type already exists")
		return
	}
	j.artifacts = append(j.artifacts, a)
	s.notifyLocked()
	writeStatusBody(w, http.StatusCreated)
}

var (
	errTooLarge    = errors.New("artifact too large")
	errFileMissing = errors.New("file is missing")
)

// readFilePart streams the multipart body and returns the part named "file".
func readFilePart(r *http.Request) (string, []byte, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return "", nil, err
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return "", nil, errFileMissing
		}
		if err != nil {
			return "", nil, err
		}
		if part.FormName() != "file" {
			_ = part.Close()
			continue
		}
		data, err := io.ReadAll(io.LimitReader(part, maxArtifactSize+1))
		if err != nil {
			return "", nil, err
		}
		if len(data) > maxArtifactSize {
			return "", nil, errTooLarge
		}
		name := part.FileName()
		if name == "" {
			name = "artifacts.zip"
		}
		return name, data, nil
	}
}

// downloadArtifacts is GET /jobs/:id/artifacts (spec §1.11): the archive, for the token of a running
// job of the same project (the dependency itself need not run).
func (s *Server) downloadArtifacts(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	token := jobToken(r, "")
	s.mu.Lock()
	var reader *jobRecord
	for _, j := range s.jobs {
		if token != "" && j.token == token {
			reader = j
		}
	}
	target := s.jobs[id]
	var data []byte
	var filename string
	status := http.StatusOK
	switch {
	case reader == nil:
		status = http.StatusUnauthorized
	case target == nil:
		status = http.StatusNotFound
	case !reader.executing() || reader.pipeline.project != target.pipeline.project:
		status = http.StatusForbidden
	default:
		if a := target.archive(); a != nil {
			data, filename = a.Data, a.Filename
		} else {
			status = http.StatusNotFound
		}
	}
	s.mu.Unlock()
	switch status {
	case http.StatusUnauthorized:
		writeError(w, status, "401 Unauthorized")
	case http.StatusForbidden:
		writeError(w, status, "403 Forbidden")
	case http.StatusNotFound:
		writeError(w, status, "404 Not Found")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+filename+`"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		_, _ = w.Write(data)
	}
}
