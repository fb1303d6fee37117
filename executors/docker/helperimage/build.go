package helperimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"gitlab.com/fleetrunner/fleetrunner/common/version"
)

const modulePath = "gitlab.com/fleetrunner/fleetrunner"

// BuildBinary compiles cmd/fleetrunner-helper for linux/goarch (static, CGO_ENABLED=0, stamped with this
// build's version) into outDir and returns its path. It needs a Go toolchain on PATH and this module's
// source: the current directory or one above it, or the source this package was compiled from.
func BuildBinary(ctx context.Context, goarch, outDir string) (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("no Go toolchain on PATH")
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", outDir, err)
	}
	out := filepath.Join(outDir, BinaryName(goarch))
	// Build beside the target and rename, so a concurrent build or reader never sees half a file.
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	ldflags := fmt.Sprintf("-s -w -X %[1]s/common/version.Version=%[2]s -X %[1]s/common/version.Revision=%[3]s",
		modulePath, version.Version, version.Rev())
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, "./cmd/fleetrunner-helper")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if msg, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build ./cmd/fleetrunner-helper in %s: %w: %s", root, err, lastLines(msg, 5))
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("move helper binary into place: %w", err)
	}
	return out, nil
}

// moduleRoot finds the directory whose go.mod declares this module.
func moduleRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if isModule(filepath.Join(dir, "go.mod")) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("no source of module %s found above %s", modulePath, strings.Join(starts, " or "))
}

func isModule(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == modulePath
		}
	}
	return false
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(string(bytes.TrimSpace(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "; ")
}
