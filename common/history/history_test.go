package history_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/history"
)

func TestAppendRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", history.FileName(42, "abc"))
	w := history.NewWriter(400)
	created := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for i := range 20 {
		rec := history.Record{Created: created.Add(time.Duration(i) * time.Minute), Duration: 1500 * time.Millisecond, Pipeline: "7", Runner: `fleet, "eu"`, JobID: int64(i)}
		if err := w.Append(path, rec); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatalf("no rotated file: %v", err)
	}
	for name, data := range map[string][]byte{"current": cur, "rotated": old} {
		if len(data) > 400 {
			t.Errorf("%s file has %d bytes, bound 400", name, len(data))
		}
		if !strings.HasPrefix(string(data), history.Header+"\n") {
			t.Errorf("%s file does not start with the header:\n%s", name, data)
		}
	}
	lines := strings.Split(strings.TrimSpace(string(cur)), "\n")
	if !strings.HasSuffix(lines[len(lines)-1], ",19") {
		t.Errorf("last line %q is not the last job", lines[len(lines)-1])
	}
}

func TestAppendLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.csv")
	rec := history.Record{Created: time.Date(2026, 12, 1, 8, 0, 0, 500e6, time.UTC), Duration: 1500 * time.Millisecond, Pipeline: "7", Runner: `fleet, "eu"`, JobID: 9}
	if err := history.NewWriter(0).Append(path, rec); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	want := history.Header + "\n" + `1796112000.500,1.500,7,2026-12-01T08:00:00Z,"fleet, ""eu""",9` + "\n"
	if string(data) != want {
		t.Errorf("file =\n%s\nwant\n%s", data, want)
	}
}

// A closed Writer (its manager stopped) writes nothing, not even the directory.
func TestAppendAfterClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	w := history.NewWriter(0)
	w.Close()
	if err := w.Append(filepath.Join(dir, "h.csv"), history.Record{Created: time.Now()}); err != nil {
		t.Fatalf("Append after Close = %v, want nil", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Append after Close made %s (stat: %v)", dir, err)
	}
}

func TestAppendUnwritable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := history.NewWriter(0).Append(filepath.Join(file, "sub", "h.csv"), history.Record{Created: time.Now()})
	if err == nil || !strings.Contains(err.Error(), "state directory") {
		t.Fatalf("Append under a file = %v, want an error naming the state directory", err)
	}
}

func TestFileName(t *testing.T) {
	if got := history.FileName(12, "x"); got != "job-history-runner-12.csv" {
		t.Errorf("FileName(12) = %q", got)
	}
	if got := history.FileName(0, "t1/..ab"); got != "job-history-t1___ab.csv" {
		t.Errorf("FileName(token) = %q", got)
	}
}
