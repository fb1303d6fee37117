// Package cache implements the helper's cache-extract and cache-archive: a job's cache is a zip file
// on a volume of the engine's host, found by key first and then by fallback keys.
package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/archive"
)

// Extract unpacks the first of files that exists into dir and returns it. When none exists it prints
// that no cache was found and returns "" without error: a cold cache is not a failure.
func Extract(dir string, files []string, out io.Writer) (string, error) {
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return "", fmt.Errorf("check cache archive %s: %w", f, err)
		}
		fmt.Fprintf(out, "Restoring cache from %s...\n", f)
		n, err := archive.ExtractZip(f, dir)
		if err != nil {
			return "", fmt.Errorf("extract cache archive %s: %w", f, err)
		}
		fmt.Fprintf(out, "Successfully extracted cache (%d entries)\n", n)
		return f, nil
	}
	fmt.Fprintf(out, "No cache found (looked for %s)\n", strings.Join(files, ", "))
	return "", nil
}

// Archive writes the files of dir that sel selects to file as a zip, atomically. With nothing to
// archive it prints a warning and leaves file as it was.
func Archive(dir, file string, sel archive.Selection, out io.Writer) error {
	c, err := archive.Collect(dir, sel)
	if err != nil {
		return err
	}
	for _, p := range c.Unmatched {
		fmt.Fprintf(out, "WARNING: %s: no matching files\n", p)
	}
	if len(c.Entries) == 0 {
		fmt.Fprintln(out, "WARNING: no files to cache; the cache is not saved")
		return nil
	}
	fmt.Fprintf(out, "Creating cache %s with %d entries...\n", file, len(c.Entries))
	if err := archive.WriteFileAtomic(file, func(w io.Writer) error { return archive.WriteZip(w, dir, c.Entries) }); err != nil {
		return err
	}
	fmt.Fprintln(out, "Created cache")
	return nil
}
