package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestBenchTable runs every registered Bench in name order, prints the table and, with OutEnv set,
// writes it as Markdown. It asserts the shape of each row, never a figure.
func TestBenchTable(t *testing.T) {
	p := CurrentProfile()
	start := time.Now()
	var groups []Group
	for _, b := range Registered() {
		g := Group{Name: b.Name}
		ran := false
		ok := t.Run(b.Name, func(t *testing.T) {
			ran = true
			g.Rows = b.Run(t, p)
			if len(g.Rows) == 0 && !t.Skipped() {
				t.Errorf("%s returned no rows", b.Name)
			}
			for _, r := range g.Rows {
				if err := CheckRow(r); err != nil {
					t.Error(err)
				}
			}
		})
		if !ran { // left out by -run
			continue
		}
		if !ok || len(g.Rows) == 0 {
			g.Skipped = "no rows (skipped or failed; see the test log)"
			g.Rows = nil
		}
		groups = append(groups, g)
	}
	took := time.Since(start)
	profile := "full"
	if p.Short {
		profile = "short"
	}
	table := fmt.Sprintf("== bench table (%s profile, %s)\n%s== end of bench table\n", profile, took.Round(time.Second), Text(groups))
	if testing.Verbose() {
		fmt.Print(table) // unindented, so that make bench can cut it out of the log
	} else {
		t.Log("\n" + table)
	}
	if out := os.Getenv(OutEnv); out != "" {
		doc := Markdown(groups, ThisMachine(), time.Now(), took)
		if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", out)
	}
}

func TestCheckRowRefusesAShapelessRow(t *testing.T) {
	good := Row{Name: "x", Value: 1, Unit: "s", Limit: 2, LimitName: "y"}
	if err := CheckRow(good); err != nil {
		t.Fatal(err)
	}
	if r := (Row{Name: "x", Value: 1, Unit: "s", Goal: "< 2 s"}); CheckRow(r) != nil {
		t.Fatalf("a row with a goal and no limit is fine: %v", CheckRow(r))
	}
	for _, bad := range []Row{
		{Value: 1, Unit: "s", Goal: "g"},
		{Name: "x", Value: 1, Goal: "g"},
		{Name: "x", Unit: "s", Goal: "g"},
		{Name: "x", Value: 1, Unit: "s"},
		{Name: "x", Value: 1, Unit: "s", Limit: 2},
	} {
		if CheckRow(bad) == nil {
			t.Errorf("CheckRow accepted %+v", bad)
		}
	}
	if got := good.Ratio(); got != 0.5 {
		t.Fatalf("ratio %v", got)
	}
}

func TestTablesCarryEveryRow(t *testing.T) {
	groups := []Group{
		{Name: "a", Rows: []Row{{Name: "row one", Value: 1234.6, Unit: "MB/s", Limit: 5000, LimitName: "copy", Goal: "≥ 100 MB/s"}}},
		{Name: "b", Skipped: "no docker"},
	}
	txt := Text(groups)
	for _, want := range []string{"row one", "1235 MB/s", "5000 MB/s", "0.247×", "b: skipped"} {
		if !strings.Contains(txt, want) {
			t.Errorf("text table lacks %q:\n%s", want, txt)
		}
	}
	doc := Markdown(groups, Machine{CPU: "cpu", Cores: 2, Memory: "1 GiB", Kernel: "k", Go: "go", Docker: "none"}, time.Unix(0, 0), time.Second)
	for _, want := range []string{"| row one | 1235 MB/s | 5000 MB/s | 0.247× |", "| b | skipped |", "cpu, 2 cores", "1970-01-01"} {
		if !strings.Contains(doc, want) {
			t.Errorf("markdown lacks %q:\n%s", want, doc)
		}
	}
}
