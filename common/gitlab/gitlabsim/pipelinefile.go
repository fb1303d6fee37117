package gitlabsim

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// LoadPipelineFile creates a pipeline from a .gitlab-ci.yml subset: stages, default (image, services,
// before_script, after_script, cache, artifacts, timeout) and the same keys at the top level, variables,
// and jobs with stage, image, services, before_script, script, after_script, variables,
// artifacts{name,paths,exclude,untracked,when,expire_in,reports}, cache (one or a list:
// key,paths,policy,when,untracked,fallback_keys), dependencies and timeout. Hidden jobs (".name") are
// ignored, and so are tags, allow_failure, when, retry, interruptible, environment, coverage.
//
// Variables take upstream's forms (`K: v`, `K: {value, description, expand}`; expand: false makes a raw
// variable) plus two of the sim's own: `masked: true` and `file: true`, which in GitLab only project
// settings can give.
func (s *Server) LoadPipelineFile(path string) (Pipeline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Pipeline{}, fmt.Errorf("gitlabsim: read pipeline file: %w", err)
	}
	stages, specs, err := ParsePipeline(data)
	if err != nil {
		return Pipeline{}, fmt.Errorf("gitlabsim: %s: %w", path, err)
	}
	return s.createPipeline(stages, specs)
}

// ParsePipeline reads a .gitlab-ci.yml subset (see LoadPipelineFile) into stages and job specs.
func ParsePipeline(data []byte) ([]string, []JobSpec, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, errors.New("the pipeline must be a YAML mapping")
	}
	root := doc.Content[0]
	var defaults ciJob
	var globalVars []job.Variable
	stages := []string{"build", "test", "deploy"}
	var names []string
	var jobs []*yaml.Node
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, val := root.Content[i].Value, root.Content[i+1]
		var err error
		switch {
		case key == "stages":
			err = val.Decode(&stages)
		case key == "variables":
			globalVars, err = decodeVariables(val)
		case key == "default":
			err = decodeJob(val, &defaults, defaultKeys)
		case slices.Contains(defaultKeys, key):
			err = decodeJob(&yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{root.Content[i], val}}, &defaults, defaultKeys)
		case key == "workflow" || strings.HasPrefix(key, "."):
		case slices.Contains(unsupportedKeys, key):
			err = errors.New("not supported by gitlabsim")
		default:
			names = append(names, key)
			jobs = append(jobs, val)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	stages = append(append([]string{".pre"}, stages...), ".post")
	specs := make([]JobSpec, 0, len(jobs))
	for i, node := range jobs {
		spec, err := jobSpec(names[i], node, defaults, globalVars)
		if err != nil {
			errs = append(errs, fmt.Errorf("jobs:%s: %w", names[i], err))
			continue
		}
		if !slices.Contains(stages, spec.Stage) {
			errs = append(errs, fmt.Errorf("jobs:%s: stage %q is not defined in stages", names[i], spec.Stage))
		}
		specs = append(specs, spec)
	}
	if len(specs) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no jobs defined"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return stages, specs, nil
}

var (
	defaultKeys     = []string{"image", "services", "before_script", "after_script", "cache", "artifacts", "timeout"}
	jobKeys         = append([]string{"stage", "script", "variables", "dependencies"}, defaultKeys...)
	ignoredJobKeys  = []string{"tags", "allow_failure", "when", "retry", "interruptible", "environment", "coverage", "resource_group"}
	unsupportedKeys = []string{"include", "extends", "rules", "only", "except", "needs", "parallel", "trigger", "inherit"}
)

// ciJob is one job (or the defaults) as written in YAML.
type ciJob struct {
	Stage        string       `yaml:"stage"`
	Image        *ciImage     `yaml:"image"`
	Services     []ciImage    `yaml:"services"`
	BeforeScript *ciScript    `yaml:"before_script"`
	Script       ciScript     `yaml:"script"`
	AfterScript  *ciScript    `yaml:"after_script"`
	Artifacts    *ciArtifacts `yaml:"artifacts"`
	Cache        *ciCaches    `yaml:"cache"`
	Dependencies *[]string    `yaml:"dependencies"`
	Timeout      string       `yaml:"timeout"`
	variables    []job.Variable
}

// decodeJob checks the keys of node against allowed (plus the ignored ones) and decodes it into j.
func decodeJob(node *yaml.Node, j *ciJob, allowed []string) error {
	if node.Kind != yaml.MappingNode {
		return errors.New("must be a mapping")
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k := node.Content[i].Value
		switch {
		case slices.Contains(unsupportedKeys, k):
			return fmt.Errorf("key %q is not supported by gitlabsim", k)
		case k == "variables" && slices.Contains(allowed, k):
			vs, err := decodeVariables(node.Content[i+1])
			if err != nil {
				return fmt.Errorf("variables: %w", err)
			}
			j.variables = vs
		case !slices.Contains(allowed, k) && !slices.Contains(ignoredJobKeys, k):
			return fmt.Errorf("config contains unknown key %q", k)
		}
	}
	return node.Decode(j)
}

func jobSpec(name string, node *yaml.Node, d ciJob, globalVars []job.Variable) (JobSpec, error) {
	var j ciJob
	if err := decodeJob(node, &j, jobKeys); err != nil {
		return JobSpec{}, err
	}
	if len(j.Script) == 0 {
		return JobSpec{}, errors.New("script is required")
	}
	spec := JobSpec{Name: name, Stage: j.Stage, Script: j.Script, Dependencies: derefOr(j.Dependencies, nil)}
	if spec.Stage == "" {
		spec.Stage = "test"
	}
	if img := firstNonNil(j.Image, d.Image); img != nil {
		spec.Image = img.Name
	}
	services := j.Services
	if services == nil {
		services = d.Services
	}
	for _, sv := range services {
		spec.Services = append(spec.Services, sv.Image)
	}
	spec.BeforeScript = derefOr(firstNonNil(j.BeforeScript, d.BeforeScript), nil)
	spec.AfterScript = derefOr(firstNonNil(j.AfterScript, d.AfterScript), nil)
	if a := firstNonNil(j.Artifacts, d.Artifacts); a != nil {
		spec.Artifacts = a.artifacts()
	}
	if c := firstNonNil(j.Cache, d.Cache); c != nil {
		spec.Cache = *c
	}
	if t := cmp.Or(j.Timeout, d.Timeout); t != "" {
		dur, err := parseHumanDuration(t)
		if err != nil {
			return JobSpec{}, fmt.Errorf("timeout: %w", err)
		}
		spec.Timeout = dur
	}
	for _, v := range globalVars {
		if !slices.ContainsFunc(j.variables, func(o job.Variable) bool { return o.Key == v.Key }) {
			spec.Variables = append(spec.Variables, v)
		}
	}
	spec.Variables = append(spec.Variables, j.variables...)
	return spec, nil
}

func firstNonNil[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func derefOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// decodeVariables reads `K: v` and `K: {value, description, expand, masked, file}` in file order.
func decodeVariables(node *yaml.Node) ([]job.Variable, error) {
	if node.Kind != yaml.MappingNode {
		return nil, errors.New("variables must be a mapping")
	}
	var out []job.Variable
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i].Value, node.Content[i+1]
		v := job.Variable{Key: key, Public: true}
		switch val.Kind {
		case yaml.ScalarNode:
			v.Value = val.Value
		case yaml.MappingNode:
			var full struct {
				Value       string   `yaml:"value"`
				Description string   `yaml:"description"`
				Expand      *bool    `yaml:"expand"`
				Masked      bool     `yaml:"masked"`
				File        bool     `yaml:"file"`
				Options     []string `yaml:"options"`
			}
			if err := val.Decode(&full); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			v.Value, v.Masked, v.File = full.Value, full.Masked, full.File
			v.Raw = full.Expand != nil && !*full.Expand
			v.Public = !v.Masked && !v.File
		default:
			return nil, fmt.Errorf("%s: must be a string or a mapping with value", key)
		}
		out = append(out, v)
	}
	return out, nil
}

// ciScript is a script line or a list of lines (nested lists are flattened, as GitLab does).
type ciScript []string

func (s *ciScript) UnmarshalYAML(n *yaml.Node) error {
	var walk func(n *yaml.Node) error
	walk = func(n *yaml.Node) error {
		switch n.Kind {
		case yaml.ScalarNode:
			*s = append(*s, n.Value)
		case yaml.SequenceNode:
			for _, c := range n.Content {
				if err := walk(c); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("line %d: a script is a string or a list of strings", n.Line)
		}
		return nil
	}
	*s = ciScript{}
	return walk(n)
}

// ciImage is `name` or {name, entrypoint, alias, command, variables, pull_policy, docker{platform, user}}.
type ciImage struct{ job.Image }

func (i *ciImage) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		i.Name = n.Value
		return nil
	}
	var full struct {
		Name       string     `yaml:"name"`
		Entrypoint []string   `yaml:"entrypoint"`
		Alias      string     `yaml:"alias"`
		Command    []string   `yaml:"command"`
		Variables  yaml.Node  `yaml:"variables"`
		PullPolicy yaml.Node  `yaml:"pull_policy"`
		Docker     *yaml.Node `yaml:"docker"`
	}
	if err := n.Decode(&full); err != nil {
		return err
	}
	i.Name, i.Entrypoint, i.Alias, i.Command = full.Name, full.Entrypoint, full.Alias, full.Command
	if full.Variables.Kind != 0 {
		vs, err := decodeVariables(&full.Variables)
		if err != nil {
			return err
		}
		i.Variables = vs
	}
	switch full.PullPolicy.Kind {
	case yaml.ScalarNode:
		i.PullPolicy = []string{full.PullPolicy.Value}
	case yaml.SequenceNode:
		if err := full.PullPolicy.Decode(&i.PullPolicy); err != nil {
			return err
		}
	}
	if full.Docker != nil {
		var d struct {
			Platform string `yaml:"platform"`
			User     string `yaml:"user"`
		}
		if err := full.Docker.Decode(&d); err != nil {
			return err
		}
		i.ExecutorOpts = &job.ExecutorOpts{Docker: job.DockerOpts{Platform: d.Platform, User: job.StringOrInt(d.User)}}
	}
	if i.Name == "" {
		return fmt.Errorf("line %d: image name is required", n.Line)
	}
	return nil
}

// ciArtifacts is the artifacts keyword; reports become extra entries as GitLab sends them.
type ciArtifacts struct {
	Name      string              `yaml:"name"`
	Paths     []string            `yaml:"paths"`
	Exclude   []string            `yaml:"exclude"`
	Untracked bool                `yaml:"untracked"`
	When      string              `yaml:"when"`
	ExpireIn  string              `yaml:"expire_in"`
	Reports   map[string]ciScript `yaml:"reports"`
	ExposeAs  string              `yaml:"expose_as"`
	Public    *bool               `yaml:"public"`
}

// reportFormats are the default file name and fixed format of each report type.
var reportFormats = map[string][2]string{
	"junit": {"junit.xml", "gzip"}, "dotenv": {".env", "gzip"}, "cobertura": {"cobertura-coverage.xml", "gzip"},
	"metrics": {"metrics.txt", "gzip"}, "annotations": {"gl-annotations.json", "gzip"},
	"cyclonedx": {"gl-sbom.cdx.json", "gzip"}, "lsif": {"lsif.json", "zip"},
	"terraform": {"tfplan.json", "raw"}, "accessibility": {"gl-accessibility.json", "raw"},
	"codequality": {"gl-code-quality-report.json", "raw"}, "sast": {"gl-sast-report.json", "raw"},
	"secret_detection":    {"gl-secret-detection-report.json", "raw"},
	"dependency_scanning": {"gl-dependency-scanning-report.json", "raw"},
	"container_scanning":  {"gl-container-scanning-report.json", "raw"}, "dast": {"gl-dast-report.json", "raw"},
}

func (a *ciArtifacts) artifacts() []job.Artifact {
	var out []job.Artifact
	if len(a.Paths) > 0 || a.Untracked {
		out = append(out, job.Artifact{
			Name: a.Name, Untracked: a.Untracked, Paths: a.Paths, Exclude: a.Exclude, When: a.When,
			ExpireIn: a.ExpireIn, ArtifactType: "archive", ArtifactFormat: "zip",
		})
	}
	types := make([]string, 0, len(a.Reports))
	for t := range a.Reports {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		f, ok := reportFormats[t]
		if !ok {
			f = [2]string{t, "raw"}
		}
		out = append(out, job.Artifact{
			Name: f[0], Paths: a.Reports[t], When: job.WhenAlways, ExpireIn: a.ExpireIn,
			ArtifactType: t, ArtifactFormat: f[1],
		})
	}
	return out
}

// ciCaches is one cache mapping or a list of them.
type ciCaches []job.Cache

func (c *ciCaches) UnmarshalYAML(n *yaml.Node) error {
	type entry struct {
		Key          string   `yaml:"key"`
		Paths        []string `yaml:"paths"`
		Policy       string   `yaml:"policy"`
		When         string   `yaml:"when"`
		Untracked    bool     `yaml:"untracked"`
		FallbackKeys []string `yaml:"fallback_keys"`
		Unprotect    bool     `yaml:"unprotect"`
	}
	var list []entry
	switch n.Kind {
	case yaml.MappingNode:
		var e entry
		if err := n.Decode(&e); err != nil {
			return err
		}
		list = []entry{e}
	case yaml.SequenceNode:
		if err := n.Decode(&list); err != nil {
			return err
		}
	default:
		return fmt.Errorf("line %d: cache is a mapping or a list of mappings", n.Line)
	}
	for _, e := range list {
		*c = append(*c, job.Cache{Key: e.Key, Paths: e.Paths, Policy: e.Policy, When: e.When, Untracked: e.Untracked, FallbackKeys: e.FallbackKeys})
	}
	return nil
}

var durationPart = regexp.MustCompile(`(\d+(?:\.\d+)?)\s*([a-zA-Z]*)`)

var durationUnits = map[string]time.Duration{
	"": time.Second, "s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hrs": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
}

// parseHumanDuration reads GitLab's timeout forms: "1h 30m", "90 minutes", "2 hours 10 min", "3600".
func parseHumanDuration(s string) (time.Duration, error) {
	rest := strings.TrimSpace(s)
	var total time.Duration
	matches := durationPart.FindAllStringSubmatchIndex(rest, -1)
	if len(matches) == 0 {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	last := 0
	for _, m := range matches {
		if strings.Trim(rest[last:m[0]], " ,and") != "" {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		n, err := strconv.ParseFloat(rest[m[2]:m[3]], 64)
		unit, ok := durationUnits[strings.ToLower(rest[m[4]:m[5]])]
		if err != nil || !ok {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		total += time.Duration(n * float64(unit))
		last = m[1]
	}
	if strings.TrimSpace(rest[last:]) != "" || total <= 0 {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return total, nil
}
