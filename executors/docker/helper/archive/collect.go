// Package archive selects files of a project directory (glob paths, excludes, git-untracked files) and
// writes or extracts them as zip, multi-member gzip or raw files, never reading or writing outside that
// directory. The cache and artifacts subcommands of fleetrunner-helper share it.
package archive

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// Selection says which files of a project directory to take.
type Selection struct {
	// Paths are globs relative to the directory (`**` crosses directories); a matched directory is taken
	// with everything below it. Absolute paths are accepted when they lie inside the directory.
	Paths []string
	// Exclude are globs; a file is left out when one matches its path or one of its parent directories.
	Exclude []string
	// Untracked adds every file of the git work tree that is not in the index (ignored files included).
	Untracked bool
}

// Collection is the result of Collect.
type Collection struct {
	// Entries are slash-separated paths relative to the directory, sorted, without duplicates; a
	// directory is listed as well as its contents so that empty directories survive a round trip.
	Entries []string
	// Unmatched are the Selection.Paths that matched nothing (worth a warning line).
	Unmatched []string
	// Excluded counts the entries an exclude pattern removed.
	Excluded int
}

// OutsideError names a path that resolves outside the project directory.
type OutsideError struct {
	Path string
	Dir  string
}

func (e *OutsideError) Error() string {
	return fmt.Sprintf("path %q resolves outside the project directory %s; use a path inside it", e.Path, e.Dir)
}

// Collect returns the entries of dir that sel selects. Any path that resolves outside dir, lexically or
// through a symlinked parent directory, is refused with an *OutsideError.
func Collect(dir string, sel Selection) (*Collection, error) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve project directory %s: %w", dir, err)
	}
	realDir, err := filepath.EvalSymlinks(absDir)
	if err != nil {
		return nil, fmt.Errorf("project directory %s: %w", dir, err)
	}
	for _, ex := range sel.Exclude {
		if !doublestar.ValidatePattern(ex) {
			return nil, fmt.Errorf("exclude pattern %q is not a valid glob", ex)
		}
	}

	set := map[string]bool{}
	c := &Collection{}
	fsys := os.DirFS(absDir)
	for _, p := range sel.Paths {
		pattern, err := relPattern(absDir, p)
		if err != nil {
			return nil, err
		}
		matches, err := doublestar.Glob(fsys, pattern)
		if err != nil {
			return nil, fmt.Errorf("path %q is not a valid glob: %w", p, err)
		}
		if len(matches) == 0 {
			c.Unmatched = append(c.Unmatched, p)
		}
		for _, m := range matches {
			if err := checkInside(realDir, absDir, m, p); err != nil {
				return nil, err
			}
			if err := addTree(absDir, m, set); err != nil {
				return nil, err
			}
		}
	}
	if sel.Untracked {
		if err := addUntracked(absDir, set); err != nil {
			return nil, err
		}
	}

	for e := range set {
		if excluded(e, sel.Exclude) {
			c.Excluded++
			continue
		}
		c.Entries = append(c.Entries, e)
	}
	slices.Sort(c.Entries)
	return c, nil
}

// relPattern turns a user path into a clean fs.FS pattern relative to absDir.
func relPattern(absDir, p string) (string, error) {
	s := filepath.ToSlash(p)
	if path.IsAbs(s) {
		rel, err := filepath.Rel(absDir, filepath.FromSlash(path.Clean(s)))
		if err != nil {
			return "", &OutsideError{Path: p, Dir: absDir}
		}
		s = filepath.ToSlash(rel)
	}
	s = path.Clean(s)
	if s == ".." || strings.HasPrefix(s, "../") {
		return "", &OutsideError{Path: p, Dir: absDir}
	}
	return s, nil
}

// checkInside refuses a match whose parent directory resolves (through symlinks) outside realDir. The
// match itself may be a symlink: it is archived as a link, never followed.
func checkInside(realDir, absDir, match, userPath string) error {
	if match == "." {
		return nil
	}
	parent := filepath.Dir(filepath.Join(absDir, filepath.FromSlash(match)))
	realParent, err := filepath.EvalSymlinks(parent)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", match, err)
	}
	if realParent != realDir && !strings.HasPrefix(realParent, realDir+string(filepath.Separator)) {
		return &OutsideError{Path: userPath + " (" + match + ")", Dir: absDir}
	}
	return nil
}

// addTree adds rel and, when it is a real directory, everything below it (symlinks are not followed).
func addTree(absDir, rel string, set map[string]bool) error {
	root := filepath.Join(absDir, filepath.FromSlash(rel))
	fi, err := os.Lstat(root)
	if err != nil {
		return fmt.Errorf("read %s: %w", rel, err)
	}
	if !fi.IsDir() {
		set[rel] = true
		return nil
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		r, err := filepath.Rel(absDir, p)
		if err != nil {
			return err
		}
		if r != "." {
			set[filepath.ToSlash(r)] = true
		}
		return nil
	})
}

// addUntracked adds the work tree's files that the git index does not list, like `git ls-files -o`.
func addUntracked(absDir string, set map[string]bool) error {
	repo, err := git.PlainOpen(absDir)
	if err != nil {
		return fmt.Errorf("untracked files need a git work tree in %s: %w", absDir, err)
	}
	idx, err := repo.Storer.Index()
	if err != nil {
		return fmt.Errorf("read git index of %s: %w", absDir, err)
	}
	tracked := make(map[string]bool, len(idx.Entries))
	gitlinks := map[string]bool{}
	for _, e := range idx.Entries {
		tracked[e.Name] = true
		if e.Mode == filemode.Submodule {
			gitlinks[e.Name] = true
		}
	}
	return filepath.WalkDir(absDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		r, err := filepath.Rel(absDir, p)
		if err != nil {
			return err
		}
		r = filepath.ToSlash(r)
		if d.IsDir() {
			if d.Name() == ".git" || gitlinks[r] {
				return filepath.SkipDir
			}
			return nil
		}
		if !tracked[r] {
			set[r] = true
		}
		return nil
	})
}

func excluded(rel string, patterns []string) bool {
	for p := rel; p != "." && p != "/"; p = path.Dir(p) {
		for _, ex := range patterns {
			if ok, _ := doublestar.Match(path.Clean(filepath.ToSlash(ex)), p); ok {
				return true
			}
		}
	}
	return false
}

// ErrNoFiles is returned by writers when there is nothing to write.
var ErrNoFiles = errors.New("no files to archive")
