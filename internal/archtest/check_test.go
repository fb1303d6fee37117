package archtest

import (
	"reflect"
	"strings"
	"testing"
)

func TestCheckFindsWrongArrows(t *testing.T) {
	rules := []Rule{
		{From: "cmd/...", Allow: []string{"..."}, Why: "wiring"},
		{From: "top", Allow: []string{"lib/..."}, Why: "top sits on lib"},
		{From: "lib/...", Allow: []string{"lib/..."}, Why: "lib is a leaf"},
		{From: "lib/pure", Allow: nil, Why: "pure imports nothing"},
	}
	rigs := []string{"lib/sim"}
	pkgs := []Package{
		{Path: "cmd/app", Imports: []string{"top", "lib/a"}},
		{Path: "top", Imports: []string{"lib/a", "lib/sim", "cmd/app"}},
		{Path: "lib/a", Imports: []string{"lib/pure", "top"}, TestImports: []string{"lib/a", "lib/sim", "top"}},
		{Path: "lib/pure", Imports: []string{"lib/a"}, TestImports: []string{"lib/sim"}},
		{Path: "lib/sim", Imports: []string{"lib/a"}},
		{Path: "stray", Imports: []string{"lib/a"}},
	}
	got := Check(rules, rigs, []string{"cmd/..."}, pkgs)
	want := []Violation{
		{From: "top", To: "cmd/app", Why: "top: top sits on lib"},
		{From: "lib/a", To: "top", Why: "lib/...: lib is a leaf"},
		{From: "lib/a", To: "top", Test: true, Why: "lib/...: lib is a leaf"},
		{From: "lib/pure", To: "lib/a", Why: "lib/pure: pure imports nothing"},
		{From: "stray", Why: "no rule names this package; add one to archtest.Rules"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("violations:\n%s\nwant:\n%s", lines(got), lines(want))
	}
}

func TestForbiddenBeatsAllow(t *testing.T) {
	rules := []Rule{{From: "...", Allow: []string{"..."}, Why: "anything"}}
	got := Check(rules, []string{"cmd/tool"}, []string{"cmd/..."}, []Package{
		{Path: "x", Imports: []string{"cmd"}, TestImports: []string{"cmd/tool"}},
	})
	if len(got) != 2 {
		t.Fatalf("an import of cmd must be refused even where everything is allowed, and even as a rig; got:\n%s", lines(got))
	}
}

func TestRuleForPrefersTheClosestFrom(t *testing.T) {
	rules := []Rule{{From: "..."}, {From: "a/..."}, {From: "a"}, {From: "a/b/..."}}
	for path, want := range map[string]string{"a": "a", "a/c": "a/...", "a/b": "a/b/...", "a/b/c": "a/b/...", "ab": "..."} {
		r, ok := ruleFor(rules, path)
		if !ok || r.From != want {
			t.Errorf("rule for %s = %q (found %v), want %q", path, r.From, ok, want)
		}
	}
}

// The real table against the arrows docs/architecture.md draws, one wrong and one right per layer.
func TestRulesDrawTheDocumentedArrows(t *testing.T) {
	for _, c := range []struct {
		from, to string
		test     bool
		ok       bool
	}{
		{"cmd/fleetrunner", "manager", false, true},
		{"cmd/fleetrunner", "fleeting-plugins/builtin", false, true},
		{"internal/demo", "metrics", false, true},
		{"internal/testrig", "cmd/fleetrunner", false, false},
		{"metrics", "manager", false, true},
		{"manager", "executors", false, true},
		{"manager", "executors/docker", false, false},
		{"manager", "metrics", false, false},
		{"executors/docker", "common/config", false, true},
		{"executors/docker", "taskscaler", false, false},
		{"executors/docker", "executors/dockerautoscaler", false, false},
		{"executors/dockerautoscaler", "common/fleeting/connector", false, true},
		{"executors/dockerautoscaler", "taskscaler/capacity", false, true},
		{"executors/dockerautoscaler", "fleeting-plugins/builtin", false, false},
		{"executors/dockerautoscaler", "fleeting-plugins/local", false, false},
		{"executors/dockerautoscaler", "fleeting-plugins/local", true, true},
		{"executors/dockerautoscaler", "manager", true, false},
		{"taskscaler/capacity", "common/config", false, false},
		{"taskscaler/sim", "common/config", true, false},
		{"taskscaler", "common/fleeting", false, true},
		{"taskscaler", "common/fleeting/connector", false, false},
		{"executors/docker", "common/s3cache", false, true},
		{"common/s3cache", "common/config", false, true},
		{"common/s3cache", "common/job", false, false},
		{"fleeting-plugins/aws", "common/fleeting", false, true},
		{"fleeting-plugins/aws", "common/fleeting/connector", false, false},
		{"fleeting-plugins/aws", "common/fleeting/connector", true, true},
		{"fleeting-plugins/aws", "taskscaler", false, false},
		{"fleeting-plugins/aws", "common/config", false, false},
		{"fleeting-plugins/aws/awssim", "fleeting-plugins/local", false, true},
		{"fleeting-plugins/static", "fleeting-plugins/local", false, false},
		{"common/trace", "common/gitlab", false, true},
		{"common/trace", "executors", true, false},
		{"common/config", "manager", false, false},
		{"common/fleeting", "common/config", false, false},
		{"common/logging", "common/config", false, false},
		{"common/service", "internal/testenv", true, true},
		{"common/service", "internal/testenv", false, false},
	} {
		p := Package{Path: c.from}
		if c.test {
			p.TestImports = []string{c.to}
		} else {
			p.Imports = []string{c.to}
		}
		got := Check(Rules, Rigs, Forbidden, []Package{p})
		if ok := len(got) == 0; ok != c.ok {
			t.Errorf("%s -> %s (test files: %v): allowed = %v, want %v %v", c.from, c.to, c.test, ok, c.ok, got)
		}
	}
}

func TestRulesAreWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Rules {
		if seen[r.From] {
			t.Errorf("two rules for %s", r.From)
		}
		seen[r.From] = true
		if r.Why == "" {
			t.Errorf("rule %s says no why", r.From)
		}
		for _, p := range append(append([]string{r.From}, r.Allow...), r.TestAllow...) {
			wellFormed(t, p)
		}
	}
	for _, p := range append(append([]string{}, Rigs...), Forbidden...) {
		wellFormed(t, p)
	}
	for _, rig := range Rigs {
		if _, ok := ruleFor(Rules, rig); !ok {
			t.Errorf("rig %s has no rule of its own", rig)
		}
	}
}

func wellFormed(t *testing.T, pattern string) {
	t.Helper()
	base := strings.TrimSuffix(pattern, "/...")
	if pattern == "..." {
		return
	}
	if base == "" || strings.HasPrefix(base, "/") || strings.HasSuffix(base, "/") ||
		strings.Contains(base, "//") || strings.Contains(base, "...") {
		t.Errorf("pattern %q is not a module-relative path, optionally ending in /...", pattern)
	}
}

func lines(vs []Violation) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString("  " + v.String() + "\n")
	}
	return b.String()
}
