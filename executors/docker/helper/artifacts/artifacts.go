// Package artifacts implements the helper's artifacts-upload and artifacts-download against GitLab's
// job artifacts API (POST and GET /api/v4/jobs/:id/artifacts with the JOB-TOKEN header).
package artifacts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/version"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/archive"
)

// Client talks to one GitLab instance with one job token.
type Client struct {
	// URL is GitLab's base URL as in the job payload (CI_SERVER_URL); /api/v4 is appended.
	URL string
	// Token is the job token sent as JOB-TOKEN; it never appears in output or errors.
	Token string
	// Out receives progress lines for the job log.
	Out io.Writer
	// HTTP is the client to use; nil means a client with sane timeouts.
	HTTP *http.Client
	// Attempts bounds tries on retryable failures (5xx, 429, transport errors); 0 means 5.
	Attempts int
	// Backoff is the first wait between tries, doubled each time up to 30s; 0 means 1s.
	Backoff time.Duration

	once sync.Once
	hc   *http.Client
}

const maxRedirects = 5

func (c *Client) apiURL(format string, args ...any) (*url.URL, error) {
	base := strings.TrimSuffix(strings.TrimRight(c.URL, "/"), "/ci")
	u, err := url.Parse(base + "/api/v4" + fmt.Sprintf(format, args...))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("GitLab URL %q is not an http(s) URL; check CI_SERVER_URL", redact(c.URL))
	}
	return u, nil
}

func (c *Client) httpClient() *http.Client {
	c.once.Do(func() { c.hc = c.newHTTPClient() })
	return c.hc
}

func (c *Client) newHTTPClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 10 * time.Minute
	return &http.Client{
		Transport: t,
		// A 307 on an upload is answered by resending the body ourselves (it is streamed, so Go
		// cannot); GET redirects to object storage are followed as usual, but without the job token:
		// Go forwards a custom header such as JOB-TOKEN to any host.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.Method != http.MethodGet {
				return http.ErrUseLastResponse
			}
			if len(via) >= 10 {
				return errors.New("too many redirects")
			}
			if req.URL.Host != via[0].URL.Host {
				req.Header.Del("JOB-TOKEN")
			}
			return nil
		},
	}
}

// attempt runs do until it succeeds, fails finally, or the tries are spent. do reports whether its
// error is worth another try.
func (c *Client) attempt(ctx context.Context, what string, do func() (retry bool, err error)) error {
	attempts, wait := c.Attempts, c.Backoff
	if attempts <= 0 {
		attempts = 5
	}
	if wait <= 0 {
		wait = time.Second
	}
	for i := 1; ; i++ {
		retry, err := do()
		if err == nil || !retry || i >= attempts {
			if err != nil && retry {
				return fmt.Errorf("%s: giving up after %d tries: %w", what, i, err)
			}
			return err
		}
		fmt.Fprintf(c.Out, "WARNING: %s: %v; retrying in %s (try %d of %d)\n", what, err, wait, i+1, attempts)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
}

// statusError describes a failed answer in one line, with GitLab's message when it sent one.
func statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(body))
	var m struct {
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil && len(m.Message) > 0 {
		var s string
		if json.Unmarshal(m.Message, &s) == nil {
			msg = s
		} else {
			msg = string(m.Message)
		}
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	if msg == "" {
		return fmt.Errorf("%s", resp.Status)
	}
	return fmt.Errorf("%s: %s", resp.Status, msg)
}

func retryable(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests
}

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}

// Download fetches job id's artifacts archive and extracts it into dir.
func (c *Client) Download(ctx context.Context, id int64, dir string) error {
	u, err := c.apiURL("/jobs/%d/artifacts", id)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "artifacts-*.zip")
	if err != nil {
		return fmt.Errorf("create temporary file for artifacts: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	fmt.Fprintf(c.Out, "Downloading artifacts of job %d from %s...\n", id, u.Host)
	var size int64
	what := fmt.Sprintf("download artifacts of job %d", id)
	err = c.attempt(ctx, what, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("JOB-TOKEN", c.Token)
		req.Header.Set("User-Agent", version.UserAgent())
		resp, err := c.httpClient().Do(req)
		if err != nil {
			return ctx.Err() == nil, err
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
		case resp.StatusCode == http.StatusNotFound:
			return false, fmt.Errorf("job %d has no artifacts: %w", id, statusError(resp))
		default:
			return retryable(resp.StatusCode), statusError(resp)
		}
		if err := tmp.Truncate(0); err != nil {
			return false, err
		}
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return false, err
		}
		size, err = io.Copy(tmp, resp.Body)
		return ctx.Err() == nil, err
	})
	if err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := archive.ExtractZip(tmp.Name(), dir)
	if err != nil {
		return fmt.Errorf("artifacts of job %d: %w", id, err)
	}
	fmt.Fprintf(c.Out, "Downloaded artifacts of job %d (%d bytes, %d entries)\n", id, size, n)
	return nil
}

// UploadOptions is one entry of the job payload's artifacts.
type UploadOptions struct {
	Name      string // base name of the uploaded file; "" means "default"
	Selection archive.Selection
	ExpireIn  string // e.g. "1 week"; omitted when empty
	Type      string // artifact_type: archive, junit, ...; "" means archive
	Format    archive.Format
}

// FileName is the uploaded file's name: NAME.zip, NAME.gz or NAME.
func (o UploadOptions) FileName() string {
	name := o.Name
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || name == "." || name == ".." {
		name = "default"
	}
	switch o.Format {
	case archive.FormatGzip:
		return name + ".gz"
	case archive.FormatRaw:
		return name
	}
	return name + ".zip"
}

// Upload collects the files of dir that o selects, archives them in o.Format and uploads the archive
// as job id's artifact. No matching file is a warning, not an error.
func (c *Client) Upload(ctx context.Context, id int64, dir string, o UploadOptions) error {
	if o.Type == "" {
		o.Type = "archive"
	}
	u, err := c.apiURL("/jobs/%d/artifacts", id)
	if err != nil {
		return err
	}
	q := url.Values{"artifact_format": {string(o.Format)}, "artifact_type": {o.Type}}
	if o.ExpireIn != "" {
		q.Set("expire_in", o.ExpireIn)
	}
	u.RawQuery = q.Encode()

	col, err := archive.Collect(dir, o.Selection)
	if err != nil {
		return err
	}
	for _, p := range col.Unmatched {
		fmt.Fprintf(c.Out, "WARNING: %s: no matching files\n", p)
	}
	if len(col.Entries) == 0 {
		fmt.Fprintf(c.Out, "WARNING: no files to upload as %s artifact\n", o.Type)
		return nil
	}
	tmp, err := os.CreateTemp("", "artifacts-upload-*")
	if err != nil {
		return fmt.Errorf("create temporary file for the artifacts archive: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := archive.Write(tmp, o.Format, dir, col.Entries); err != nil {
		if errors.Is(err, archive.ErrNoFiles) {
			fmt.Fprintf(c.Out, "WARNING: no regular files to upload as %s artifact\n", o.Type)
			return nil
		}
		return err
	}
	fi, err := tmp.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Out, "Uploading %s (%d entries, %d bytes) as %s artifact of job %d to %s...\n",
		o.FileName(), len(col.Entries), fi.Size(), o.Type, id, u.Host)

	target := u
	redirects := 0
	err = c.attempt(ctx, fmt.Sprintf("upload %s artifact of job %d", o.Type, id), func() (bool, error) {
		for {
			resp, err := c.post(ctx, target, tmp, fi.Size(), o.FileName(), target.Host == u.Host)
			if err != nil {
				return ctx.Err() == nil, err
			}
			code := resp.StatusCode
			if code == http.StatusTemporaryRedirect && redirects < maxRedirects {
				loc, lerr := resp.Location()
				resp.Body.Close()
				if lerr != nil {
					return false, fmt.Errorf("307 without a usable Location: %w", lerr)
				}
				redirects++
				target = loc
				continue
			}
			defer resp.Body.Close()
			if code == http.StatusCreated {
				return false, nil
			}
			err = statusError(resp)
			switch code {
			case http.StatusRequestEntityTooLarge:
				err = fmt.Errorf("%w (the archive is %d bytes, above GitLab's maximum artifacts size)", err, fi.Size())
			case http.StatusForbidden:
				err = fmt.Errorf("%w (job not running any more, or a wrong job token)", err)
			}
			return retryable(code), err
		}
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Out, "Uploaded %s as %s artifact: 201 Created\n", o.FileName(), o.Type)
	return nil
}

// post sends the file as the multipart field "file", streamed.
func (c *Client) post(ctx context.Context, target *url.URL, f *os.File, size int64, name string, withToken bool) (*http.Response, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() {
		defer close(done)
		part, err := mw.CreateFormFile("file", name)
		if err == nil {
			_, err = io.Copy(part, io.NewSectionReader(f, 0, size))
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	// However the request ends, the writer must be finished before the next try reads the file again.
	defer func() {
		pr.Close()
		<-done
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("User-Agent", version.UserAgent())
	if withToken {
		req.Header.Set("JOB-TOKEN", c.Token)
	}
	return c.httpClient().Do(req)
}
