package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
)

// The schema check walks the generic TOML tree against the Go types before the real decode. The decoder
// stops at its first type mismatch and names neither the array index nor the problem in operator terms;
// this walk reports every mismatch with its full key path, drops the bad value so that the rest of the
// file can still be decoded and validated, and finds the keys the types do not know.

var (
	durationType    = reflect.TypeFor[time.Duration]()
	timeType        = reflect.TypeFor[time.Time]()
	unmarshalerType = reflect.TypeFor[toml.Unmarshaler]()
)

// keyPath is a key path as written in messages (runners[0].docker.volumes) plus its bare
// segments without indexes (runners, docker, volumes) for matching.
type keyPath struct {
	str  string
	segs []string
}

var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (p keyPath) key(k string) keyPath {
	q := k
	if !bareKey.MatchString(k) {
		q = strconv.Quote(k)
	}
	s := q
	if p.str != "" {
		s = p.str + "." + q
	}
	return keyPath{str: s, segs: append(slices.Clip(p.segs), k)}
}

func (p keyPath) index(i int) keyPath {
	return keyPath{str: fmt.Sprintf("%s[%d]", p.str, i), segs: p.segs}
}

type schemaCheck struct {
	errs  []error
	warns []Warning
	// bad holds the key paths whose values were dropped, so validation does not report them twice.
	bad map[string]bool
}

func (c *schemaCheck) fail(p keyPath, format string, args ...any) bool {
	c.errs = append(c.errs, fieldErr(p.str, format, args...))
	if c.bad == nil {
		c.bad = map[string]bool{}
	}
	c.bad[p.str] = true
	return false
}

// tomlField is one struct field reachable by a TOML key, after flattening embedded structs the way
// the decoder does.
type tomlField struct {
	name string
	typ  reflect.Type
}

var fieldCache sync.Map // reflect.Type -> []tomlField

func tomlFields(t reflect.Type) []tomlField {
	if v, ok := fieldCache.Load(t); ok {
		return v.([]tomlField)
	}
	var out []tomlField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("toml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, tomlFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, tomlField{name: name, typ: f.Type})
	}
	fieldCache.Store(t, out)
	return out
}

// lookupField mirrors the decoder: an exact name match wins, else the first case-insensitive one.
func lookupField(fields []tomlField, key string) *tomlField {
	var fold *tomlField
	for i := range fields {
		if fields[i].name == key {
			return &fields[i]
		}
		if fold == nil && strings.EqualFold(fields[i].name, key) {
			fold = &fields[i]
		}
	}
	return fold
}

// table checks a TOML table against a struct type, dropping keys with bad values.
func (c *schemaCheck) table(p keyPath, m map[string]any, t reflect.Type) {
	fields := tomlFields(t)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f := lookupField(fields, k)
		if f == nil {
			c.unknown(p.key(k), m[k], closestKey(k, fields))
			continue
		}
		if !c.value(p.key(k), m[k], f.typ) {
			delete(m, k)
		}
	}
}

// value reports whether data can be decoded into t. Tables are cleaned in place and kept.
func (c *schemaCheck) value(p keyPath, data any, t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		switch v := data.(type) {
		case int64:
			return true
		case string:
			if _, err := time.ParseDuration(v); err != nil {
				return c.fail(p, "invalid duration %q (write a Go duration such as \"20m0s\", \"90s\" or \"1h30m\")", v)
			}
			return true
		default:
			return c.fail(p, "invalid duration: got %s, want a Go duration string such as \"20m0s\"", describeTOML(data))
		}
	case t == timeType:
		switch v := data.(type) {
		case time.Time:
			return true
		case string:
			if _, err := time.Parse(time.RFC3339, v); err != nil {
				return c.fail(p, "invalid date-time %q (want RFC 3339, e.g. 2024-05-14T09:21:33Z)", v)
			}
			return true
		default:
			return c.fail(p, "invalid date-time: got %s, want an RFC 3339 date-time", describeTOML(data))
		}
	case reflect.PointerTo(t).Implements(unmarshalerType):
		u := reflect.New(t).Interface().(toml.Unmarshaler)
		if err := u.UnmarshalTOML(data); err != nil {
			return c.fail(p, "%v", err)
		}
		return true
	}

	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := data.(int64)
		if !ok {
			return c.fail(p, "got %s, want an integer", describeTOML(data))
		}
		if reflect.Zero(t).OverflowInt(n) {
			return c.fail(p, "%d is out of range", n)
		}
		return true
	case reflect.Float32, reflect.Float64:
		switch data.(type) {
		case float64, int64:
			return true
		}
		return c.fail(p, "got %s, want a number", describeTOML(data))
	case reflect.String:
		if _, ok := data.(string); !ok {
			return c.fail(p, "got %s, want a string", describeTOML(data))
		}
		return true
	case reflect.Bool:
		if _, ok := data.(bool); !ok {
			return c.fail(p, "got %s, want true or false", describeTOML(data))
		}
		return true
	case reflect.Interface:
		return true
	case reflect.Slice:
		ok := true
		switch v := data.(type) {
		case []any:
			for i, e := range v {
				ok = c.value(p.index(i), e, t.Elem()) && ok
			}
		case []map[string]any:
			for i, e := range v {
				ok = c.value(p.index(i), e, t.Elem()) && ok
			}
		default:
			return c.fail(p, "got %s, want an array", describeTOML(data))
		}
		return ok
	case reflect.Map:
		m, ok := data.(map[string]any)
		if !ok {
			return c.fail(p, "got %s, want a table", describeTOML(data))
		}
		for k, v := range m {
			if !c.value(p.key(k), v, t.Elem()) {
				delete(m, k)
			}
		}
		return true
	case reflect.Struct:
		m, ok := data.(map[string]any)
		if !ok {
			return c.fail(p, "got %s, want a table", describeTOML(data))
		}
		c.table(p, m, t)
		return true
	}
	return c.fail(p, "cannot be decoded into %s", t)
}

// unknown warns about every leaf key under an unknown key, naming why it is ignored. suggest is the
// known key closest to the unknown one ("" for none); a misspelt table passes it on to its leaves,
// since the misspelling is in the table's name.
func (c *schemaCheck) unknown(p keyPath, data any, suggest string) {
	switch v := data.(type) {
	case map[string]any:
		if len(v) > 0 {
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				c.unknown(p.key(k), v[k], suggest)
			}
			return
		}
	case []map[string]any:
		if len(v) > 0 {
			for i, m := range v {
				c.unknown(p.index(i), m, suggest)
			}
			return
		}
	}
	c.warns = append(c.warns, Warning{Key: p.str, Message: unknownKeyMessage(p.segs, suggest), Unknown: true})
}

// closestKey is the known key nearest to an unknown one, for "did you mean": the smallest edit
// distance after folding case and '-' to '_', within a budget that grows with the key's length so that
// a short key is not "corrected" into an unrelated one. Ties go to the key declared first.
func closestKey(key string, fields []tomlField) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	k := norm(key)
	budget := 1 + len(k)/4
	best, bestDist := "", budget+1
	for _, f := range fields {
		if d := editDistance(k, norm(f.name)); d < bestDist {
			best, bestDist = f.name, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: Levenshtein's insertions, deletions and
// substitutions plus the swap of two adjacent characters, the commonest typo ("imgae").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d[i][j] is the distance between ra[:i] and rb[:j].
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// upstreamExecutorSections are [runners.X] tables upstream uses for executors fleetrunner does not run.
var upstreamExecutorSections = map[string]string{
	"machine":    "docker+machine",
	"kubernetes": "kubernetes",
	"ssh":        "ssh",
	"parallels":  "parallels",
	"virtualbox": "virtualbox",
	"custom":     "custom",
	"instance":   "instance",
}

// upstreamRunnerKeys are [[runners]] keys upstream knows and fleetrunner does not implement.
var upstreamRunnerKeys = map[string]bool{
	"proxy_exec": true, "use_slot_cgroups": true, "slot_cgroup_template": true, "referees": true,
	"graceful_kill_timeout": true, "force_kill_timeout": true, "step_runner_image": true,
}

func unknownKeyMessage(segs []string, suggest string) string {
	const ignored = "; ignored"
	if len(segs) >= 2 && segs[0] == "runners" {
		if exec, ok := upstreamExecutorSections[segs[1]]; ok {
			if segs[1] == "machine" && len(segs) >= 3 && strings.HasPrefix(segs[2], "OffPeak") {
				return "OffPeak* is a docker+machine setting (removed upstream in 14.0); fleetrunner does not run docker+machine" + ignored
			}
			if segs[1] == "machine" {
				return "docker+machine setting; fleetrunner does not run docker+machine " +
					"(use executor = \"docker-autoscaler\" with [runners.autoscaler])" + ignored
			}
			return fmt.Sprintf("[runners.%s] configures the %s executor, which fleetrunner does not run%s", segs[1], exec, ignored)
		}
		if len(segs) == 2 && upstreamRunnerKeys[segs[1]] {
			return "upstream gitlab-runner setting that fleetrunner does not implement" + ignored
		}
	}
	if segs[0] == "experimental" {
		return "upstream experimental setting that fleetrunner does not implement" + ignored
	}
	if suggest != "" {
		return fmt.Sprintf("unknown key; did you mean `%s`?%s", suggest, ignored)
	}
	return "unknown key (see config.toml.example and docs/configuration.md for the keys fleetrunner reads)" + ignored
}

// describeTOML names a decoded TOML value for a message: its TOML type and, for scalars, the value.
func describeTOML(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case time.Time:
		return "date-time " + x.Format(time.RFC3339)
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%T", v)
}
