package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
)

// Load lists the packages of the module that holds dir with the go command goBin, keeping only the
// imports of the module's own packages. A package go list could not load is an error: its arrows would
// be missing from the check.
func Load(goBin, dir string) ([]Package, error) {
	gomod, err := goCmd(goBin, dir, "env", "GOMOD")
	if err != nil {
		return nil, err
	}
	gomod = strings.TrimSpace(gomod)
	if gomod == "" || gomod == "/dev/null" {
		return nil, fmt.Errorf("%s is not inside a Go module", dir)
	}
	out, err := goCmd(goBin, filepath.Dir(gomod), "list", "-e",
		"-json=ImportPath,Module,Imports,TestImports,XTestImports,Error", "./...")
	if err != nil {
		return nil, err
	}
	type listed struct {
		ImportPath                         string
		Module                             *struct{ Path string }
		Imports, TestImports, XTestImports []string
		Error                              *struct{ Err string }
	}
	var pkgs []Package
	var errs []error
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var l listed
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode go list output: %w", err)
		}
		if l.Error != nil {
			errs = append(errs, fmt.Errorf("%s: %s", l.ImportPath, l.Error.Err))
			continue
		}
		if l.Module == nil {
			return nil, fmt.Errorf("go list gave %s no module", l.ImportPath)
		}
		own := func(paths ...[]string) []string {
			var rel []string
			for _, ps := range paths {
				for _, p := range ps {
					if r, ok := strings.CutPrefix(p, l.Module.Path+"/"); ok {
						rel = append(rel, r)
					}
				}
			}
			return rel
		}
		path, _ := strings.CutPrefix(l.ImportPath, l.Module.Path+"/")
		pkgs = append(pkgs, Package{Path: path, Imports: own(l.Imports), TestImports: own(l.TestImports, l.XTestImports)})
	}
	return pkgs, errors.Join(errs...)
}

func goCmd(goBin, dir string, args ...string) (string, error) {
	cmd := exec.Command(goBin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
