package archtest

import (
	"fmt"
	"strings"
)

// Package is one of the module's packages with its imports of the module's own packages; paths are
// relative to the module root.
type Package struct {
	Path    string
	Imports []string
	// TestImports are the imports of its _test.go files, in-package and external alike.
	TestImports []string
}

// Violation is an import that the rules refuse, or a package that no rule names (then To is empty).
type Violation struct {
	From, To string
	Test     bool
	Why      string
}

func (v Violation) String() string {
	if v.To == "" {
		return fmt.Sprintf("%s: %s", v.From, v.Why)
	}
	files := "its files"
	if v.Test {
		files = "its test files"
	}
	return fmt.Sprintf("%s imports %s in %s: %s", v.From, v.To, files, v.Why)
}

// Check returns every import in pkgs that rules, rigs and forbidden refuse, in the order of pkgs.
func Check(rules []Rule, rigs, forbidden []string, pkgs []Package) []Violation {
	var out []Violation
	for _, p := range pkgs {
		r, ok := ruleFor(rules, p.Path)
		if !ok {
			out = append(out, Violation{From: p.Path, Why: "no rule names this package; add one to archtest.Rules"})
			continue
		}
		for _, imp := range p.Imports {
			if !allowed(p.Path, imp, forbidden, r.Allow) {
				out = append(out, Violation{From: p.Path, To: imp, Why: r.From + ": " + r.Why})
			}
		}
		for _, imp := range p.TestImports {
			if !allowed(p.Path, imp, forbidden, r.Allow, r.TestAllow, rigs) {
				out = append(out, Violation{From: p.Path, To: imp, Test: true, Why: r.From + ": " + r.Why})
			}
		}
	}
	return out
}

func allowed(from, to string, forbidden []string, allow ...[]string) bool {
	if matchAny(forbidden, to) {
		return false
	}
	if to == from {
		return true
	}
	for _, patterns := range allow {
		if matchAny(patterns, to) {
			return true
		}
	}
	return false
}

// ruleFor picks the rule whose From names path most closely.
func ruleFor(rules []Rule, path string) (Rule, bool) {
	var best Rule
	bestScore := -1
	for _, r := range rules {
		if !match(r.From, path) {
			continue
		}
		base, subtree := strings.CutSuffix(r.From, "/...")
		if r.From == "..." {
			base, subtree = "", true
		}
		score := 2 * len(base)
		if !subtree {
			score++
		}
		if score > bestScore {
			best, bestScore = r, score
		}
	}
	return best, bestScore >= 0
}

func matchAny(patterns []string, path string) bool {
	for _, p := range patterns {
		if match(p, path) {
			return true
		}
	}
	return false
}

func match(pattern, path string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}
