package bench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Group is the rows one Bench returned, or why it returned none.
type Group struct {
	Name    string
	Rows    []Row
	Skipped string // non-empty when the Bench was skipped or failed
}

// CheckRow reports what is wrong with a row's shape: every row has a name, a unit, a positive finite
// value, and a limit or a goal. It never looks at how good the figure is.
func CheckRow(r Row) error {
	switch {
	case strings.TrimSpace(r.Name) == "":
		return fmt.Errorf("row without a name: %+v", r)
	case strings.TrimSpace(r.Unit) == "":
		return fmt.Errorf("row %q without a unit", r.Name)
	case math.IsNaN(r.Value) || math.IsInf(r.Value, 0) || r.Value <= 0:
		return fmt.Errorf("row %q: value %v is not a positive number", r.Name, r.Value)
	case r.Limit < 0 || math.IsNaN(r.Limit) || math.IsInf(r.Limit, 0):
		return fmt.Errorf("row %q: limit %v", r.Name, r.Limit)
	case r.Limit == 0 && strings.TrimSpace(r.Goal) == "":
		return fmt.Errorf("row %q has neither a limit nor a goal", r.Name)
	case r.Limit > 0 && strings.TrimSpace(r.LimitName) == "":
		return fmt.Errorf("row %q has a limit but does not say what it is", r.Name)
	}
	return nil
}

// Num formats a figure with three significant digits, without an exponent.
func Num(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 0.01:
		return strconv.FormatFloat(v, 'f', 3, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func cells(r Row) (value, limit, ratio string) {
	value = Num(r.Value) + " " + r.Unit
	limit, ratio = "—", "—"
	if r.Limit > 0 {
		limit = Num(r.Limit) + " " + r.Unit
		ratio = Num(r.Ratio()) + "×"
	}
	return value, limit, ratio
}

// Text is the table as aligned plain text, for the terminal.
func Text(groups []Group) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ROW\tVALUE\tLIMIT\tRATIO\tGOAL\tLIMIT IS")
	for _, g := range groups {
		if g.Skipped != "" {
			fmt.Fprintf(w, "%s: skipped\t\t\t\t\t%s\n", g.Name, oneLine(g.Skipped))
			continue
		}
		for _, r := range g.Rows {
			v, l, q := cells(r)
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, v, l, q, dash(r.Goal), dash(r.LimitName))
		}
	}
	_ = w.Flush()
	return b.String()
}

// Markdown is the table as a Markdown document with the date and the machine.
func Markdown(groups []Group, m Machine, date time.Time, took time.Duration) string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by `make bench` (internal/bench); do not edit by hand. Each row is a figure, the physical\n")
	b.WriteString("limit measured in the same run, their ratio, and the goal of issue 13. A row without a limit has only a goal.\n")
	b.WriteString("`go test ./internal/bench/` runs the same rows in a short profile and checks their shape, never a figure.\n\n")
	fmt.Fprintf(&b, "- Date: %s\n", date.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- CPU: %s, %d cores\n", m.CPU, m.Cores)
	fmt.Fprintf(&b, "- Memory: %s\n", m.Memory)
	fmt.Fprintf(&b, "- Kernel: %s\n", m.Kernel)
	fmt.Fprintf(&b, "- Go: %s\n", m.Go)
	fmt.Fprintf(&b, "- Docker Engine: %s\n", m.Docker)
	fmt.Fprintf(&b, "- Run time: %s\n\n", took.Round(time.Second))
	b.WriteString("| Row | Value | Limit | Ratio | Goal | Limit is | Note |\n")
	b.WriteString("|---|---:|---:|---:|---|---|---|\n")
	for _, g := range groups {
		if g.Skipped != "" {
			fmt.Fprintf(&b, "| %s | skipped | | | | | %s |\n", md(g.Name), md(oneLine(g.Skipped)))
			continue
		}
		for _, r := range g.Rows {
			v, l, q := cells(r)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", md(r.Name), v, l, q, md(dash(r.Goal)), md(r.LimitName), md(r.Note))
		}
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func md(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Machine is what the table ran on.
type Machine struct {
	CPU    string
	Cores  int
	Memory string
	Kernel string
	Go     string
	Docker string
}

// ThisMachine reads /proc and asks the docker CLI for the engine's version ("none" without one).
func ThisMachine() Machine {
	m := Machine{CPU: "unknown", Cores: runtime.NumCPU(), Memory: "unknown", Kernel: "unknown", Go: runtime.Version(), Docker: "none"}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64); err == nil {
			m.Memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").Output(); err == nil {
		if v := strings.TrimSpace(string(out)); v != "" {
			m.Docker = v
		}
	}
	return m
}

// procField is the value of the first "key : value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
