// Package gitsource implements the helper's get-sources: it clones or fetches a job's repository with
// go-git (no git binary needed), checks out the job's commit as a detached HEAD and updates submodules.
// The job token travels in the repository URL's user info; it is sent as HTTP basic auth only to the
// repository's own host, never stored in .git/config, and masked in every line this package writes.
package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/archive"
)

// Strategy is GIT_STRATEGY.
type Strategy string

// The GIT_STRATEGY values.
const (
	StrategyClone Strategy = "clone"
	StrategyFetch Strategy = "fetch"
	StrategyNone  Strategy = "none"
	StrategyEmpty Strategy = "empty"
)

// Submodules is GIT_SUBMODULE_STRATEGY.
type Submodules string

// The GIT_SUBMODULE_STRATEGY values.
const (
	SubmodulesNone      Submodules = "none"
	SubmodulesNormal    Submodules = "normal"
	SubmodulesRecursive Submodules = "recursive"
)

// Options describe one get_sources stage; they mirror the job payload's git_info and GIT_* variables.
type Options struct {
	Dir        string
	RepoURL    string // with the job token in its user info
	SHA        string
	Ref        string
	RefType    string // branch or tag
	Depth      int    // 0 = full history
	RefSpecs   []string
	Strategy   Strategy
	Checkout   bool
	Submodules Submodules
	Out        io.Writer // progress lines for the job log
}

// Validate checks the options an operator or the executor can get wrong.
func (o *Options) Validate() error {
	var errs []error
	switch o.Strategy {
	case StrategyClone, StrategyFetch, StrategyNone, StrategyEmpty:
	default:
		errs = append(errs, fmt.Errorf("git strategy %q is not one of clone, fetch, none, empty", o.Strategy))
	}
	switch o.Submodules {
	case "", SubmodulesNone, SubmodulesNormal, SubmodulesRecursive:
	default:
		errs = append(errs, fmt.Errorf("submodule strategy %q is not one of none, normal, recursive", o.Submodules))
	}
	if o.Dir == "" {
		errs = append(errs, errors.New("the build directory is empty"))
	}
	if o.Strategy == StrategyClone || o.Strategy == StrategyFetch {
		if o.RepoURL == "" {
			errs = append(errs, errors.New("the repository URL is empty"))
		}
		if o.Checkout && !plumbing.IsHash(o.SHA) {
			errs = append(errs, fmt.Errorf("commit %q is not a full SHA", o.SHA))
		}
		if o.Depth < 0 {
			errs = append(errs, fmt.Errorf("git depth %d is negative", o.Depth))
		}
		if o.RefType != "" && o.RefType != "branch" && o.RefType != "tag" {
			errs = append(errs, fmt.Errorf("ref type %q is not branch or tag", o.RefType))
		}
	}
	return errors.Join(errs...)
}

// source is the parsed repository URL: where to fetch, with what, and what to hide.
type source struct {
	url    string // without credentials
	host   string
	auth   transport.AuthMethod
	secret []string
}

func parseSource(raw string) (*source, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes its input, so its error would carry the token.
		return nil, errors.New("the repository URL cannot be parsed; check git_info.repo_url")
	}
	s := &source{host: u.Host}
	if u.User != nil {
		pw, _ := u.User.Password()
		s.auth = &githttp.BasicAuth{Username: u.User.Username(), Password: pw}
		if pw != "" {
			s.secret = append(s.secret, pw, url.QueryEscape(pw), url.PathEscape(pw))
		}
		u.User = nil
	}
	s.url = u.String()
	return s, nil
}

// mask hides the token in text.
func (s *source) mask(text string) string {
	for _, sec := range s.secret {
		text = strings.ReplaceAll(text, sec, "[MASKED]")
	}
	return text
}

type run struct {
	o   Options
	src *source
}

func (r *run) printf(format string, args ...any) {
	fmt.Fprint(r.o.Out, r.src.mask(fmt.Sprintf(format, args...)))
}

// Get prepares o.Dir as o says. Errors are masked and name what to check.
func Get(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if err := o.Validate(); err != nil {
		return err
	}
	src := &source{}
	if o.Strategy == StrategyClone || o.Strategy == StrategyFetch {
		var err error
		if src, err = parseSource(o.RepoURL); err != nil {
			return err
		}
	}
	r := &run{o: o, src: src}
	if err := r.get(ctx); err != nil {
		return errors.New(src.mask(err.Error()))
	}
	return nil
}

func (r *run) get(ctx context.Context) error {
	o := r.o
	switch o.Strategy {
	case StrategyNone:
		r.printf("Skipping Git repository setup (GIT_STRATEGY=none)\n")
		return nil
	case StrategyEmpty:
		r.printf("Skipping Git repository setup and creating an empty build directory\n")
		return wipe(o.Dir)
	}

	repo, err := r.openOrInit()
	if err != nil {
		return err
	}
	if err := r.fetch(ctx, repo); err != nil {
		return err
	}
	if !o.Checkout {
		r.printf("Skipping Git checkout (GIT_CHECKOUT=false)\n")
		return nil
	}
	hash := plumbing.NewHash(o.SHA)
	if _, err := repo.CommitObject(hash); err != nil {
		return fmt.Errorf("commit %s is not in what was fetched from %s (ref %s, depth %d): %w; "+
			"raise GIT_DEPTH or check that the commit is still on the ref", o.SHA, r.src.url, o.Ref, o.Depth, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return fmt.Errorf("open work tree %s: %w", o.Dir, err)
	}
	r.printf("Checking out %s as detached HEAD (ref is %s)...\n", o.SHA[:8], o.Ref)
	if err := wt.Checkout(&git.CheckoutOptions{Hash: hash, Force: true}); err != nil {
		return fmt.Errorf("check out %s: %w", o.SHA, err)
	}
	if err := clean(o.Dir); err != nil {
		return err
	}
	if o.Submodules == SubmodulesNormal || o.Submodules == SubmodulesRecursive {
		return r.updateSubmodules(ctx, wt, "", o.Submodules == SubmodulesRecursive)
	}
	r.printf("Skipping Git submodules setup\n")
	return nil
}

// openOrInit reuses the repository in o.Dir for the fetch strategy, or starts a fresh one.
func (r *run) openOrInit() (*git.Repository, error) {
	dir := r.o.Dir
	if r.o.Strategy == StrategyFetch {
		repo, err := openRepo(dir)
		if err == nil {
			r.printf("Reinitialized existing Git repository in %s\n", dir)
			return repo, r.setOrigin(repo)
		}
		r.printf("No usable Git repository in %s (%v); cloning afresh\n", dir, err)
	}
	if err := wipe(dir); err != nil {
		return nil, err
	}
	repo, err := initRepo(dir)
	if err != nil {
		return nil, fmt.Errorf("initialise a Git repository in %s: %w", dir, err)
	}
	r.printf("Initialized empty Git repository in %s\n", dir)
	return repo, r.setOrigin(repo)
}

// setOrigin points origin at the credential-free URL (the token changes with every job).
func (r *run) setOrigin(repo *git.Repository) error {
	if err := repo.DeleteRemote(git.DefaultRemoteName); err != nil && !errors.Is(err, git.ErrRemoteNotFound) {
		return fmt.Errorf("reset remote origin: %w", err)
	}
	_, err := repo.CreateRemote(&config.RemoteConfig{Name: git.DefaultRemoteName, URLs: []string{r.src.url}})
	if err != nil {
		return fmt.Errorf("set remote origin to %s: %w", r.src.url, err)
	}
	return nil
}

func (r *run) refSpecs() []string {
	if len(r.o.RefSpecs) > 0 {
		return r.o.RefSpecs
	}
	switch {
	case r.o.Depth == 0:
		return []string{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"}
	case r.o.RefType == "tag":
		return []string{"+refs/tags/" + r.o.Ref + ":refs/tags/" + r.o.Ref}
	default:
		return []string{"+refs/heads/" + r.o.Ref + ":refs/remotes/origin/" + r.o.Ref}
	}
}

func (r *run) fetch(ctx context.Context, repo *git.Repository) error {
	remote, err := repo.Remote(git.DefaultRemoteName)
	if err != nil {
		return fmt.Errorf("remote origin: %w", err)
	}
	// GitLab always has the refspecs it sends; a simulator or a mirror may lack refs/pipelines/N. An
	// exact refspec whose source is missing fails the whole fetch, so leave it out with a warning.
	advertised, err := remote.ListContext(ctx, &git.ListOptions{Auth: r.src.auth})
	if err != nil {
		return fmt.Errorf("list refs of %s: %w; check the URL, the job token and that the runner reaches GitLab", r.src.url, err)
	}
	have := map[string]bool{}
	for _, ref := range advertised {
		have[ref.Name().String()] = true
	}
	var specs []config.RefSpec
	for _, s := range r.refSpecs() {
		spec := config.RefSpec(s)
		if err := spec.Validate(); err != nil {
			return fmt.Errorf("refspec %q: %w", s, err)
		}
		if !spec.IsWildcard() && !have[spec.Src()] {
			r.printf("WARNING: %s has no %s; skipping refspec %s\n", r.src.url, spec.Src(), s)
			continue
		}
		specs = append(specs, spec)
	}
	if len(specs) == 0 {
		return fmt.Errorf("none of the refspecs (%s) matches a ref of %s", strings.Join(r.refSpecs(), ", "), r.src.url)
	}
	if r.o.Depth > 0 {
		r.printf("Fetching changes with git depth set to %d...\n", r.o.Depth)
	} else {
		r.printf("Fetching changes...\n")
	}
	err = repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: git.DefaultRemoteName,
		RefSpecs:   specs,
		Depth:      r.o.Depth,
		Auth:       r.src.auth,
		Tags:       git.NoTags,
		Force:      true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetch from %s: %w", r.src.url, err)
	}
	return nil
}

// updateSubmodules initialises and updates the submodules of wt; the job token goes only to submodules
// on the repository's own host (or with a relative URL).
func (r *run) updateSubmodules(ctx context.Context, wt *git.Worktree, prefix string, recursive bool) error {
	subs, err := wt.Submodules()
	if err != nil {
		return fmt.Errorf("read submodules: %w", err)
	}
	for _, s := range subs {
		name := prefix + s.Config().Path
		auth := transport.AuthMethod(nil)
		if r.sameHost(s.Config().URL) {
			auth = r.src.auth
		}
		r.printf("Updating submodule %s...\n", name)
		if err := s.UpdateContext(ctx, &git.SubmoduleUpdateOptions{Init: true, Auth: auth}); err != nil {
			return fmt.Errorf("update submodule %s (%s): %w", name, s.Config().URL, err)
		}
		if !recursive {
			continue
		}
		sr, err := s.Repository()
		if err != nil {
			return fmt.Errorf("open submodule %s: %w", name, err)
		}
		swt, err := sr.Worktree()
		if err != nil {
			return fmt.Errorf("open submodule %s: %w", name, err)
		}
		if err := r.updateSubmodules(ctx, swt, name+"/", true); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) sameHost(raw string) bool {
	if strings.HasPrefix(raw, "./") || strings.HasPrefix(raw, "../") {
		return true
	}
	u, err := url.Parse(raw)
	return err == nil && u.Host == r.src.host && (u.Scheme == "http" || u.Scheme == "https")
}

// wipe empties dir but keeps it: it may be a volume's mount point.
func wipe(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create build directory %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read build directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("empty build directory %s: %w", dir, err)
		}
	}
	return nil
}

// clean removes what the previous job left in a reused work tree, like `git clean -ffdx`: every file
// the index does not list, ignored ones included, and the directories that leaves empty.
func clean(dir string) error {
	c, err := archive.Collect(dir, archive.Selection{Untracked: true})
	if err != nil {
		return fmt.Errorf("clean work tree %s: %w", dir, err)
	}
	parents := map[string]bool{}
	for _, e := range c.Entries {
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(e))); err != nil {
			return fmt.Errorf("clean work tree: remove %s: %w", e, err)
		}
		for p := filepath.Dir(filepath.FromSlash(e)); p != "."; p = filepath.Dir(p) {
			parents[p] = true
		}
	}
	dirs := make([]string, 0, len(parents))
	for p := range parents {
		dirs = append(dirs, p)
	}
	// Deepest first, so a parent is tried only after its children; a non-empty one stays.
	slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
	for _, p := range dirs {
		_ = os.Remove(filepath.Join(dir, p))
	}
	return nil
}
