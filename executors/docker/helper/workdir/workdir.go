// Package workdir makes a job's directories in the build volume usable by a script that does not run as
// root. The helper container runs as root; a job image with USER 1000 (or docker.user) could otherwise
// not create its project directory, write into a clone or read its file variables.
package workdir

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// UmaskEnv, when set (octal, e.g. 0000), is the umask fleetrunner-helper runs its command under. The
// executor sets 0000 as upstream does, so that what the helper creates stays writable for the script.
const UmaskEnv = "FLEETRUNNER_HELPER_UMASK"

// Owner is a numeric user and group.
type Owner struct{ UID, GID int }

// ParseOwner reads "uid:gid".
func ParseOwner(s string) (Owner, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return Owner{}, fmt.Errorf("owner %q: want numeric uid:gid, e.g. 1000:1000", s)
	}
	return Owner{UID: uid, GID: gid}, nil
}

// Prepare creates each of dirs (all inside base) and opens it, and every level between base and it, to
// the script's user: with owner nil by making them world-writable (upstream's default, where every
// stage runs under umask 0000), otherwise by giving dirs and everything in them to owner (upstream's
// FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR). base itself is left alone.
func Prepare(base string, dirs []string, owner *Owner) error {
	base = filepath.Clean(base)
	for _, dir := range dirs {
		dir = filepath.Clean(dir)
		rel, err := filepath.Rel(base, dir)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("%s is not inside the builds directory %s", dir, base)
		}
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		level := base
		for _, part := range strings.Split(rel, string(filepath.Separator)) {
			level = filepath.Join(level, part)
			if err := open(level, owner); err != nil {
				return err
			}
		}
		if owner == nil {
			continue
		}
		// What get_sources, restore_cache and download_artifacts put there goes to the user as well.
		err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, owner.UID, owner.GID)
		})
		if err != nil {
			return fmt.Errorf("give %s to %d:%d: %w", dir, owner.UID, owner.GID, err)
		}
	}
	return nil
}

func open(dir string, owner *Owner) error {
	if owner != nil {
		if err := os.Lchown(dir, owner.UID, owner.GID); err != nil {
			return fmt.Errorf("give %s to %d:%d: %w", dir, owner.UID, owner.GID, err)
		}
		return nil
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return fmt.Errorf("open %s to the job's user: %w", dir, err)
	}
	return nil
}
