package docscheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const operationsDoc = "../../docs/operations.md"

// goSource is the text of the module's non-test Go files, whitespace collapsed, where the log lines and
// metric names that docs/operations.md quotes must be found.
func goSource(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "tools" || strings.HasPrefix(d.Name(), ".")) && path != "../.." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		b.Write(src)
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// commands are the first words of code spans that are shell commands or settings, not quotes of
// fleetrunner's output.
var commands = map[string]bool{"sudo": true, "systemctl": true, "journalctl": true, "fleetrunner": true, "make": true, "run": true, "retry:": true, "promtool": true}

// TestOperationsQuotesRealLogLines checks that every log line, job-log line and error docs/operations.md
// quotes is one the code writes: a reworded log message must take the runbook with it. "…" stands for
// the variable parts; each fixed part of 12 or more characters must be in the source.
func TestOperationsQuotesRealLogLines(t *testing.T) {
	raw, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	// Fenced blocks are commands, and their backticks would pair up with the spans'.
	prose := regexp.MustCompile("(?s)```.*?```").ReplaceAllString(string(raw), "")
	doc := strings.Join(strings.Fields(prose), " ")
	src := goSource(t)
	checked := 0
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(doc, -1) {
		span := m[1]
		words := strings.Fields(span)
		if len(words) < 3 || commands[words[0]] || strings.Contains(span, "=") {
			continue
		}
		for part := range strings.SplitSeq(span, "…") {
			part = strings.TrimSpace(part)
			if len(part) < 12 {
				continue
			}
			checked++
			if !strings.Contains(src, part) {
				t.Errorf("docs/operations.md quotes %q; no Go source writes it", part)
			}
		}
	}
	if checked < 30 {
		t.Fatalf("checked %d quotes; the doc or the parsing changed", checked)
	}
}

// TestOperationsNamesRealMetricsAndFiles checks the metric names, alert names and deploy files the
// runbook points at.
func TestOperationsNamesRealMetricsAndFiles(t *testing.T) {
	raw, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	src := goSource(t)
	metrics := regexp.MustCompile(`\b(?:gitlab_runner|fleeting|fleetrunner)_[a-z_]+\b`).FindAllString(doc, -1)
	if len(metrics) < 20 {
		t.Fatalf("found %d metric names in docs/operations.md", len(metrics))
	}
	for _, name := range metrics {
		if !strings.Contains(src, `"`+name+`"`) {
			t.Errorf("docs/operations.md names metric %s; no Go source defines it", name)
		}
	}
	alerts, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`\bFleetrunner[A-Z][A-Za-z]+\b`).FindAllString(doc, -1) {
		if !strings.Contains(string(alerts), "alert: "+name+"\n") {
			t.Errorf("docs/operations.md names alert %s; deploy/prometheus/alerts.yml has no such rule", name)
		}
	}
	for _, path := range regexp.MustCompile(`\bdeploy/[a-z/]+\.[a-z]+\b`).FindAllString(doc, -1) {
		if _, err := os.Stat("../../" + path); err != nil {
			t.Errorf("docs/operations.md points at %s: %v", path, err)
		}
	}
}
