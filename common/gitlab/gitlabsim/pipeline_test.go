package gitlabsim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// finish runs the job the runner is handed to the given final state.
func finish(t *testing.T, s *Server, token, state string) int64 {
	t.Helper()
	j := takeJob(t, s, token, allFeatures)
	body := map[string]any{"token": j.Token, "state": state}
	if state == "failed" {
		body["failure_reason"] = "script_failure"
	}
	if r := putJob(t, s, j.ID, body); r.code != 200 {
		t.Fatalf("final PUT = %d", r.code)
	}
	return j.ID
}

func statuses(s *Server, ids []int64) string {
	var out []string
	for _, id := range ids {
		j, _ := s.Job(id)
		out = append(out, j.Status)
	}
	return strings.Join(out, " ")
}

func TestPipelineStages(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	specs := []JobSpec{
		{Name: "build-a", Stage: "build", Script: []string{"true"}},
		{Name: "build-b", Stage: "build", Script: []string{"true"}},
		{Name: "test", Stage: "test", Script: []string{"true"}},
		{Name: "deploy", Stage: "deploy", Script: []string{"true"}},
	}
	p, err := s.CreatePipeline(specs)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(s, p.JobIDs); got != "pending pending created created" {
		t.Fatalf("at start: %s", got)
	}
	finish(t, s, token, "success")
	if got := statuses(s, p.JobIDs); got != "success pending created created" {
		t.Fatalf("after one build: %s", got)
	}
	finish(t, s, token, "success")
	if got := statuses(s, p.JobIDs); got != "success success pending created" {
		t.Fatalf("after both builds: %s", got)
	}
	tj := takeJob(t, s, token, allFeatures)
	if tj.ID != p.JobIDs[2] || len(tj.Dependencies) != 2 {
		t.Fatalf("test job %d has dependencies %+v, want both builds by default", tj.ID, tj.Dependencies)
	}
	putJob(t, s, tj.ID, map[string]any{"token": tj.Token, "state": "failed", "failure_reason": "script_failure"})
	if got := statuses(s, p.JobIDs); got != "success success failed skipped" {
		t.Fatalf("after a failed test: %s", got)
	}

	for _, bad := range [][]JobSpec{
		nil,
		{{Name: "a", Script: []string{"x"}}, {Name: "a", Script: []string{"x"}}},
		{{Name: "a"}},
		{{Name: "a", Stage: "build", Script: []string{"x"}}, {Name: "b", Stage: "build", Script: []string{"x"}, Dependencies: []string{"a"}}},
		{{Name: "a", Script: []string{"x"}, Repo: "one"}, {Name: "b", Script: []string{"x"}, Repo: "two"}},
	} {
		if _, err := s.CreatePipeline(bad); err == nil {
			t.Errorf("CreatePipeline(%+v) succeeded", bad)
		}
	}
}

func TestPipelineCancelSkipsLaterStages(t *testing.T) {
	s := newSim(t, Options{})
	p, err := s.CreatePipeline([]JobSpec{
		{Name: "a", Stage: "one", Script: []string{"x"}},
		{Name: "b", Stage: "two", Script: []string{"x"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Cancel(p.JobIDs[0]); err != nil {
		t.Fatal(err)
	}
	if got := statuses(s, p.JobIDs); got != "canceled skipped" {
		t.Fatalf("after cancel: %s", got)
	}
}

func TestLoadPipelineFile(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	p, err := s.LoadPipelineFile(filepath.Join("..", "..", "..", "cmd", "gitlabsim", "testdata", "pipeline.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.JobIDs) != 2 || statuses(s, p.JobIDs) != "pending created" {
		t.Fatalf("pipeline %+v: %s", p, statuses(s, p.JobIDs))
	}
	b := takeJob(t, s, token, allFeatures)
	if b.Image.Name != "busybox:local" || b.RunnerInfo.Timeout != 600 || len(b.Artifacts) != 1 || b.Artifacts[0].ExpireIn != "1 week" ||
		len(b.Cache) != 1 || b.Cache[0].Key != "build-cache" || b.Variables.Get("GREETING") != "hello" {
		t.Fatalf("build payload: image %q timeout %d artifacts %+v cache %+v", b.Image.Name, b.RunnerInfo.Timeout, b.Artifacts, b.Cache)
	}
	var secret, file bool
	for _, v := range b.Variables {
		secret = secret || (v.Key == "API_SECRET" && v.Masked && v.Value == "s3cr3t-Value_123")
		file = file || (v.Key == "CONFIG_FILE" && v.File && v.Value == "key = value\n")
	}
	if !secret || !file {
		t.Fatalf("masked %v, file %v variables missing", secret, file)
	}
	putJob(t, s, b.ID, map[string]any{"token": b.Token, "state": "success"})
	tj := takeJob(t, s, token, allFeatures)
	if got := tj.StepByName("script").Script; len(got) != 3 || got[0] != `echo "secret is $API_SECRET"` {
		t.Fatalf("test script %q", got)
	}
	if len(tj.Dependencies) != 1 || tj.Dependencies[0].Name != "build" || tj.StepByName("after_script") == nil {
		t.Fatalf("test job dependencies %+v", tj.Dependencies)
	}
}

func TestParsePipeline(t *testing.T) {
	good := `
stages: [build, test]
image: alpine
variables: {A: "1", RAW: {value: "$A", expand: false}}
.template: {script: [ignored]}
compile:
  stage: build
  tags: [docker]
  script: "make"
  timeout: 1h 30m
  services: [postgres, {name: redis, alias: cache}]
  artifacts:
    paths: [bin/]
    exclude: [bin/*.o]
    reports: {junit: report.xml}
  cache: [{key: k1, paths: [a], fallback_keys: [k0]}, {key: k2, paths: [b], policy: pull}]
check:
  script: [[nested, list], flat]
  dependencies: []
  variables: {A: "2"}
`
	stages, specs, err := ParsePipeline([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(stages, ",") != ".pre,build,test,.post" || len(specs) != 2 {
		t.Fatalf("stages %v, %d jobs", stages, len(specs))
	}
	c, k := specs[0], specs[1]
	if c.Image != "alpine" || c.Timeout != 90*time.Minute || len(c.Services) != 2 || c.Services[1].Alias != "cache" ||
		len(c.Artifacts) != 2 || c.Artifacts[1].ArtifactType != "junit" || c.Artifacts[1].ArtifactFormat != "gzip" ||
		len(c.Cache) != 2 || c.Cache[1].Policy != "pull" || c.Dependencies != nil {
		t.Fatalf("compile spec %+v", c)
	}
	if k.Stage != "test" || strings.Join(k.Script, ",") != "nested,list,flat" || k.Dependencies == nil || len(k.Dependencies) != 0 {
		t.Fatalf("check spec %+v", k)
	}
	if len(k.Variables) != 2 || k.Variables[0].Key != "RAW" || !k.Variables[0].Raw || k.Variables[1].Value != "2" {
		t.Fatalf("check variables %+v", k.Variables)
	}

	for _, tt := range []struct{ name, yaml, wantErr string }{
		{"not a mapping", "- a", "mapping"},
		{"no jobs", "stages: [a]", "no jobs"},
		{"no script", "j: {stage: test}", "script is required"},
		{"unknown key", "j: {script: x, bogus: 1}", `unknown key "bogus"`},
		{"unsupported key", "j: {script: x, rules: []}", "not supported"},
		{"include", "include: other.yml\nj: {script: x}", "not supported"},
		{"unknown stage", "j: {script: x, stage: nope}", `stage "nope"`},
		{"bad timeout", "j: {script: x, timeout: soon}", "invalid duration"},
		{"bad variable", "variables: {A: [1]}\nj: {script: x}", "A:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParsePipeline([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseHumanDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"3600", time.Hour}, {"10 minutes", 10 * time.Minute}, {"1h 30m", 90 * time.Minute},
		{"2 hours and 5 min", 2*time.Hour + 5*time.Minute}, {"1.5h", 90 * time.Minute}, {"1 week", 7 * 24 * time.Hour},
		{"", 0}, {"soon", 0}, {"10 parsecs", 0}, {"5m later", 0},
	} {
		got, err := parseHumanDuration(tt.in)
		if got != tt.want || (err == nil) != (tt.want != 0) {
			t.Errorf("parseHumanDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestLoadPipelineFileErrors(t *testing.T) {
	s := newSim(t, Options{})
	if _, err := s.LoadPipelineFile(filepath.Join(t.TempDir(), "missing.yml")); err == nil {
		t.Fatal("a missing file loaded")
	}
	bad := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(bad, []byte("j: {script: x, needs: [a]}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadPipelineFile(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("error %v does not name the file", err)
	}
}
