package gitlab

import (
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
)

// Upload retry bounds: 5xx, 429 and transport errors are retried; 307 redirects are followed.
const (
	maxUploadAttempts  = 3
	maxUploadRedirects = 5
)

// UploadOptions describe one artifact upload (spec §1.10).
type UploadOptions struct {
	// Name is the archive's file name, e.g. artifacts.zip or junit.xml.gz.
	Name string
	// Type is artifact_type (archive, junit, dotenv, ...); empty = archive.
	Type string
	// Format is artifact_format: zip, gzip or raw; empty = zip.
	Format string
	// ExpireIn is GitLab duration text such as "1 week"; empty = project default.
	ExpireIn string
}

// UploadArtifacts streams body as a multipart upload: POST /jobs/:id/artifacts. A 307 is followed;
// 413, 403 and 400 are final (*StatusError, matchable with ErrTooLarge/ErrForbidden); 5xx, 429 and
// transport errors are retried. A body that is not an io.ReadSeeker is spooled to a temporary file
// first so that it can be sent again.
func (c *Client) UploadArtifacts(ctx context.Context, jc JobCredentials, body io.Reader, o UploadOptions) error {
	rs, cleanup, err := seekable(body)
	if err != nil {
		return fmt.Errorf("uploading artifacts %s: %w", o.Name, err)
	}
	defer cleanup()
	name := o.Name
	if name == "" {
		name = "artifacts.zip"
	}
	q := url.Values{}
	if o.Type != "" {
		q.Set("artifact_type", o.Type)
	}
	if o.Format != "" {
		q.Set("artifact_format", o.Format)
	}
	if o.ExpireIn != "" {
		q.Set("expire_in", o.ExpireIn)
	}
	stopWriter := func() {}
	defer func() { stopWriter() }()
	// One boundary for every attempt, so the content type is fixed before the body exists.
	boundary := multipart.NewWriter(io.Discard).Boundary()
	cl := call{
		method: http.MethodPost, path: jobPath(jc.ID, "/artifacts"), query: q, header: jobHeader(jc.Token),
		contentType: "multipart/form-data; boundary=" + boundary,
		body: func() (io.Reader, error) {
			// The previous attempt's writer must be done with rs before it is rewound.
			stopWriter()
			if _, err := rs.Seek(0, io.SeekStart); err != nil {
				return nil, err
			}
			pr, pw := io.Pipe()
			mw := multipart.NewWriter(pw)
			if err := mw.SetBoundary(boundary); err != nil {
				return nil, err
			}
			done := make(chan struct{})
			stopWriter = func() {
				_ = pr.Close()
				<-done
			}
			go func() {
				defer close(done)
				part, err := mw.CreateFormFile("file", name)
				if err == nil {
					_, err = io.Copy(part, rs)
				}
				if err == nil {
					err = mw.Close()
				}
				pw.CloseWithError(err)
			}()
			return pr, nil
		},
	}
	what := fmt.Sprintf("uploading artifacts %s of job %d", name, jc.ID)
	u := c.url(cl.path, cl.query)
	redirects := 0
	var lastErr error
	for attempt := 1; attempt <= maxUploadAttempts; {
		resp, err := c.doURL(ctx, cl, u)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			lastErr = err
			attempt++
			continue
		}
		switch {
		case resp.StatusCode == http.StatusCreated:
			drain(resp)
			return nil
		case resp.StatusCode == http.StatusTemporaryRedirect:
			loc, err := resp.Location()
			drain(resp)
			if err != nil {
				return fmt.Errorf("%s: redirect without a usable Location: %w", what, err)
			}
			if redirects++; redirects > maxUploadRedirects {
				return fmt.Errorf("%s: too many redirects", what)
			}
			u = loc
			continue
		}
		se := statusError(resp)
		drain(resp)
		if !se.Retryable() {
			return fmt.Errorf("%s: %w", what, se)
		}
		lastErr = se
		attempt++
	}
	return fmt.Errorf("%s: giving up after %d attempts: %w", what, maxUploadAttempts, lastErr)
}

// seekable returns body as an io.ReadSeeker, spooling it to a temporary file when it is not one.
func seekable(body io.Reader) (io.ReadSeeker, func(), error) {
	if rs, ok := body.(io.ReadSeeker); ok {
		return rs, func() {}, nil
	}
	f, err := os.CreateTemp("", "fleetrunner-artifacts-*")
	if err != nil {
		return nil, nil, fmt.Errorf("spooling the archive to a temporary file: %w", err)
	}
	cleanup := func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	if _, err := io.Copy(f, body); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("spooling the archive to a temporary file: %w", err)
	}
	return f, cleanup, nil
}

// DownloadArtifacts writes the artifacts archive of job jc.ID to w: GET /jobs/:id/artifacts, with the
// job token given in the dependency entry. directDownload nil omits the query (server default).
// Redirects to object storage are followed without the job token. 5xx, 429 and transport errors before
// any byte was written are retried; a 404 matches ErrNotFound, a 403 ErrForbidden.
func (c *Client) DownloadArtifacts(ctx context.Context, jc JobCredentials, w io.Writer, directDownload *bool) error {
	q := url.Values{}
	if directDownload != nil {
		q.Set("direct_download", strconv.FormatBool(*directDownload))
	}
	what := fmt.Sprintf("downloading artifacts of job %d", jc.ID)
	var lastErr error
	for attempt := 1; attempt <= maxUploadAttempts; attempt++ {
		resp, err := c.do(ctx, call{method: http.MethodGet, path: jobPath(jc.ID, "/artifacts"), query: q, header: jobHeader(jc.Token)})
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			lastErr = err
			continue
		}
		if resp.StatusCode != http.StatusOK {
			se := statusError(resp)
			drain(resp)
			if !se.Retryable() {
				return fmt.Errorf("%s: %w", what, se)
			}
			lastErr = se
			continue
		}
		_, err = io.Copy(w, resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	return fmt.Errorf("%s: giving up after %d attempts: %w", what, maxUploadAttempts, lastErr)
}
