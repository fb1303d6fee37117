package deploycheck_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	stringLiteral = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	matchers      = regexp.MustCompile(`\{[^}]*\}`)
	rangeOrOffset = regexp.MustCompile(`\[[^\]]*\]`)
	grouping      = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	variable      = regexp.MustCompile(`\$\{?\w+\}?`)
	identifier    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	labelValues   = regexp.MustCompile(`^\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
)

// promqlKeywords are the words of PromQL that are neither metrics nor functions.
var promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
	"group_left", "group_right", "inf", "nan", "atan2"}

// metricNames returns the metric names a PromQL expression (Grafana variables allowed) selects. It is
// not a PromQL parser: strings, label matchers, ranges, grouping clauses and variables are cut out,
// and what is left that names no function or keyword is a metric.
func metricNames(expr string) []string {
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		return []string{m[1]}
	}
	s := stringLiteral.ReplaceAllString(expr, " ")
	s = matchers.ReplaceAllString(s, " ")
	s = rangeOrOffset.ReplaceAllString(s, " ")
	s = grouping.ReplaceAllString(s, " ")
	s = variable.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range identifier.FindAllStringIndex(s, -1) {
		word := s[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(s[loc[0]-1:loc[0]], "0123456789.") {
			continue // the unit of a number or duration: 1e3, 5m
		}
		if strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			continue // a function
		}
		if slices.Contains(promqlKeywords, strings.ToLower(word)) {
			continue
		}
		if !slices.Contains(names, word) {
			names = append(names, word)
		}
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{runner=~"$runner"}[$__rate_interval])))`: {"a_seconds_bucket"},
		`sum(rate(x_total{state="idle"}[1h])) / sum(rate(x_total[1h]))`:                                       {"x_total"},
		`a != on (runner, system_id) sum by (runner, system_id) (b{state!="deleting"})`:                       {"a", "b"},
		`sum(c) or vector(0)`:                       {"c"},
		`up{job="fleetrunner"} == 0`:                {"up"},
		`label_values(gitlab_runner_limit, runner)`: {"gitlab_runner_limit"},
		`rate(d[5m] offset 1h) > 1e3 unless e`:      {"d", "e"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}
