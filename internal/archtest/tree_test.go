package archtest

import "testing"

// The module's import graph, test files included, follows the arrow table.
func TestTreeFollowsTheArrows(t *testing.T) {
	for _, v := range Check(Rules, Rigs, Forbidden, loadTree(t)) {
		t.Error(v)
	}
}

// A row whose From names no package any more (a directory moved) would hide the next one's mistakes.
func TestEveryRuleNamesAPackage(t *testing.T) {
	pkgs := loadTree(t)
	for _, r := range Rules {
		used := false
		for _, p := range pkgs {
			if match(r.From, p.Path) {
				used = true
				break
			}
		}
		if !used {
			t.Errorf("rule %s names no package of the module", r.From)
		}
	}
}
