package gitlabsim

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// The inspection API under /sim/ is for the standalone sim and for tests in other languages:
//
//	GET  /sim/jobs               all jobs (without traces)
//	GET  /sim/jobs/{id}          one job with its trace
//	GET  /sim/jobs/{id}/trace    the raw trace
//	POST /sim/jobs               enqueue one job (jobSpecJSON), answers the job
//	POST /sim/jobs/{id}/cancel   cancel a job
//	POST /sim/pipelines          {"jobs": [jobSpecJSON...]}, answers {"id", "job_ids"}
//	GET  /sim/runners            runners and their managers (no tokens)
//	POST /sim/runners            {"description", "paused"}, answers {"id", "token"}
func (s *Server) routeInspect(mux *http.ServeMux) {
	mux.HandleFunc("GET /sim/jobs", s.inspectJobs)
	mux.HandleFunc("GET /sim/jobs/{id}", s.inspectJob)
	mux.HandleFunc("GET /sim/jobs/{id}/trace", s.inspectTrace)
	mux.HandleFunc("POST /sim/jobs", s.inspectEnqueue)
	mux.HandleFunc("POST /sim/jobs/{id}/cancel", s.inspectCancel)
	mux.HandleFunc("POST /sim/pipelines", s.inspectPipeline)
	mux.HandleFunc("GET /sim/runners", s.inspectRunners)
	mux.HandleFunc("POST /sim/runners", s.inspectCreateRunner)
	mux.HandleFunc("/sim/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "404 Not Found")
	})
}

type artifactView struct {
	Type     string `json:"type"`
	Format   string `json:"format"`
	Filename string `json:"filename"`
	ExpireIn string `json:"expire_in,omitempty"`
	Size     int    `json:"size"`
}

type jobView struct {
	ID            int64          `json:"id"`
	Name          string         `json:"name"`
	Stage         string         `json:"stage"`
	Status        string         `json:"status"`
	PipelineID    int64          `json:"pipeline_id"`
	RunnerID      int64          `json:"runner_id,omitempty"`
	SystemID      string         `json:"system_id,omitempty"`
	FailureReason string         `json:"failure_reason,omitempty"`
	ExitCode      int            `json:"exit_code"`
	Checksum      string         `json:"checksum,omitempty"`
	Bytesize      int64          `json:"bytesize"`
	TraceSize     int            `json:"trace_size"`
	Trace         *string        `json:"trace,omitempty"`
	Artifacts     []artifactView `json:"artifacts"`
	Updates       int            `json:"updates"`
}

func viewOf(j JobSnapshot, withTrace bool) jobView {
	v := jobView{
		ID: j.ID, Name: j.Name, Stage: j.Stage, Status: j.Status, PipelineID: j.PipelineID, RunnerID: j.RunnerID,
		SystemID: j.SystemID, FailureReason: j.FailureReason, ExitCode: j.ExitCode, Checksum: j.Checksum,
		Bytesize: j.Bytesize, TraceSize: len(j.Trace), Artifacts: []artifactView{}, Updates: j.Updates,
	}
	if withTrace {
		t := string(j.Trace)
		v.Trace = &t
	}
	for _, a := range j.Artifacts {
		v.Artifacts = append(v.Artifacts, artifactView{a.Type, a.Format, a.Filename, a.ExpireIn, len(a.Data)})
	}
	return v
}

// jobSpecJSON is JobSpec with the .gitlab-ci.yml key names; timeout in seconds.
type jobSpecJSON struct {
	Name         string         `json:"name"`
	Stage        string         `json:"stage"`
	Repo         string         `json:"repo"`
	Image        string         `json:"image"`
	Services     []job.Image    `json:"services"`
	BeforeScript []string       `json:"before_script"`
	Script       []string       `json:"script"`
	AfterScript  []string       `json:"after_script"`
	Variables    []job.Variable `json:"variables"`
	Artifacts    []job.Artifact `json:"artifacts"`
	Cache        []job.Cache    `json:"cache"`
	Dependencies []string       `json:"dependencies"`
	Timeout      int            `json:"timeout"`
	GitStrategy  string         `json:"git_strategy"`
	GitDepth     int            `json:"git_depth"`
}

func (j jobSpecJSON) spec() JobSpec {
	return JobSpec{
		Name: j.Name, Stage: j.Stage, Repo: j.Repo, Image: j.Image, Services: j.Services,
		BeforeScript: j.BeforeScript, Script: j.Script, AfterScript: j.AfterScript, Variables: j.Variables,
		Artifacts: j.Artifacts, Cache: j.Cache, Dependencies: j.Dependencies,
		Timeout: time.Duration(j.Timeout) * time.Second, GitStrategy: j.GitStrategy, GitDepth: j.GitDepth,
	}
}

func (s *Server) inspectJobs(w http.ResponseWriter, _ *http.Request) {
	jobs := s.Jobs()
	out := make([]jobView, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, viewOf(j, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) inspectedJob(w http.ResponseWriter, r *http.Request) (JobSnapshot, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "job id must be a number")
		return JobSnapshot{}, false
	}
	j, ok := s.Job(id)
	if !ok {
		writeError(w, http.StatusNotFound, "404 Job Not Found")
	}
	return j, ok
}

func (s *Server) inspectJob(w http.ResponseWriter, r *http.Request) {
	if j, ok := s.inspectedJob(w, r); ok {
		writeJSON(w, http.StatusOK, viewOf(j, true))
	}
}

func (s *Server) inspectTrace(w http.ResponseWriter, r *http.Request) {
	if j, ok := s.inspectedJob(w, r); ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(j.Trace)
	}
}

func (s *Server) inspectEnqueue(w http.ResponseWriter, r *http.Request) {
	var req jobSpecJSON
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid job: "+err.Error())
		return
	}
	if req.Name == "" || len(req.Script) == 0 {
		writeError(w, http.StatusBadRequest, "a job needs a name and a script")
		return
	}
	j, _ := s.Job(s.Enqueue(req.spec()))
	writeJSON(w, http.StatusCreated, viewOf(j, false))
}

func (s *Server) inspectCancel(w http.ResponseWriter, r *http.Request) {
	j, ok := s.inspectedJob(w, r)
	if !ok {
		return
	}
	if err := s.Cancel(j.ID); err != nil {
		status := http.StatusNotFound
		if errors.Is(err, ErrJobFinished) {
			status = http.StatusConflict
		}
		writeError(w, status, err.Error())
		return
	}
	j, _ = s.Job(j.ID)
	writeJSON(w, http.StatusOK, viewOf(j, false))
}

func (s *Server) inspectPipeline(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Jobs []jobSpecJSON `json:"jobs"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid pipeline: "+err.Error())
		return
	}
	specs := make([]JobSpec, 0, len(req.Jobs))
	for _, j := range req.Jobs {
		specs = append(specs, j.spec())
	}
	p, err := s.CreatePipeline(specs)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": p.ID, "job_ids": p.JobIDs})
}

type runnerView struct {
	ID          int64    `json:"id"`
	Description string   `json:"description"`
	Paused      bool     `json:"paused"`
	Managers    []string `json:"managers"`
}

func (s *Server) inspectRunners(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := make([]runnerView, 0, len(s.runners))
	for _, r := range s.runners {
		v := runnerView{ID: r.id, Description: r.description, Paused: r.paused, Managers: []string{}}
		for id := range r.managers {
			v.Managers = append(v.Managers, id)
		}
		slices.Sort(v.Managers)
		out = append(out, v)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b runnerView) int { return int(a.ID - b.ID) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) inspectCreateRunner(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Description string `json:"description"`
		Paused      bool   `json:"paused"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid runner: "+err.Error())
		return
	}
	id, token := s.CreateRunner(RunnerOptions{Description: req.Description, Paused: req.Paused})
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "token": token})
}
