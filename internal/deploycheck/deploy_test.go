package deploycheck_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

var (
	dashboardPath = filepath.Join("..", "..", "deploy", "grafana", "fleetrunner.json")
	alertsPath    = filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml")
)

// prometheusOwn are the series Prometheus makes itself for every scrape target, which rules may use
// beside the exported metrics.
var prometheusOwn = []string{"up"}

type panel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type templateVariable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"`
}

type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []templateVariable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

// queries returns the dashboard's PromQL queries by where they are: panel titles and variable names.
func (d dashboard) queries(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q queries data source %q, not the dashboard's ${datasource} variable", p.Title, tg.Datasource.UID)
				}
				out["panel "+p.Title] = append(out["panel "+p.Title], tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		out["variable "+v.Name] = append(out["variable "+v.Name], q.Query)
	}
	return out
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert string `yaml:"alert"`
			Expr  string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readAlerts(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatalf("%s: %v", alertsPath, err)
	}
	return rf
}

// checkNames fails for every metric a query names that is not in exported.
func checkNames(t *testing.T, file string, queries map[string][]string, exported map[string]bool, extra []string) {
	t.Helper()
	for where, exprs := range queries {
		for _, expr := range exprs {
			names := metricNames(expr)
			if len(names) == 0 {
				t.Errorf("%s: %s: a query that names no metric: %s", file, where, expr)
			}
			for _, n := range names {
				if !exported[n] && !slices.Contains(extra, n) {
					t.Errorf("%s: %s: %s is not a metric fleetrunner exports (query %s)", file, where, n, expr)
				}
			}
		}
	}
}

// TestDashboardNamesOnlyExportedMetrics: every query of the Grafana dashboard selects metrics the
// binary exports, and the dashboard has the panels operators look for.
func TestDashboardNamesOnlyExportedMetrics(t *testing.T) {
	d := readDashboard(t)
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: Grafana 9 and later expect 36 or more", d.SchemaVersion)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v templateVariable) bool { return v.Name == "datasource" && v.Type == "datasource" }) {
		t.Error("no datasource variable: the dashboard would be bound to one Prometheus")
	}
	queries := d.queries(t)
	var all strings.Builder
	for _, exprs := range queries {
		all.WriteString(strings.Join(exprs, "\n"))
	}
	for _, metric := range []string{
		"gitlab_runner_jobs_total", "gitlab_runner_failed_jobs_total", "gitlab_runner_job_queue_duration_seconds_bucket",
		"fleetrunner_job_slot_wait_seconds_bucket", "fleeting_provisioner_instances", "fleetrunner_instance_seconds_total",
		"fleeting_provisioner_instance_creation_time_seconds_bucket", "fleeting_taskscaler_task_instance_readiness_time_seconds_bucket",
		"fleetrunner_cloud_api_requests_total",
	} {
		if !strings.Contains(all.String(), metric) {
			t.Errorf("no panel charts %s", metric)
		}
	}
	checkNames(t, dashboardPath, queries, exportedMetrics(t), nil)
}

// TestAlertsPassPromtoolAndNameExportedMetrics: the alerting rules load in Prometheus (promtool check
// rules) and select only metrics the binary exports, or Prometheus' own up.
func TestAlertsPassPromtoolAndNameExportedMetrics(t *testing.T) {
	rf := readAlerts(t)
	queries := map[string][]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			queries["alert "+r.Alert] = append(queries["alert "+r.Alert], r.Expr)
		}
	}
	for _, alert := range []string{"FleetrunnerInstancesFailReadiness", "FleetrunnerDesiredNotActual", "FleetrunnerRunnerUnhealthy",
		"FleetrunnerJobsWaitForSlots", "FleetrunnerCloudThrottling"} {
		if _, ok := queries["alert "+alert]; !ok {
			t.Errorf("no alert %s", alert)
		}
	}
	checkNames(t, alertsPath, queries, exportedMetrics(t), prometheusOwn)

	promtool := testenv.RequireCommand(t, "promtool", "apt-get install prometheus (Debian's package has promtool)")
	out, err := exec.CommandContext(t.Context(), promtool, "check", "rules", alertsPath).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules %s: %v\n%s", alertsPath, err, out)
	}
}
