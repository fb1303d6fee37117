package gitlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// maxUpdateInterval caps X-GitLab-Trace-Update-Interval (spec §4.2).
const maxUpdateInterval = 15 * time.Minute

// StatusTransportError is RequestJobResult.Status when no HTTP answer arrived.
const StatusTransportError = -1

// RequestJobResult is the outcome of one POST /jobs/request.
type RequestJobResult struct {
	// Job is the payload of a 201. Job != nil with Err != nil: the payload was malformed but its ID and
	// token are known, so the caller can fail the job instead of leaving it to GitLab's timeout.
	Job *job.Job
	// Status is the HTTP status, or StatusTransportError.
	Status int
	// Healthy is false for 403 and transport errors (spec §1.7.5); the caller counts those.
	Healthy bool
	Err     error
}

// LastUpdate returns the X-GitLab-Last-Update value last seen for a runner token.
func (c *Client) LastUpdate(token string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastUpdate[token]
}

// RequestJob asks GitLab for a job: POST /jobs/request. It sends the last X-GitLab-Last-Update seen for
// this token, so an unchanged queue gets GitLab's cheap 204, and it lets Workhorse hold the request
// (long polling) for up to the transport's 10-minute header timeout.
func (c *Client) RequestJob(ctx context.Context, token, systemID string) RequestJobResult {
	b, err := jsonBody(struct {
		Info       VersionInfo `json:"info"`
		Token      string      `json:"token"`
		SystemID   string      `json:"system_id,omitempty"`
		LastUpdate string      `json:"last_update,omitempty"`
	}{c.infoJSON(), token, systemID, c.LastUpdate(token)})
	if err != nil {
		return RequestJobResult{Status: StatusTransportError, Healthy: true, Err: err}
	}
	resp, err := c.do(ctx, call{method: http.MethodPost, path: "jobs/request", body: b, contentType: "application/json",
		acceptJSON: true, header: runnerHeader(token), runnerToken: token})
	if err != nil {
		// Our own shutdown says nothing about GitLab's health.
		return RequestJobResult{Status: StatusTransportError, Healthy: ctx.Err() != nil, Err: fmt.Errorf("requesting a job: %w", err)}
	}
	defer drain(resp)
	res := RequestJobResult{Status: resp.StatusCode, Healthy: true}
	switch resp.StatusCode {
	case http.StatusCreated:
		if !isJSON(resp) {
			res.Err = fmt.Errorf("requesting a job: GitLab answered 201 with %q instead of application/json", resp.Header.Get("Content-Type"))
			return res
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
		if err != nil {
			res.Err = fmt.Errorf("requesting a job: reading the payload: %w", err)
			return res
		}
		j, err := job.Decode(data)
		// Without its id and token a job can be neither run nor failed from here: GitLab keeps it
		// running until it times out, and only the operator can cancel it.
		switch {
		case j == nil || j.ID == 0:
			if err == nil {
				err = errors.New("the payload has no id")
			}
			res.Err = fmt.Errorf("requesting a job: GitLab handed out a job whose payload names no job id, so it can be neither run nor failed from here "+
				"and stays running in GitLab until it times out: cancel it in GitLab (its log is empty): %w", err)
			return res
		case j.Token == "":
			if err == nil {
				err = errors.New("the payload has no token")
			}
			res.Err = fmt.Errorf("requesting a job: GitLab handed out job %d without its job token, so it can be neither run nor failed from here "+
				"and stays running in GitLab until it times out: cancel job %d in GitLab: %w", j.ID, j.ID, err)
			return res
		case err != nil:
			res.Err = err
		}
		res.Job = j
	case http.StatusNoContent:
	case http.StatusForbidden:
		res.Healthy = false
		res.Err = fmt.Errorf("requesting a job: runner token %s was refused (runner deleted or token revoked?): %w", TokenPrefix(token), statusError(resp))
	case http.StatusConflict:
		res.Err = fmt.Errorf("requesting a job: another runner took the job, will ask again: %w", statusError(resp))
	case http.StatusServiceUnavailable:
		res.Err = fmt.Errorf("requesting a job: GitLab is unavailable: %w", statusError(resp))
	default:
		res.Err = fmt.Errorf("requesting a job: %w", statusError(resp))
	}
	return res
}

func jobHeader(token string) http.Header {
	return http.Header{"Job-Token": {token}}
}

func jobPath(id int64, rest string) string {
	return "jobs/" + strconv.FormatInt(id, 10) + rest
}

// updateInterval reads X-GitLab-Trace-Update-Interval (whole seconds), capped at 15 minutes.
func updateInterval(h http.Header) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h.Get("X-GitLab-Trace-Update-Interval")))
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, maxUpdateInterval)
}

// jobGone reports a Job-Status after which the runner must abort.
func jobGone(h http.Header) bool {
	s := h.Get("Job-Status")
	return s == "canceled" || s == "failed"
}

// UpdateJob reports the job's state: PUT /jobs/:id (spec §1.8), as keep-alive (`running`) or final.
// Transport errors are UpdateFailed (retry), unlike upstream's abort, so a dropped connection cannot
// strand a finished job in `running`.
func (c *Client) UpdateJob(ctx context.Context, jc JobCredentials, u UpdateJobInfo) UpdateJobResult {
	body := struct {
		Info          VersionInfo       `json:"info"`
		Token         string            `json:"token"`
		State         JobState          `json:"state"`
		FailureReason job.FailureReason `json:"failure_reason,omitempty"`
		ExitCode      int               `json:"exit_code,omitempty"`
		Checksum      string            `json:"checksum,omitempty"`
		Output        JobOutput         `json:"output"`
	}{Info: c.infoJSON(), Token: jc.Token, State: u.State, ExitCode: u.ExitCode, Checksum: u.Output.Checksum, Output: u.Output}
	if u.State == JobFailed {
		body.FailureReason = u.FailureReason
	}
	b, err := jsonBody(body)
	if err != nil {
		return UpdateJobResult{State: UpdateFailed}
	}
	log := c.log.WithField("job", jc.ID)
	resp, err := c.do(ctx, call{method: http.MethodPut, path: jobPath(jc.ID, ""), body: b, contentType: "application/json",
		header: jobHeader(jc.Token)})
	if err != nil {
		log.WithError(err).Warn("updating job failed, will retry")
		return UpdateJobResult{State: UpdateFailed}
	}
	defer drain(resp)
	res := UpdateJobResult{
		CancelRequested:   resp.Header.Get("Job-Status") == "canceling",
		NewUpdateInterval: updateInterval(resp.Header),
	}
	switch {
	// A 200 to a final state means GitLab applied it, whatever Job-Status now says (failed, or
	// canceled after canceling); a job that was already gone answers 403.
	case resp.StatusCode == http.StatusForbidden,
		jobGone(resp.Header) && (resp.StatusCode != http.StatusOK || u.State == JobRunning):
		res.State = UpdateAbort
	case resp.StatusCode == http.StatusOK:
		res.State = UpdateSucceeded
	case resp.StatusCode == http.StatusAccepted:
		res.State = UpdateAcceptedButNotCompleted
	case resp.StatusCode == http.StatusPreconditionFailed:
		res.State = UpdateTraceValidationFailed
	case resp.StatusCode == http.StatusNotFound:
		res.State = UpdateNotFound
	default:
		res.State = UpdateFailed
		log.WithField("status", resp.StatusCode).Warn("updating job failed, will retry")
	}
	return res
}

// PatchTrace appends content to the job log at startOffset: PATCH /jobs/:id/trace (spec §1.9). An empty
// content sends nothing.
func (c *Client) PatchTrace(ctx context.Context, jc JobCredentials, content []byte, startOffset int, debugTrace bool) PatchTraceResult {
	if len(content) == 0 {
		return PatchTraceResult{SentOffset: startOffset, State: PatchSucceeded}
	}
	h := jobHeader(jc.Token)
	h.Set("Content-Range", fmt.Sprintf("%d-%d", startOffset, startOffset+len(content)-1))
	resp, err := c.do(ctx, call{
		method: http.MethodPatch, path: jobPath(jc.ID, "/trace"),
		query:       url.Values{"debug_trace": {strconv.FormatBool(debugTrace)}},
		body:        func() (io.Reader, error) { return bytes.NewReader(content), nil },
		contentType: "text/plain", header: h,
	})
	if err != nil {
		c.log.WithField("job", jc.ID).WithError(err).Debug("trace patch failed, will retry")
		return PatchTraceResult{SentOffset: startOffset, State: PatchFailed}
	}
	defer drain(resp)
	res := PatchTraceResult{
		SentOffset:        startOffset,
		CancelRequested:   resp.Header.Get("Job-Status") == "canceling",
		NewUpdateInterval: updateInterval(resp.Header),
	}
	switch {
	case jobGone(resp.Header) || resp.StatusCode == http.StatusForbidden:
		res.State = PatchAbort
	case resp.StatusCode == http.StatusAccepted:
		res.State = PatchSucceeded
		res.SentOffset = startOffset + len(content)
	case resp.StatusCode == http.StatusNotFound:
		res.State = PatchNotFound
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		n, err := rangeEnd(resp.Header.Get("Range"))
		if err != nil {
			c.log.WithField("job", jc.ID).WithError(err).Warn("trace range mismatch without a usable Range header, will retry")
			res.State = PatchFailed
			return res
		}
		res.State = PatchRangeMismatch
		res.SentOffset = n
	default:
		res.State = PatchFailed
	}
	return res
}

// rangeEnd parses GitLab's `Range: 0-<size>` into size. A range without a start, or one that ends
// before it starts, is malformed: resending from its end could skip or repeat part of the log.
func rangeEnd(v string) (int, error) {
	startText, end, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(v), "bytes="), "-")
	if !ok {
		return 0, errors.New("malformed Range header " + strconv.Quote(v))
	}
	start, serr := strconv.Atoi(strings.TrimSpace(startText))
	n, err := strconv.Atoi(strings.TrimSpace(end))
	if serr != nil || err != nil || start < 0 || n < start {
		return 0, errors.New("malformed Range header " + strconv.Quote(v))
	}
	return n, nil
}
