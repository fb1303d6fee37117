package archive

import (
	"archive/zip"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Format is an artifact_format value of the GitLab API.
type Format string

// The formats GitLab accepts for uploads.
const (
	FormatZip  Format = "zip"
	FormatGzip Format = "gzip"
	FormatRaw  Format = "raw"
)

// ParseFormat accepts zip, gzip and raw; empty means zip.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", FormatZip:
		return FormatZip, nil
	case FormatGzip, FormatRaw:
		return Format(s), nil
	}
	return "", fmt.Errorf("artifact format %q is not one of zip, gzip, raw", s)
}

// Write writes entries of dir to w in format f: zip keeps directories, symlinks, modes and times; gzip
// writes one gzip member per regular file, named by its path (GitLab's report format); raw copies
// exactly one regular file.
func Write(w io.Writer, f Format, dir string, entries []string) error {
	switch f {
	case FormatZip:
		return WriteZip(w, dir, entries)
	case FormatGzip:
		return writeGzip(w, dir, entries)
	case FormatRaw:
		return writeRaw(w, dir, entries)
	}
	return fmt.Errorf("artifact format %q is not one of zip, gzip, raw", f)
}

// WriteZip writes entries (relative to dir) as a zip archive to w.
func WriteZip(w io.Writer, dir string, entries []string) error {
	zw := zip.NewWriter(w)
	for _, e := range entries {
		if err := addZipEntry(zw, dir, e); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("finish zip archive: %w", err)
	}
	return nil
}

func addZipEntry(zw *zip.Writer, dir, rel string) error {
	full := filepath.Join(dir, filepath.FromSlash(rel))
	fi, err := os.Lstat(full)
	if err != nil {
		return fmt.Errorf("read %s: %w", rel, err)
	}
	h, err := zip.FileInfoHeader(fi)
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	h.Name = rel
	switch {
	case fi.IsDir():
		h.Name += "/"
		_, err = zw.CreateHeader(h)
	case fi.Mode()&fs.ModeSymlink != 0:
		var target string
		if target, err = os.Readlink(full); err == nil {
			var zf io.Writer
			if zf, err = zw.CreateHeader(h); err == nil {
				_, err = io.WriteString(zf, target)
			}
		}
	case fi.Mode().IsRegular():
		h.Method = zip.Deflate
		err = copyInto(zw, h, full)
	default:
		return nil // sockets, devices and pipes have no place in an archive
	}
	if err != nil {
		return fmt.Errorf("archive %s: %w", rel, err)
	}
	return nil
}

func copyInto(zw *zip.Writer, h *zip.FileHeader, full string) error {
	src, err := os.Open(full)
	if err != nil {
		return err
	}
	defer src.Close()
	zf, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	_, err = io.Copy(zf, src)
	return err
}

func writeGzip(w io.Writer, dir string, entries []string) error {
	n := 0
	for _, rel := range entries {
		full := filepath.Join(dir, filepath.FromSlash(rel))
		fi, err := os.Lstat(full)
		if err != nil {
			return fmt.Errorf("read %s: %w", rel, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if err := gzipOne(w, full, rel, fi); err != nil {
			return fmt.Errorf("gzip %s: %w", rel, err)
		}
		n++
	}
	if n == 0 {
		return ErrNoFiles
	}
	return nil
}

func gzipOne(w io.Writer, full, rel string, fi fs.FileInfo) error {
	src, err := os.Open(full)
	if err != nil {
		return err
	}
	defer src.Close()
	zw := gzip.NewWriter(w)
	zw.Name = rel
	zw.ModTime = fi.ModTime()
	if _, err := io.Copy(zw, src); err != nil {
		return err
	}
	return zw.Close()
}

func writeRaw(w io.Writer, dir string, entries []string) error {
	var files []string
	for _, rel := range entries {
		fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return fmt.Errorf("read %s: %w", rel, err)
		}
		if fi.Mode().IsRegular() {
			files = append(files, rel)
		}
	}
	switch len(files) {
	case 0:
		return ErrNoFiles
	case 1:
	default:
		return fmt.Errorf("raw artifact format takes exactly one file, the paths matched %d (%s); narrow the paths or use zip",
			len(files), strings.Join(files, ", "))
	}
	src, err := os.Open(filepath.Join(dir, filepath.FromSlash(files[0])))
	if err != nil {
		return fmt.Errorf("read %s: %w", files[0], err)
	}
	defer src.Close()
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("copy %s: %w", files[0], err)
	}
	return nil
}

// ExtractZip extracts the zip file at zipPath into dir (created when missing), replacing what is there.
// Every write goes through an os.Root, so neither a `../` entry nor a symlink planted by an earlier
// entry can reach outside dir. It returns the number of entries extracted.
func ExtractZip(zipPath, dir string) (int, error) {
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		return 0, fmt.Errorf("open archive %s: %w", zipPath, err)
	}
	defer zr.Close()
	// Directories are 0777 narrowed by the umask, as mkdir(1) makes them: under the executor's umask
	// 0000 a non-root job user can write into what the helper extracts.
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, fmt.Errorf("create %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dir, err)
	}
	defer root.Close()
	for i, f := range zr.File {
		if err := extractEntry(root, f); err != nil {
			return i, err
		}
	}
	return len(zr.File), nil
}

func extractEntry(root *os.Root, f *zip.File) error {
	name := strings.TrimSuffix(f.Name, "/")
	if !filepath.IsLocal(filepath.FromSlash(name)) {
		return fmt.Errorf("archive entry %q would land outside %s; refusing the archive", f.Name, root.Name())
	}
	name = filepath.FromSlash(name)
	mode := f.Mode()
	if mode.IsDir() {
		if err := root.MkdirAll(name, 0o777); err != nil {
			return fmt.Errorf("extract %s: %w", f.Name, err)
		}
		return root.Chmod(name, mode.Perm()|0o700)
	}
	if parent := filepath.Dir(name); parent != "." {
		if err := root.MkdirAll(parent, 0o777); err != nil {
			return fmt.Errorf("extract %s: %w", f.Name, err)
		}
	}
	// A previous file, link or empty directory at this path is replaced, never written through.
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", f.Name, err)
	}
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("read entry %s: %w", f.Name, err)
	}
	defer rc.Close()
	switch {
	case mode&fs.ModeSymlink != 0:
		target, err := io.ReadAll(io.LimitReader(rc, 4096))
		if err != nil {
			return fmt.Errorf("read entry %s: %w", f.Name, err)
		}
		if err := root.Symlink(string(target), name); err != nil {
			return fmt.Errorf("extract %s: %w", f.Name, err)
		}
		return nil
	case mode.IsRegular():
		out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
		if err != nil {
			return fmt.Errorf("extract %s: %w", f.Name, err)
		}
		_, err = io.Copy(out, rc)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = root.Chmod(name, mode.Perm())
		}
		if err == nil {
			err = root.Chtimes(name, f.Modified, f.Modified)
		}
		if err != nil {
			return fmt.Errorf("extract %s: %w", f.Name, err)
		}
	}
	return nil
}

// WriteFileAtomic writes a file by calling fill on a temporary file in the same directory and renaming
// it into place, so a reader never sees half an archive.
func WriteFileAtomic(target string, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o777); err != nil {
		return fmt.Errorf("create directory for %s: %w", target, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temporary file beside %s: %w", target, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := fill(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", target, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("move archive into place at %s: %w", target, err)
	}
	return nil
}
