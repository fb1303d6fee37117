package archtest

import (
	"slices"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// loadTree lists this module with the go command, or skips (fails in CI) where there is none.
func loadTree(t *testing.T) []Package {
	t.Helper()
	goBin := testenv.RequireCommand(t, "go", "the arrow check lists the module's packages with it; install Go 1.26")
	pkgs, err := Load(goBin, ".")
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// This package is known: its own files import nothing of the module and its tests import testenv.
func TestLoadKeepsOnlyTheModulesOwnImports(t *testing.T) {
	pkgs := loadTree(t)
	i := slices.IndexFunc(pkgs, func(p Package) bool { return p.Path == "internal/archtest" })
	if i < 0 {
		t.Fatalf("internal/archtest is missing from %d listed packages", len(pkgs))
	}
	if p := pkgs[i]; len(p.Imports) != 0 || !slices.Contains(p.TestImports, "internal/testenv") {
		t.Fatalf("internal/archtest: imports %v, test imports %v; want none, and internal/testenv among them", p.Imports, p.TestImports)
	}
}
