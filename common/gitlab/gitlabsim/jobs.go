package gitlabsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// Job statuses as GitLab names them.
const (
	StatusCreated   = "created" // waiting for earlier stages
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusCanceling = "canceling"
	StatusSuccess   = "success"
	StatusFailed    = "failed"
	StatusCanceled  = "canceled"
	StatusSkipped   = "skipped" // an earlier stage did not succeed
)

// JobSpec is a job definition, the sim's equivalent of one job in .gitlab-ci.yml.
type JobSpec struct {
	Name  string
	Stage string // default "test"
	// Repo names a repository made by CreateRepo. Without one the job's project has no repository and
	// GIT_STRATEGY defaults to "none".
	Repo         string
	Image        string
	Services     []job.Image
	BeforeScript []string
	Script       []string
	AfterScript  []string
	Variables    []job.Variable
	Artifacts    []job.Artifact
	Cache        []job.Cache
	// Dependencies are job names whose artifacts this job downloads. In a pipeline nil means every job
	// of the earlier stages (GitLab's default) and an empty non-nil slice means none; for Enqueue they
	// name the latest job with that name.
	Dependencies []string
	Timeout      time.Duration // default one hour
	GitStrategy  string        // GIT_STRATEGY when set
	GitDepth     int           // git_info.depth and GIT_DEPTH when > 0; 0 = full clone
	// QueuedFor is added to the time the job really waited in job_info.time_in_queue_seconds, so that a
	// test can hand out a job that waited long without waiting itself.
	QueuedFor time.Duration
	// ProjectJobsRunning is job_info.project_jobs_running_on_instance_runners_count; empty leaves it out.
	ProjectJobsRunning string
}

// StoredArtifact is one uploaded artifact.
type StoredArtifact struct {
	Type, Format, Filename, ExpireIn string
	Data                             []byte
}

// JobSnapshot is a copy of a job's state.
type JobSnapshot struct {
	ID                         int64
	Name, Stage, Status, Token string
	PipelineID                 int64
	RunnerID                   int64
	SystemID                   string
	Trace                      []byte
	FailureReason              string
	ExitCode                   int
	// Checksum and Bytesize are what the runner last reported in PUT /jobs/:id.
	Checksum  string
	Bytesize  int64
	Artifacts []StoredArtifact
	// Updates counts authenticated PUT /jobs/:id calls.
	Updates int
}

// Finished reports whether the job reached a final state.
func (j JobSnapshot) Finished() bool { return isFinal(j.Status) }

type jobRecord struct {
	id            int64
	spec          JobSpec
	pipeline      *pipeline
	status        string
	token         string
	runnerID      int64
	systemID      string
	queuedAt      time.Time
	trace         []byte
	failureReason string
	exitCode      int
	checksum      string
	bytesize      int64
	artifacts     []StoredArtifact
	updates       int
	finalPuts     int
}

func isFinal(status string) bool {
	switch status {
	case StatusSuccess, StatusFailed, StatusCanceled, StatusSkipped:
		return true
	}
	return false
}

// executing is GitLab's "job may still talk to the API" test: running or canceling.
func (j *jobRecord) executing() bool {
	return j.status == StatusRunning || j.status == StatusCanceling
}

func (j *jobRecord) snapshot() JobSnapshot {
	return JobSnapshot{
		ID: j.id, Name: j.spec.Name, Stage: j.spec.Stage, Status: j.status, Token: j.token,
		PipelineID: j.pipeline.id, RunnerID: j.runnerID, SystemID: j.systemID,
		Trace: bytes.Clone(j.trace), FailureReason: j.failureReason, ExitCode: j.exitCode,
		Checksum: j.checksum, Bytesize: j.bytesize, Artifacts: slices.Clone(j.artifacts), Updates: j.updates,
	}
}

// archive returns the job's stored archive artifact, or nil.
func (j *jobRecord) archive() *StoredArtifact {
	for i := range j.artifacts {
		if j.artifacts[i].Type == "archive" {
			return &j.artifacts[i]
		}
	}
	return nil
}

// Enqueue adds one job that is pending at once, in a pipeline of its own, and returns its id.
func (s *Server) Enqueue(spec JobSpec) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if spec.Stage == "" {
		spec.Stage = "test"
	}
	p := s.newPipelineLocked(s.projectLocked(spec.Repo), []string{spec.Stage})
	p.single = true
	j := s.newJobLocked(p, spec)
	s.advancePipelineLocked(p)
	return j.id
}

func (s *Server) newJobLocked(p *pipeline, spec JobSpec) *jobRecord {
	j := &jobRecord{id: s.nextJobID, spec: spec, pipeline: p, status: StatusCreated, token: "glcbt-" + randomString(24)}
	s.nextJobID++
	s.jobs[j.id] = j
	s.jobOrder = append(s.jobOrder, j.id)
	p.jobs = append(p.jobs, j)
	return j
}

// Job returns a snapshot of one job.
func (s *Server) Job(id int64) (JobSnapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return JobSnapshot{}, false
	}
	return j.snapshot(), true
}

// Jobs returns snapshots of all jobs in creation order.
func (s *Server) Jobs() []JobSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]JobSnapshot, 0, len(s.jobOrder))
	for _, id := range s.jobOrder {
		out = append(out, s.jobs[id].snapshot())
	}
	return out
}

// WaitJob waits until cond holds for the job, or ctx ends (then the last snapshot and ctx's error).
func (s *Server) WaitJob(ctx context.Context, id int64, cond func(JobSnapshot) bool) (JobSnapshot, error) {
	for {
		s.mu.Lock()
		j := s.jobs[id]
		ch := s.changed
		var snap JobSnapshot
		if j != nil {
			snap = j.snapshot()
		}
		s.mu.Unlock()
		if j == nil {
			return snap, fmt.Errorf("gitlabsim: job %d does not exist", id)
		}
		if cond(snap) {
			return snap, nil
		}
		waitChange(ctx, ch, 0)
		if err := ctx.Err(); err != nil {
			return snap, fmt.Errorf("gitlabsim: job %d still %s: %w", id, snap.Status, err)
		}
	}
}

// WaitFinished waits until the job is success, failed or canceled (or skipped).
func (s *Server) WaitFinished(ctx context.Context, id int64) (JobSnapshot, error) {
	return s.WaitJob(ctx, id, JobSnapshot.Finished)
}

// ErrJobFinished is returned by Cancel for a job that already reached a final state.
var ErrJobFinished = errors.New("gitlabsim: job already finished")

// Cancel cancels a job as a user would: pending or created -> canceled; running -> canceling when its
// runner manager declared cancel_gracefully, else canceled; canceling -> canceled (force cancel).
func (s *Server) Cancel(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	if j == nil {
		return fmt.Errorf("gitlabsim: cancel job %d: no such job", id)
	}
	switch j.status {
	case StatusCreated, StatusPending, StatusCanceling:
		s.finishJobLocked(j, StatusCanceled)
	case StatusRunning:
		if s.gracefulLocked(j) {
			j.status = StatusCanceling
			s.notifyLocked()
		} else {
			s.finishJobLocked(j, StatusCanceled)
		}
	default:
		return fmt.Errorf("cancel job %d (%s): %w", id, j.status, ErrJobFinished)
	}
	s.tickQueuesLocked()
	return nil
}

// gracefulLocked reports whether the manager running j declared cancel_gracefully.
func (s *Server) gracefulLocked(j *jobRecord) bool {
	r := s.runners[j.runnerID]
	if r == nil {
		return false
	}
	m := r.managers[j.systemID]
	return m != nil && m.features["cancel_gracefully"]
}

// finishJobLocked moves j to a final state and lets its pipeline go on.
func (s *Server) finishJobLocked(j *jobRecord, status string) {
	j.status = status
	s.advancePipelineLocked(j.pipeline)
	s.notifyLocked()
}

// tickQueuesLocked gives every runner a new queue value, so that a last_update no longer matches.
func (s *Server) tickQueuesLocked() {
	for _, r := range s.runners {
		r.queueValue = randomHex(16)
	}
	s.notifyLocked()
}

func (s *Server) routeJobs(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v4/jobs/request", s.requestJob)
	mux.HandleFunc("PUT /api/v4/jobs/{id}", s.updateJob)
}

// requestJob is POST /jobs/request (spec §1.7): Workhorse's long poll, then Rails' decision sequence.
func (s *Server) requestJob(w http.ResponseWriter, r *http.Request) {
	if s.takeFault(&s.faults.rateLimit429) {
		reset := time.Now().Add(2 * time.Second).UTC()
		w.Header().Set("RateLimit-ResetTime", reset.Format(http.TimeFormat))
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "429 Too Many Requests")
		return
	}
	req, ok := readRunnerRequest(w, r)
	if !ok {
		return
	}
	if s.opts.LongPoll > 0 && req.Token != "" && req.LastUpdate != "" {
		w.Header().Set("Gitlab-Ci-Builds-Polling", "yes")
		if s.longPoll(r.Context(), req.Token, req.LastUpdate) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}

	s.mu.Lock()
	rn := s.runnerByTokenLocked(req.Token)
	if rn == nil {
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	var features map[string]bool
	if req.Info != nil {
		features = req.Info.Features
		if features == nil {
			features = map[string]bool{}
		}
	}
	rn.seeManagerLocked(req.SystemID, features)
	if rn.paused || req.LastUpdate == rn.queueValue {
		v := rn.queueValue
		s.mu.Unlock()
		w.Header().Set("X-GitLab-Last-Update", v)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if s.takeFault(&s.faults.conflict409) {
		s.mu.Unlock()
		writeError(w, http.StatusConflict, "409 Conflict")
		return
	}
	remembered := rn.queueValue
	payload := s.assignLocked(rn, req.SystemID, features)
	s.mu.Unlock()
	if payload == nil {
		w.Header().Set("X-GitLab-Last-Update", remembered)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusCreated, payload)
}

// longPoll holds the request while the runner's queue value equals lastUpdate. It returns true when
// Workhorse would answer 204 itself (the value changed while waiting, or the wait timed out), false
// when the request goes on to the normal flow.
func (s *Server) longPoll(ctx context.Context, token, lastUpdate string) bool {
	deadline := time.Now().Add(s.opts.LongPoll)
	waited := false
	defer func() {
		if waited {
			s.mu.Lock()
			s.heldPolls--
			s.mu.Unlock()
		}
	}()
	for {
		s.mu.Lock()
		rn := s.runnerByTokenLocked(token)
		same := rn != nil && rn.queueValue == lastUpdate
		if same && !waited {
			s.heldPolls++
			s.notifyLocked()
		}
		ch := s.changed
		s.mu.Unlock()
		if !same {
			return waited
		}
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil || s.isClosed() {
			return true
		}
		waited = true
		waitChange(ctx, ch, left)
	}
}

// assignLocked hands the first pending job the runner can run to it, dropping pending jobs whose
// requirements the manager's features do not meet (runner_unsupported), as GitLab does.
func (s *Server) assignLocked(rn *runner, systemID string, features map[string]bool) *job.Job {
	if systemID == "" {
		systemID = "<legacy>"
	}
	for _, id := range s.jobOrder {
		j := s.jobs[id]
		if j.status != StatusPending {
			continue
		}
		if missing := unmetRequirement(j.spec, features); missing != "" {
			s.log.WithFields(map[string]any{"job": j.id, "feature": missing}).Info("dropping job: runner does not declare a required feature")
			j.failureReason = string(job.RunnerUnsupported)
			s.finishJobLocked(j, StatusFailed)
			continue
		}
		j.status = StatusRunning
		j.runnerID = rn.id
		j.systemID = systemID
		s.tickQueuesLocked()
		return s.payloadLocked(j, rn)
	}
	return nil
}

// unmetRequirement names the first feature the job needs that the runner did not declare
// (Ci::Build::RUNNER_FEATURES).
func unmetRequirement(spec JobSpec, features map[string]bool) string {
	for _, a := range spec.Artifacts {
		if a.ArtifactType != "" && a.ArtifactType != "archive" && !features["upload_multiple_artifacts"] {
			return "upload_multiple_artifacts"
		}
		if len(a.Exclude) > 0 && !features["artifacts_exclude"] {
			return "artifacts_exclude"
		}
	}
	for _, c := range spec.Cache {
		if len(c.FallbackKeys) > 0 && !features["fallback_cache_keys"] {
			return "fallback_cache_keys"
		}
	}
	return ""
}

// jobAuth applies GitLab's job authentication (spec §1.8 step 2). On failure it has answered 403,
// with Job-Status when the job exists and the token matches but it is no longer executing.
func (s *Server) jobAuthLocked(w http.ResponseWriter, id int64, token string) *jobRecord {
	j := s.jobs[id]
	if j == nil || token == "" || j.token != token {
		writeError(w, http.StatusForbidden, "403 Forbidden")
		return nil
	}
	if !j.executing() {
		w.Header().Set("Job-Status", j.status)
		writeError(w, http.StatusForbidden, "403 Forbidden - Job is not running")
		return nil
	}
	return j
}

func jobID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "400 Bad request - id is invalid")
		return 0, false
	}
	return id, true
}

// jobToken reads a job token the way Grape does: params[:token], else the JOB-TOKEN header.
func jobToken(r *http.Request, body string) string {
	if body != "" {
		return body
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	return r.Header.Get("JOB-TOKEN")
}

type updateRequest struct {
	Token         string      `json:"token"`
	State         string      `json:"state"`
	FailureReason string      `json:"failure_reason"`
	ExitCode      int         `json:"exit_code"`
	Checksum      string      `json:"checksum"`
	Output        *jobOutput  `json:"output"`
	Info          *runnerInfo `json:"info"`
}

type jobOutput struct {
	Checksum string `json:"checksum"`
	Bytesize int64  `json:"bytesize"`
}

// updateJob is PUT /jobs/:id (spec §1.8).
func (s *Server) updateJob(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	var req updateRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "400 Bad request - invalid JSON body: "+err.Error())
		return
	}
	// Grape validates declared params before the endpoint runs.
	if req.FailureReason != "" && !slices.Contains(serverFailureReasons, req.FailureReason) {
		writeError(w, http.StatusBadRequest, "failure_reason does not have a valid value")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobAuthLocked(w, id, jobToken(r, req.Token))
	if j == nil {
		return
	}
	j.updates++
	if req.Output != nil {
		j.checksum, j.bytesize = req.Output.Checksum, req.Output.Bytesize
	}
	if j.checksum == "" {
		j.checksum = req.Checksum
	}
	status := http.StatusOK
	switch req.State {
	case "running":
	case "success", "failed":
		f := s.faultConfig()
		j.finalPuts++
		switch {
		case j.finalPuts <= f.TraceValidation412:
			status = http.StatusPreconditionFailed
		case j.finalPuts <= f.TraceValidation412+f.FinalState202:
			status = http.StatusAccepted
			w.Header().Set("X-GitLab-Trace-Update-Interval", "1")
		default:
			s.applyFinalStateLocked(j, req)
		}
	default:
		w.Header().Set("Job-Status", j.status)
		writeError(w, http.StatusBadRequest, "400 Bad request - state is invalid")
		return
	}
	s.notifyLocked()
	w.Header().Set("Job-Status", j.status)
	writeStatusBody(w, status)
}

func (s *Server) applyFinalStateLocked(j *jobRecord, req updateRequest) {
	if j.status == StatusCanceling {
		s.finishJobLocked(j, StatusCanceled)
		return
	}
	j.exitCode = req.ExitCode
	if req.State == "success" {
		s.finishJobLocked(j, StatusSuccess)
		return
	}
	j.failureReason = req.FailureReason
	if j.failureReason == "" {
		j.failureReason = string(job.UnknownFailure)
	}
	s.finishJobLocked(j, StatusFailed)
}
