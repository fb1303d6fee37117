package gitsource

import (
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// gitModes creates files and directories the way the git binary does: files 0666 (0777 when
// executable), directories 0777, narrowed by the process umask. go-git asks for 0644 and 0755, which
// under upstream's umask 0000 would still keep a job image's non-root user out of its own checkout.
type gitModes struct {
	billy.Filesystem
	umask os.FileMode
}

func (f gitModes) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	if flag&os.O_CREATE != 0 {
		// osfs would make missing parents (and the root itself) 0755.
		if err := f.MkdirAll(path.Dir(filepath.ToSlash(name)), 0o777); err != nil {
			return nil, err
		}
		if perm&0o111 != 0 {
			perm |= 0o777
		} else {
			perm |= 0o666
		}
	}
	return f.Filesystem.OpenFile(name, flag, perm)
}

func (f gitModes) Create(name string) (billy.File, error) {
	return f.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

// MkdirAll creates directories itself: osfs ignores perm and always uses 0755.
func (f gitModes) MkdirAll(name string, perm os.FileMode) error {
	return os.MkdirAll(filepath.Join(f.Root(), filepath.FromSlash(name)), perm|0o777)
}

func (f gitModes) Chroot(p string) (billy.Filesystem, error) {
	fs, err := f.Filesystem.Chroot(p)
	if err != nil {
		return nil, err
	}
	return gitModes{fs, f.umask}, nil
}

// TempFile: osfs makes temporary files 0600, and go-git renames them into objects and packs, which git
// makes readable (0444 narrowed by the umask) so that anyone who may read the checkout may run git in it.
func (f gitModes) TempFile(dir, prefix string) (billy.File, error) {
	file, err := f.Filesystem.TempFile(dir, prefix)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(filepath.Join(f.Root(), file.Name()), 0o666&^f.umask); err != nil {
		_ = file.Close()
		return nil, err
	}
	return file, nil
}

// processUmask reads the umask (setting it back at once: there is no other way to read it).
func processUmask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

// repoFS is dir's work tree and .git storage with git's file modes.
func repoFS(dir string) (*filesystem.Storage, billy.Filesystem) {
	wt := gitModes{osfs.New(dir), processUmask()}
	dot, _ := wt.Chroot(git.GitDirName)
	return filesystem.NewStorage(dot, cache.NewObjectLRUDefault()), wt
}

// openRepo opens the repository in dir; git.ErrRepositoryNotExists when there is none.
func openRepo(dir string) (*git.Repository, error) {
	if _, err := os.Stat(filepath.Join(dir, git.GitDirName)); err != nil {
		return nil, git.ErrRepositoryNotExists
	}
	return git.Open(repoFS(dir))
}

// initRepo starts an empty repository in dir.
func initRepo(dir string) (*git.Repository, error) {
	return git.Init(repoFS(dir))
}
