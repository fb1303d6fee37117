package cache

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/archive"
)

// Remote transfers cache archives through presigned URLs that the manager signed (an S3 cache). The
// URLs carry their signature in the query string, so only their scheme, host and path are ever printed.
type Remote struct {
	// Client does the requests; nil is a client with a connect and response-header timeout.
	Client *http.Client
	// TmpDir holds the archive between the transfer and the extraction or upload.
	TmpDir string
	Out    io.Writer
}

func (r *Remote) client() *http.Client {
	if r.Client != nil {
		return r.Client
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: t}
}

// Display is u without its query string (which holds the signature and the credential scope).
func Display(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.RawQuery, p.Fragment, p.User = "", "", nil
	return p.String()
}

// transportErr is err without the URL net/http puts in it.
func transportErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Download fetches the first of urls that exists and unpacks it into dir; it returns its display
// name. A missing object (404, or 403 AccessDenied where the signer may not list the bucket) moves on to the next
// URL; when none exists it prints that no cache was found and returns "" without error. Any other
// failure (S3 unreachable, a 5xx) is an error: the caller reports it as a warning.
func (r *Remote) Download(ctx context.Context, urls []string, dir string) (string, error) {
	for _, u := range urls {
		name := Display(u)
		tmp, found, err := r.fetch(ctx, u)
		if err != nil {
			return "", fmt.Errorf("download cache %s: %w", name, err)
		}
		if !found {
			fmt.Fprintf(r.Out, "No cache at %s\n", name)
			continue
		}
		fmt.Fprintf(r.Out, "Downloaded cache from %s; extracting...\n", name)
		n, err := archive.ExtractZip(tmp, dir)
		_ = os.Remove(tmp)
		if err != nil {
			return "", fmt.Errorf("extract cache %s: %w", name, err)
		}
		fmt.Fprintf(r.Out, "Successfully extracted cache (%d entries)\n", n)
		return name, nil
	}
	fmt.Fprintln(r.Out, "No cache found")
	return "", nil
}

// fetch GETs u into a temporary file and returns its path, or found=false for a missing object.
func (r *Remote) fetch(ctx context.Context, u string) (string, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", false, errors.New("the presigned URL cannot be parsed")
	}
	resp, err := r.client().Do(req)
	if err != nil {
		return "", false, transportErr(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return "", false, nil
	case http.StatusForbidden:
		// Without s3:ListBucket, S3 answers a missing object with AccessDenied; any other 403 (a bad
		// signature, an expired URL, a skewed clock) is a fault to show.
		if code := s3Code(resp); code != "AccessDenied" {
			return "", false, fmt.Errorf("%s (%s)", resp.Status, code)
		}
		return "", false, nil
	default:
		return "", false, statusErr(resp)
	}
	f, err := r.tempFile()
	if err != nil {
		return "", false, err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return "", false, transportErr(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(f.Name())
		return "", false, err
	}
	return f.Name(), true, nil
}

func (r *Remote) tempFile() (*os.File, error) {
	if err := os.MkdirAll(r.TmpDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the cache's temporary directory: %w", err)
	}
	f, err := os.CreateTemp(r.TmpDir, "cache-*.zip")
	if err != nil {
		return nil, fmt.Errorf("create the cache's temporary file: %w", err)
	}
	return f, nil
}

// Upload archives the files of dir that sel selects and PUTs the archive to u with header (the
// signed headers). An archive over maxSize bytes (0: no limit) is not uploaded, with a warning line;
// with nothing to archive nothing is uploaded either.
func (r *Remote) Upload(ctx context.Context, u string, header http.Header, dir string, sel archive.Selection, maxSize int64) error {
	name := Display(u)
	c, err := archive.Collect(dir, sel)
	if err != nil {
		return err
	}
	for _, p := range c.Unmatched {
		fmt.Fprintf(r.Out, "WARNING: %s: no matching files\n", p)
	}
	if len(c.Entries) == 0 {
		fmt.Fprintln(r.Out, "WARNING: no files to cache; the cache is not saved")
		return nil
	}
	f, err := r.tempFile()
	if err != nil {
		return err
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	fmt.Fprintf(r.Out, "Creating cache archive with %d entries...\n", len(c.Entries))
	if err := archive.WriteZip(f, dir, c.Entries); err != nil {
		return err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if maxSize > 0 && size > maxSize {
		fmt.Fprintf(r.Out, "WARNING: cache archive is %d bytes, over MaxUploadedArchiveSize (%d bytes); not uploading it to %s\n", size, maxSize, name)
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, io.NopCloser(f))
	if err != nil {
		return errors.New("the presigned URL cannot be parsed")
	}
	req.ContentLength = size
	for k, v := range header {
		req.Header[k] = v
	}
	fmt.Fprintf(r.Out, "Uploading cache (%d bytes) to %s...\n", size, name)
	resp, err := r.client().Do(req)
	if err != nil {
		return fmt.Errorf("upload cache to %s: %w", name, transportErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("upload cache to %s: %w", name, statusErr(resp))
	}
	fmt.Fprintln(r.Out, "Created cache")
	return nil
}

// statusErr names an unexpected answer by its status and S3's error code. The rest of S3's error body
// is not shown: for a signature error it repeats the access key ID and the string that was signed.
func statusErr(resp *http.Response) error {
	if code := s3Code(resp); code != "" {
		return fmt.Errorf("%s (%s)", resp.Status, code)
	}
	return errors.New(resp.Status)
}

// s3Code is the Code of S3's XML error body, or "".
func s3Code(resp *http.Response) string {
	var e struct {
		Code string `xml:"Code"`
	}
	_ = xml.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
	return e.Code
}
