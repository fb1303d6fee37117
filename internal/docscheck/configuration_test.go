package docscheck

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/static"
)

const (
	configDoc = "../../docs/configuration.md"
	example   = "../../config.toml.example"
)

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// documented says whether the doc names key as code: `key`, or inside a code span with other text
// such as `[runners.custom_build_dir]` or `name = "soft[:hard]"`.
func documented(doc, key string) bool {
	return regexp.MustCompile("`[^`\n]*\\b" + regexp.QuoteMeta(key) + "\\b[^`\n]*`").MatchString(doc)
}

var (
	exampleTable = regexp.MustCompile(`^\[\[?([A-Za-z0-9_.]+)\]\]?$`)
	exampleKey   = regexp.MustCompile(`^([A-Za-z0-9_-]+)\s*=`)
)

// userTables hold the operator's own names (labels, feature flags), not keys fleetrunner defines.
var userTables = map[string]bool{"labels": true, "runners.labels": true, "runners.feature_flags": true}

// exampleKeys are the keys and tables config.toml.example shows, set or commented out ("# key = …"),
// as table path → keys.
func exampleKeys(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(example)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	keys := map[string][]string{}
	table := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimSpace(strings.TrimPrefix(line, "#"))
		if m := exampleTable.FindStringSubmatch(line); m != nil {
			table = m[1]
			keys[table] = append(keys[table], "")
			continue
		}
		if m := exampleKey.FindStringSubmatch(line); m != nil && !userTables[table] {
			keys[table] = append(keys[table], m[1])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestEveryExampleKeyIsDocumented(t *testing.T) {
	doc := readDoc(t)
	keys := exampleKeys(t)
	// The parse must have found the file's structure, or the test would pass on nothing.
	for _, want := range [][2]string{{"", "concurrent"}, {"runners.docker", "image"}, {"runners.autoscaler.policy", "idle_time"}} {
		found := false
		for _, k := range keys[want[0]] {
			found = found || k == want[1]
		}
		if !found {
			t.Fatalf("config.toml.example parsed without %s in [%s]: %v", want[1], want[0], keys)
		}
	}
	for table, ks := range keys {
		for _, k := range ks {
			switch {
			case k == "" && !documented(doc, table):
				t.Errorf("config.toml.example shows [%s]; docs/configuration.md does not name it", table)
			case k != "" && !documented(doc, k):
				t.Errorf("config.toml.example shows %s in [%s]; docs/configuration.md does not name it", k, table)
			}
		}
	}
}

// TestEveryConfigKeyIsDocumented walks the types the config file is decoded into, so that a key added
// to common/config without a line in the docs fails here.
func TestEveryConfigKeyIsDocumented(t *testing.T) {
	doc := readDoc(t)
	seen := 0
	var walk func(path string, typ reflect.Type)
	walk = func(path string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[config.Config]().PkgPath() {
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if f.Anonymous && name == "" {
				walk(path, f.Type)
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			key := strings.TrimPrefix(path+"."+name, ".")
			seen++
			if !documented(doc, name) {
				t.Errorf("%s is decoded by common/config; docs/configuration.md does not name it", key)
			}
			walk(key, f.Type)
		}
	}
	walk("", reflect.TypeFor[config.Config]())
	if seen < 150 {
		t.Fatalf("walked %d keys; the walk no longer reaches the nested tables", seen)
	}
}

// TestEveryPluginConfigKeyIsDocumented checks each compiled-in plugin's plugin_config keys (its JSON
// fields) in that plugin's part of the docs.
func TestEveryPluginConfigKeyIsDocumented(t *testing.T) {
	doc := readDoc(t)
	for _, p := range []struct {
		name  string
		types []reflect.Type
	}{
		{"aws", []reflect.Type{reflect.TypeFor[aws.InstanceGroup]()}},
		{"static", []reflect.Type{reflect.TypeFor[static.InstanceGroup](), reflect.TypeFor[static.Host]()}},
		{"local", []reflect.Type{reflect.TypeFor[local.InstanceGroup]()}},
	} {
		start := strings.Index(doc, "**`"+p.name+"`**")
		if start < 0 {
			t.Errorf("docs/configuration.md has no **`%s`** part under plugin_config", p.name)
			continue
		}
		section := doc[start:]
		if end := strings.Index(section[1:], "\n**`"); end >= 0 {
			section = section[:end+1]
		}
		if end := strings.Index(section, "\n### "); end >= 0 {
			section = section[:end]
		}
		n := 0
		for _, typ := range p.types {
			for i := range typ.NumField() {
				name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
				if name == "" || name == "-" || !typ.Field(i).IsExported() {
					continue
				}
				n++
				if !documented(section, name) {
					t.Errorf("plugin %s reads plugin_config key %s; its part of docs/configuration.md does not name it", p.name, name)
				}
			}
		}
		if n == 0 {
			t.Errorf("plugin %s: no plugin_config keys found by reflection", p.name)
		}
	}
}
