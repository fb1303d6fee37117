package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/archive"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/artifacts"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/cache"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/gitsource"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/workdir"
)

func runGetSources(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("get-sources")
	var o gitsource.Options
	var refspecs stringList
	var strategy, submodules string
	fs.StringVar(&o.Dir, "dir", "", "build directory")
	fs.StringVar(&o.RepoURL, "repo-url", "", "repository URL, with the job token as user info")
	fs.StringVar(&o.SHA, "sha", "", "commit to check out")
	fs.StringVar(&o.Ref, "ref", "", "branch or tag name")
	fs.StringVar(&o.RefType, "ref-type", "branch", "branch or tag")
	fs.IntVar(&o.Depth, "depth", 0, "fetch depth, 0 for full history")
	fs.Var(&refspecs, "refspec", "refspec to fetch (repeatable)")
	fs.StringVar(&strategy, "strategy", "fetch", "clone, fetch, none or empty")
	fs.BoolVar(&o.Checkout, "checkout", true, "check out the commit")
	fs.StringVar(&submodules, "submodules", "none", "none, normal or recursive")
	var token string
	fs.StringVar(&token, "token", "", "job token for --repo-url's user info; \"-\" reads it from stdin")
	if err := parse(fs, args, map[string]*string{"dir": &o.Dir}); err != nil {
		return err
	}
	if token != "" {
		var err error
		if token, err = secret(token); err != nil {
			return err
		}
		u, err := url.Parse(o.RepoURL)
		if err != nil {
			return errors.New("the repository URL cannot be parsed; check git_info.repo_url")
		}
		user := "gitlab-ci-token"
		if u.User != nil && u.User.Username() != "" {
			user = u.User.Username()
		}
		u.User = url.UserPassword(user, token)
		o.RepoURL = u.String()
	}
	o.RefSpecs = refspecs
	o.Strategy = gitsource.Strategy(strategy)
	o.Submodules = gitsource.Submodules(submodules)
	o.Out = out
	return gitsource.Get(ctx, o)
}

func runCacheExtract(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("cache-extract")
	var dir, urls, tmpDir string
	var files stringList
	fs.StringVar(&dir, "dir", "", "project directory")
	fs.Var(&files, "file", "cache archive; the first that exists is used (repeatable)")
	fs.StringVar(&urls, "urls", "", "\"-\" reads presigned download URLs from stdin, one a line; the first that exists is used")
	fs.StringVar(&tmpDir, "tmp-dir", "", "directory for the downloaded archive (with --urls)")
	if err := parse(fs, args, map[string]*string{"dir": &dir}); err != nil {
		return err
	}
	if urls != "" {
		list, err := secretLines(urls, tmpDir)
		if err != nil {
			return err
		}
		_, err = (&cache.Remote{TmpDir: tmpDir, Out: out}).Download(ctx, list, dir)
		return err
	}
	if len(files) == 0 {
		return errors.New("missing --file or --urls")
	}
	_, err := cache.Extract(dir, files, out)
	return err
}

func runCacheArchive(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("cache-archive")
	var dir, file, upload, tmpDir string
	var sel archive.Selection
	var paths, headers stringList
	var maxSize int64
	fs.StringVar(&dir, "dir", "", "project directory")
	fs.StringVar(&file, "file", "", "cache archive to write")
	fs.StringVar(&upload, "url", "", "\"-\" reads a presigned upload URL from stdin; the archive is uploaded there instead of --file")
	fs.Var(&headers, "header", "\"Name: value\" header signed with --url (repeatable)")
	fs.Int64Var(&maxSize, "max-size", 0, "largest archive uploaded to --url, in bytes; 0 is no limit")
	fs.StringVar(&tmpDir, "tmp-dir", "", "directory for the archive before its upload (with --url)")
	fs.Var(&paths, "path", "path or glob relative to the project directory (repeatable)")
	fs.BoolVar(&sel.Untracked, "untracked", false, "add files git does not track")
	if err := parse(fs, args, map[string]*string{"dir": &dir}); err != nil {
		return err
	}
	sel.Paths = paths
	if upload == "" {
		if file == "" {
			return errors.New("missing --file or --url")
		}
		return cache.Archive(dir, file, sel, out)
	}
	list, err := secretLines(upload, tmpDir)
	if err != nil {
		return err
	}
	h := http.Header{}
	for _, kv := range headers {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return fmt.Errorf("--header %q is not \"Name: value\"", kv)
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return (&cache.Remote{TmpDir: tmpDir, Out: out}).Upload(ctx, list[0], h, dir, sel, maxSize)
}

// secretLines reads the presigned URLs a "-" flag stands for from stdin, one a line, and checks that
// tmpDir, where the archive goes, was given. The URLs carry signatures, so they never go on the
// command line.
func secretLines(v, tmpDir string) ([]string, error) {
	if v != "-" {
		return nil, errors.New("presigned URLs are read from stdin only; pass \"-\"")
	}
	if tmpDir == "" {
		return nil, errors.New("missing --tmp-dir")
	}
	b, err := io.ReadAll(io.LimitReader(secretInput, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the presigned URLs from stdin: %w", err)
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no presigned URL on stdin")
	}
	return out, nil
}

// jobFlags are the flags both artifacts commands share.
func jobFlags(fs *flag.FlagSet, c *artifacts.Client, id, dir *string) {
	fs.StringVar(&c.URL, "url", "", "GitLab URL (CI_SERVER_URL)")
	fs.StringVar(id, "id", "", "job ID")
	fs.StringVar(&c.Token, "token", "", "job token; \"-\" reads it from stdin")
	fs.StringVar(dir, "dir", "", "project directory")
}

// secretInput is where a "-" token is read from.
var secretInput io.Reader = os.Stdin

// secret returns a token flag's value; "-" reads it from the first line of stdin, which keeps it out of
// the helper container's command line and environment (both visible to anyone who can inspect it).
func secret(v string) (string, error) {
	if v != "-" {
		return v, nil
	}
	line, err := bufio.NewReader(io.LimitReader(secretInput, 64<<10)).ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		return "", fmt.Errorf("read the job token from stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func jobID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("--id %q is not a job ID", s)
	}
	return id, nil
}

func runArtifactsDownload(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("artifacts-download")
	c := &artifacts.Client{Out: out}
	var id, dir string
	jobFlags(fs, c, &id, &dir)
	if err := parse(fs, args, map[string]*string{"url": &c.URL, "id": &id, "token": &c.Token, "dir": &dir}); err != nil {
		return err
	}
	n, err := jobID(id)
	if err != nil {
		return err
	}
	if c.Token, err = secret(c.Token); err != nil {
		return err
	}
	return c.Download(ctx, n, dir)
}

func runArtifactsUpload(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("artifacts-upload")
	c := &artifacts.Client{Out: out}
	var id, dir, format string
	var o artifacts.UploadOptions
	var paths, exclude stringList
	jobFlags(fs, c, &id, &dir)
	fs.StringVar(&o.Name, "name", "", "artifact name (base of the uploaded file name)")
	fs.Var(&paths, "path", "path or glob relative to the project directory (repeatable)")
	fs.Var(&exclude, "exclude", "glob of paths to leave out (repeatable)")
	fs.BoolVar(&o.Selection.Untracked, "untracked", false, "add files git does not track")
	fs.StringVar(&o.ExpireIn, "expire-in", "", "expiry, e.g. \"1 week\"")
	fs.StringVar(&o.Type, "type", "archive", "artifact type: archive, junit, ...")
	fs.StringVar(&format, "format", "zip", "zip, gzip or raw")
	if err := parse(fs, args, map[string]*string{"url": &c.URL, "id": &id, "token": &c.Token, "dir": &dir}); err != nil {
		return err
	}
	n, err := jobID(id)
	if err != nil {
		return err
	}
	if c.Token, err = secret(c.Token); err != nil {
		return err
	}
	if o.Format, err = archive.ParseFormat(format); err != nil {
		return err
	}
	o.Selection.Paths, o.Selection.Exclude = paths, exclude
	return c.Upload(ctx, n, dir, o)
}

func runWorkdir(_ context.Context, args []string, out io.Writer) error {
	fs := newFlags("workdir")
	var base, owner string
	var dirs stringList
	fs.StringVar(&base, "base", "", "builds directory the directories are in")
	fs.Var(&dirs, "dir", "directory to create and open (repeatable)")
	fs.StringVar(&owner, "owner", "", "numeric uid:gid to give the directories to; world-writable when empty")
	if err := parse(fs, args, map[string]*string{"base": &base}); err != nil {
		return err
	}
	var o *workdir.Owner
	if owner != "" {
		parsed, err := workdir.ParseOwner(owner)
		if err != nil {
			return err
		}
		o = &parsed
	}
	if err := workdir.Prepare(base, dirs, o); err != nil {
		return err
	}
	if o != nil {
		_, err := fmt.Fprintf(out, "Gave the project directory to %s\n", owner)
		return err
	}
	return nil
}

func runHealthCheck(ctx context.Context, args []string, _ io.Writer) error {
	fs := newFlags("health-check")
	var ports stringList
	host := fs.String("host", "127.0.0.1", "host to connect to")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for all ports")
	fs.Var(&ports, "port", "TCP port that must accept a connection (repeatable)")
	if err := parse(fs, args, nil); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for _, port := range ports {
		if err := waitListening(ctx, net.JoinHostPort(*host, port)); err != nil {
			return fmt.Errorf("port %s did not listen within %s", port, *timeout)
		}
	}
	return nil
}

// waitListening dials addr until a connection is accepted or ctx ends.
func waitListening(ctx context.Context, addr string) error {
	for {
		d := net.Dialer{Timeout: time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
