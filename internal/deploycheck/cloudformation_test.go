package deploycheck_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var (
	kitPath    = filepath.Join("..", "..", "deploy", "aws", "fleetrunner-asg.yaml")
	policyPath = filepath.Join("..", "..", "deploy", "aws", "iam-policy.json")
)

// pseudoParameters are the names CloudFormation defines in every stack.
var pseudoParameters = []string{"AWS::AccountId", "AWS::NoValue", "AWS::NotificationARNs", "AWS::Partition",
	"AWS::Region", "AWS::StackId", "AWS::StackName", "AWS::URLSuffix"}

// cfnTemplate is a template with every value in long form: scalars are strings, short tags such as
// !Ref or !If are maps as in JSON ({"Ref": …}, {"Fn::If": […]}).
type cfnTemplate struct {
	Parameters map[string]map[string]any
	Conditions map[string]any
	Rules      map[string]any
	Resources  map[string]map[string]any
	Outputs    map[string]any
}

// longForm turns a YAML node into plain values, rewriting CloudFormation's short tags to the JSON
// form, so that the checks need not know which form a template author chose.
func longForm(n *yaml.Node) (any, error) {
	var v any
	switch n.Kind {
	case yaml.DocumentNode:
		return longForm(n.Content[0])
	case yaml.AliasNode:
		return longForm(n.Alias)
	case yaml.ScalarNode:
		v = n.Value
	case yaml.SequenceNode:
		list := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			e, err := longForm(c)
			if err != nil {
				return nil, err
			}
			list = append(list, e)
		}
		v = list
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			e, err := longForm(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[n.Content[i].Value] = e
		}
		v = m
	}
	if !strings.HasPrefix(n.Tag, "!") || strings.HasPrefix(n.Tag, "!!") {
		return v, nil
	}
	switch fn := n.Tag[1:]; fn {
	case "Ref", "Condition":
		return map[string]any{fn: v}, nil
	case "GetAtt":
		if s, ok := v.(string); ok {
			res, attr, found := strings.Cut(s, ".")
			if !found {
				return nil, fmt.Errorf("line %d: !GetAtt %q: want Resource.Attribute", n.Line, s)
			}
			v = []any{res, attr}
		}
		return map[string]any{"Fn::GetAtt": v}, nil
	default:
		return map[string]any{"Fn::" + fn: v}, nil
	}
}

func parseTemplate(raw []byte) (cfnTemplate, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return cfnTemplate{}, err
	}
	plain, err := longForm(&doc)
	if err != nil {
		return cfnTemplate{}, err
	}
	// Round-trip through JSON into the typed sections: the long form is JSON's.
	b, err := json.Marshal(plain)
	if err != nil {
		return cfnTemplate{}, err
	}
	var tmpl cfnTemplate
	if err := json.Unmarshal(b, &tmpl); err != nil {
		return cfnTemplate{}, err
	}
	return tmpl, nil
}

func readKit(t *testing.T) cfnTemplate {
	t.Helper()
	raw, err := os.ReadFile(kitPath)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := parseTemplate(raw)
	if err != nil {
		t.Fatalf("%s: %v", kitPath, err)
	}
	return tmpl
}

var subVariable = regexp.MustCompile(`\$\{([^}!][^}]*)\}`)

// references lists what v names: Ref targets, Fn::GetAtt and Fn::Sub resources and parameters, and
// conditions (Fn::If's first argument and the !Condition form).
type references struct {
	refs, conditions []string
}

func (r *references) walk(v any) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			r.walk(e)
		}
	case map[string]any:
		if len(x) == 1 {
			for fn, arg := range x {
				if r.function(fn, arg) {
					return
				}
			}
		}
		for _, e := range x {
			r.walk(e)
		}
	}
}

// function records what one intrinsic function names and reports whether its arguments are done.
func (r *references) function(fn string, arg any) bool {
	switch fn {
	case "Ref":
		if s, ok := arg.(string); ok {
			r.refs = append(r.refs, s)
			return true
		}
	case "Condition":
		// An IAM policy's Condition is a map; a condition reference is a name.
		if s, ok := arg.(string); ok {
			r.conditions = append(r.conditions, s)
			return true
		}
	case "Fn::GetAtt":
		if args, ok := arg.([]any); ok && len(args) == 2 {
			if s, ok := args[0].(string); ok {
				r.refs = append(r.refs, s)
				return true
			}
		}
	case "Fn::If":
		if args, ok := arg.([]any); ok && len(args) == 3 {
			if s, ok := args[0].(string); ok {
				r.conditions = append(r.conditions, s)
			}
			r.walk(args[1:])
			return true
		}
	case "Fn::Sub":
		text, vars := arg, map[string]any{}
		if args, ok := arg.([]any); ok && len(args) == 2 {
			text = args[0]
			vars, _ = args[1].(map[string]any)
			r.walk(args[1])
		}
		s, _ := text.(string)
		for _, m := range subVariable.FindAllStringSubmatch(s, -1) {
			if _, local := vars[m[1]]; local {
				continue
			}
			name, _, _ := strings.Cut(m[1], ".")
			if strings.HasPrefix(m[1], "AWS::") {
				name = m[1]
			}
			r.refs = append(r.refs, name)
		}
		return true
	}
	return false
}

// templateProblems lists every name the template uses but does not declare.
func templateProblems(tmpl cfnTemplate) []string {
	declared := map[string]bool{}
	for _, p := range pseudoParameters {
		declared[p] = true
	}
	for name := range tmpl.Parameters {
		declared[name] = true
	}
	for name := range tmpl.Resources {
		declared[name] = true
	}
	var problems []string
	check := func(where string, v any, resourceCondition string) {
		var r references
		r.walk(v)
		if resourceCondition != "" {
			r.conditions = append(r.conditions, resourceCondition)
		}
		for _, ref := range r.refs {
			if !declared[ref] {
				problems = append(problems, fmt.Sprintf("%s: %s is no parameter, resource or pseudo parameter", where, ref))
			}
		}
		for _, c := range r.conditions {
			if _, ok := tmpl.Conditions[c]; !ok {
				problems = append(problems, fmt.Sprintf("%s: condition %s is not declared", where, c))
			}
		}
	}
	for name, c := range tmpl.Conditions {
		check("condition "+name, c, "")
	}
	for name, rule := range tmpl.Rules {
		check("rule "+name, rule, "")
	}
	for name, res := range tmpl.Resources {
		cond, _ := res["Condition"].(string)
		check("resource "+name, res["Properties"], cond)
		check("resource "+name+" DependsOn", dependsOn(res["DependsOn"]), "")
	}
	for name, out := range tmpl.Outputs {
		check("output "+name, out, "")
	}
	sort.Strings(problems)
	return problems
}

// dependsOn turns a DependsOn value into Refs, so that its names are checked like any other.
func dependsOn(v any) []any {
	var names []any
	switch x := v.(type) {
	case string:
		names = append(names, map[string]any{"Ref": x})
	case []any:
		for _, n := range x {
			names = append(names, map[string]any{"Ref": n})
		}
	}
	return names
}

// TestKitNamesOnlyWhatItDeclares: every Ref, GetAtt, Sub variable and condition in the kit is declared;
// the checker itself finds each kind of mistake.
func TestKitNamesOnlyWhatItDeclares(t *testing.T) {
	kit, err := os.ReadFile(kitPath)
	if err != nil {
		t.Fatal(err)
	}
	const base = `
Parameters:
  GroupName: {Type: String}
Conditions:
  Always: !Equals [a, a]
Resources:
  Group:
    Type: AWS::AutoScaling::AutoScalingGroup
    Properties:
`
	cases := []struct {
		name     string
		template string
		want     []string
	}{
		{"the kit", string(kit), nil},
		{"declared names", base + `      Name: !Sub ["${GroupName}-${AWS::Region}-${Local}-${!Literal}", {Local: !Ref GroupName}]
      Size: !If [Always, !Ref GroupName, !Ref "AWS::NoValue"]
      Id: !GetAtt Group.Arn
`, nil},
		{"unknown Ref", base + "      Name: !Ref GroupNmae\n",
			[]string{"resource Group: GroupNmae is no parameter, resource or pseudo parameter"}},
		{"unknown Sub variable", base + "      Name: !Sub \"${GroupNmae}-${AWS::Regoin}\"\n",
			[]string{"resource Group: AWS::Regoin is no parameter, resource or pseudo parameter",
				"resource Group: GroupNmae is no parameter, resource or pseudo parameter"}},
		{"unknown GetAtt", base + "      Id: !GetAtt Gruop.Arn\n",
			[]string{"resource Group: Gruop is no parameter, resource or pseudo parameter"}},
		{"unknown Fn::If condition", base + "      Size: {\"Fn::If\": [Sometimes, 1, 2]}\n",
			[]string{"resource Group: condition Sometimes is not declared"}},
		{"unknown nested condition", strings.Replace(base, "Always: !Equals [a, a]", "Always: !And [!Condition Never, !Equals [a, a]]", 1) + "      Size: 1\n",
			[]string{"condition Always: condition Never is not declared"}},
		{"unknown resource condition", base + "      Size: 1\n    Condition: Sometimes\n",
			[]string{"resource Group: condition Sometimes is not declared"}},
		{"an IAM policy condition is no template condition", base + `      PolicyDocument:
        Statement:
          - Condition: {StringEquals: {"aws:ResourceTag/x": !Ref GroupName}}
`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tmpl, err := parseTemplate([]byte(c.template))
			if err != nil {
				t.Fatal(err)
			}
			if got := templateProblems(tmpl); !slices.Equal(got, c.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

// TestKitParameters: the kit's parameters for instance types, spot and the warm pool, with the
// defaults docs/aws.md describes (one on-demand type, no warm pool).
func TestKitParameters(t *testing.T) {
	tmpl := readKit(t)
	cases := []struct {
		name, typ, def string
		allowed        []string
	}{
		{"InstanceTypes", "CommaDelimitedList", "t3.medium", nil},
		{"InstanceVCpuMin", "Number", "0", nil},
		{"InstanceVCpuMax", "Number", "0", nil},
		{"InstanceMemoryMiBMin", "Number", "0", nil},
		{"InstanceMemoryMiBMax", "Number", "0", nil},
		{"OnDemandBaseCapacity", "Number", "0", nil},
		{"OnDemandPercentageAboveBaseCapacity", "Number", "100", nil},
		{"SpotAllocationStrategy", "String", "price-capacity-optimized",
			[]string{"price-capacity-optimized", "capacity-optimized", "lowest-price", "capacity-optimized-prioritized"}},
		{"WarmPoolMinSize", "Number", "0", nil},
		{"WarmPoolState", "String", "Stopped", []string{"Stopped", "Hibernated", "Running"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, ok := tmpl.Parameters[c.name]
			if !ok {
				t.Fatalf("no parameter %s", c.name)
			}
			if p["Type"] != c.typ || p["Default"] != c.def {
				t.Errorf("%s: Type %v, Default %v; want %s, %s", c.name, p["Type"], p["Default"], c.typ, c.def)
			}
			var allowed []string
			if list, ok := p["AllowedValues"].([]any); ok {
				for _, v := range list {
					allowed = append(allowed, fmt.Sprint(v))
				}
			}
			if !slices.Equal(allowed, c.allowed) {
				t.Errorf("%s: AllowedValues %v, want %v", c.name, allowed, c.allowed)
			}
		})
	}
	if _, ok := tmpl.Parameters["InstanceType"]; ok {
		t.Error("parameter InstanceType is still there beside InstanceTypes")
	}
}

// at follows a path of map keys and list indexes through a long-form value.
func at(v any, path ...any) any {
	for _, step := range path {
		switch s := step.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[s]
		case int:
			l, _ := v.([]any)
			if s >= len(l) {
				return nil
			}
			v = l[s]
		}
	}
	return v
}

// conditional returns the condition and both branches of an Fn::If, or fails.
func conditional(t *testing.T, where string, v any) (cond string, yes, no any) {
	t.Helper()
	args, ok := at(v, "Fn::If").([]any)
	if !ok || len(args) != 3 {
		t.Fatalf("%s is %v, want an Fn::If", where, v)
	}
	cond, _ = args[0].(string)
	return cond, args[1], args[2]
}

// names lists what v refers to, for assertions that only need to know a value depends on a name.
func names(v any) []string {
	var r references
	r.walk(v)
	return append(r.refs, r.conditions...)
}

var (
	noValue       = map[string]any{"Ref": "AWS::NoValue"}
	latestVersion = map[string]any{"Fn::GetAtt": []any{"LaunchTemplate", "LatestVersionNumber"}}
)

func ref(name string) map[string]any { return map[string]any{"Ref": name} }

// TestKitGroupMixesInstanceTypes: with several types, attribute-based selection or spot, the group
// launches through a mixed instances policy built from the parameters; otherwise from the plain
// launch template, as a warm pool needs. Both use the launch template's newest version.
func TestKitGroupMixesInstanceTypes(t *testing.T) {
	tmpl := readKit(t)
	props := tmpl.Resources["Group"]["Properties"]

	cond, yes, no := conditional(t, "Group LaunchTemplate", at(props, "LaunchTemplate"))
	if cond != "UseMixedInstances" || !reflect.DeepEqual(yes, noValue) || !reflect.DeepEqual(at(no, "Version"), latestVersion) ||
		!reflect.DeepEqual(at(no, "LaunchTemplateId"), ref("LaunchTemplate")) {
		t.Errorf("Group LaunchTemplate: If %s then %v else %v; want no launch template when UseMixedInstances, else LaunchTemplate at LatestVersionNumber", cond, yes, no)
	}
	cond, policy, no := conditional(t, "Group MixedInstancesPolicy", at(props, "MixedInstancesPolicy"))
	if cond != "UseMixedInstances" || !reflect.DeepEqual(no, noValue) {
		t.Errorf("Group MixedInstancesPolicy: If %s … else %v; want only when UseMixedInstances", cond, no)
	}
	if spec := at(policy, "LaunchTemplate", "LaunchTemplateSpecification"); !reflect.DeepEqual(at(spec, "Version"), latestVersion) ||
		!reflect.DeepEqual(at(spec, "LaunchTemplateId"), ref("LaunchTemplate")) {
		t.Errorf("LaunchTemplateSpecification %v: want LaunchTemplate at LatestVersionNumber", spec)
	}
	for field, param := range map[string]string{
		"OnDemandBaseCapacity":                "OnDemandBaseCapacity",
		"OnDemandPercentageAboveBaseCapacity": "OnDemandPercentageAboveBaseCapacity",
		"SpotAllocationStrategy":              "SpotAllocationStrategy",
	} {
		if got := at(policy, "InstancesDistribution", field); !reflect.DeepEqual(got, ref(param)) {
			t.Errorf("InstancesDistribution %s = %v, want !Ref %s", field, got, param)
		}
	}

	cond, requirements, typeList := conditional(t, "Overrides", at(policy, "LaunchTemplate", "Overrides"))
	if cond != "UseInstanceRequirements" {
		t.Errorf("Overrides choose on %s, want UseInstanceRequirements", cond)
	}
	for _, c := range []struct {
		path []any
		want string
	}{
		{[]any{0, "InstanceRequirements", "VCpuCount", "Min"}, "InstanceVCpuMin"},
		{[]any{0, "InstanceRequirements", "VCpuCount", "Max"}, "InstanceVCpuMax"},
		{[]any{0, "InstanceRequirements", "MemoryMiB", "Min"}, "InstanceMemoryMiBMin"},
		{[]any{0, "InstanceRequirements", "MemoryMiB", "Max"}, "InstanceMemoryMiBMax"},
	} {
		if got := names(at(requirements, c.path...)); !slices.Contains(got, c.want) {
			t.Errorf("Overrides %v names %v, want %s", c.path, got, c.want)
		}
	}
	overrides, _ := typeList.([]any)
	if len(overrides) < 3 {
		t.Fatalf("Overrides by type: %d entries, want room for several InstanceTypes", len(overrides))
	}
	for i, o := range overrides {
		entry := o
		if i > 0 {
			var yes, no any
			cond, yes, no = conditional(t, fmt.Sprintf("Overrides[%d]", i), o)
			if want := fmt.Sprintf("HasInstanceType%d", i+1); cond != want || !reflect.DeepEqual(no, noValue) {
				t.Errorf("Overrides[%d] when %s else %v, want only when %s", i, cond, no, want)
			}
			entry = yes
		}
		sel, _ := at(entry, "InstanceType", "Fn::Select").([]any)
		if len(sel) != 2 || sel[0] != fmt.Sprint(i) || !slices.Contains(names(sel[1]), "InstanceTypes") {
			t.Errorf("Overrides[%d] InstanceType = %v, want entry %d of InstanceTypes", i, at(entry, "InstanceType"), i)
		}
		if c, ok := tmpl.Conditions[fmt.Sprintf("HasInstanceType%d", i+1)]; i > 0 && (!ok || !slices.Contains(names(c), "InstanceTypes")) {
			t.Errorf("condition HasInstanceType%d = %v, want it to look at InstanceTypes", i+1, c)
		}
	}

	for cond, want := range map[string][]string{
		"UseInstanceRequirements": {"InstanceVCpuMin"},
		"UseMixedInstances":       {"UseInstanceRequirements", "HasInstanceType2", "OnDemandPercentageAboveBaseCapacity"},
	} {
		got := names(tmpl.Conditions[cond])
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("condition %s names %v, want %s", cond, got, w)
			}
		}
	}
	lt := at(tmpl.Resources["LaunchTemplate"]["Properties"], "LaunchTemplateData", "InstanceType")
	if cond, _, typ := conditional(t, "LaunchTemplate InstanceType", lt); cond != "UseInstanceRequirements" || !slices.Contains(names(typ), "InstanceTypes") {
		t.Errorf("LaunchTemplate InstanceType = %v, want the first of InstanceTypes unless UseInstanceRequirements", lt)
	}
}

// TestKitWarmPoolOnlyWhenAsked: the warm pool exists only with WarmPoolMinSize above 0, never takes
// back used instances, and a rule refuses it with spot or attribute-based selection, which AWS does
// not allow with a warm pool.
func TestKitWarmPoolOnlyWhenAsked(t *testing.T) {
	tmpl := readKit(t)
	pool, ok := tmpl.Resources["WarmPool"]
	if !ok || pool["Type"] != "AWS::AutoScaling::WarmPool" || pool["Condition"] != "HasWarmPool" {
		t.Fatalf("WarmPool resource %v: want an AWS::AutoScaling::WarmPool under condition HasWarmPool", pool)
	}
	props := pool["Properties"]
	for _, c := range []struct {
		path []any
		want any
	}{
		{[]any{"AutoScalingGroupName"}, ref("Group")},
		{[]any{"MinSize"}, ref("WarmPoolMinSize")},
		{[]any{"MaxGroupPreparedCapacity"}, ref("WarmPoolMinSize")},
		{[]any{"PoolState"}, ref("WarmPoolState")},
		{[]any{"InstanceReusePolicy", "ReuseOnScaleIn"}, "false"},
	} {
		if got := at(props, c.path...); !reflect.DeepEqual(got, c.want) {
			t.Errorf("WarmPool %v = %v, want %v", c.path, got, c.want)
		}
	}
	if got := names(tmpl.Conditions["HasWarmPool"]); !slices.Contains(got, "WarmPoolMinSize") {
		t.Errorf("condition HasWarmPool names %v, want WarmPoolMinSize", got)
	}

	rule := tmpl.Rules["WarmPoolOnlyForOnDemandInstancesOfOneType"]
	if got := names(at(rule, "RuleCondition")); !slices.Contains(got, "WarmPoolMinSize") {
		t.Errorf("warm pool rule applies on %v, want WarmPoolMinSize", got)
	}
	asserted := map[string]string{}
	assertions, _ := at(rule, "Assertions").([]any)
	for _, a := range assertions {
		desc, _ := at(a, "AssertDescription").(string)
		for _, n := range names(at(a, "Assert")) {
			asserted[n] = desc
		}
	}
	for _, param := range []string{"OnDemandPercentageAboveBaseCapacity", "InstanceVCpuMin"} {
		if desc, ok := asserted[param]; !ok || !strings.Contains(desc, param) {
			t.Errorf("warm pool rule: no assertion on %s that names it (assertions %v)", param, asserted)
		}
	}
}

// TestKitManagerPolicyIsTheJSONPolicy: deploy/aws/iam-policy.json is the kit's ManagerPolicy with the
// stack's values as placeholders, and both allow the read calls the plugin needs for warm pools and
// launch template versions.
func TestKitManagerPolicyIsTheJSONPolicy(t *testing.T) {
	tmpl := readKit(t)
	placeholders := strings.NewReplacer("${AWS::Region}", "REGION", "${AWS::AccountId}", "ACCOUNT_ID", "${GroupName}", "GROUP_NAME")
	var fill func(v any) any
	fill = func(v any) any {
		switch x := v.(type) {
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				out[i] = fill(e)
			}
			return out
		case map[string]any:
			if reflect.DeepEqual(x, ref("GroupName")) {
				return "GROUP_NAME"
			}
			if s, ok := x["Fn::Sub"].(string); ok && len(x) == 1 {
				return placeholders.Replace(s)
			}
			out := make(map[string]any, len(x))
			for k, e := range x {
				out[k] = fill(e)
			}
			return out
		}
		return v
	}
	fromKit := fill(at(tmpl.Resources["ManagerPolicy"]["Properties"], "PolicyDocument"))

	raw, err := os.ReadFile(policyPath)
	if err != nil {
		t.Fatal(err)
	}
	var fromFile any
	if err := json.Unmarshal(raw, &fromFile); err != nil {
		t.Fatalf("%s: %v", policyPath, err)
	}
	if !reflect.DeepEqual(fromKit, fromFile) {
		kitJSON, _ := json.MarshalIndent(fromKit, "", "  ")
		t.Errorf("%s differs from the kit's ManagerPolicy, which reads (placeholders filled in):\n%s", policyPath, kitJSON)
	}

	var actions []string
	statements, _ := at(fromFile, "Statement").([]any)
	for _, st := range statements {
		list, _ := at(st, "Action").([]any)
		for _, a := range list {
			actions = append(actions, fmt.Sprint(a))
		}
	}
	for _, want := range []string{"autoscaling:DescribeWarmPool", "ec2:DescribeLaunchTemplates"} {
		if !slices.Contains(actions, want) {
			t.Errorf("%s does not allow %s", policyPath, want)
		}
	}
}
