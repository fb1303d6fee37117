package builtin_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/builtin"
)

// FuzzConfigure decodes plugin_config JSON into a fresh instance of each built-in plugin (aws, local,
// static, chosen by plugin modulo 3) and asserts:
//   - an accepted config is one JSON value (or nothing) and every key in it, at every depth, is a
//     field of the plugin's config: no key is ignored;
//   - an accepted config encodes and decodes back to the same values;
//   - a rejected JSON object is rejected with an error naming a key: an unknown key found in it, or
//     the key (or field path) whose value has the wrong type.
func FuzzConfigure(f *testing.F) {
	names := builtin.Plugins().Names()
	index := func(name string) uint8 { return uint8(slices.Index(names, name)) }
	for _, seed := range []struct{ plugin, config string }{
		{"local", `{"name":"demo","max_size":3,"boot_delay":"2s","sshd_delay":"0s","docker_delay":"1m30s","boot_jitter":0.2,` +
			`"base_address":"127.0.20.1","port":2222,"state_dir":"/var/lib/fleetrunner/local","docker_socket":"/var/run/docker.sock"}`},
		{"local", `{"name":"x","max_sise":3}`},
		{"local", `{"max_size":"three"}`},
		{"local", `{"MAX_SIZE":1,"Name":"case-insensitive"}`},
		{"static", `{"name":"lab","hosts":[{"id":"h1","address":"10.0.0.5:22","username":"ci","key_path":"/etc/ci/key","os":"linux","arch":"arm64"},` +
			`{"id":"h2","address":"h2.example","password":"pw"}]}`},
		{"static", `{"hosts":[{"id":"h1","adress":"10.0.0.5"}]}`}, //nolint:misspell // a deliberate typo: an unknown key
		{"static", `{"hosts":{"id":"h1"}}`},
		{"aws", `{"name":"fleetrunner-workers","region":"eu-west-1","profile":"default","config_file":"/root/.aws/config","credentials_file":"/root/.aws/credentials"}`},
		{"aws", `{"name":"asg","region":null}`},
		{"aws", "  \n"},
		{"aws", `[]`},
	} {
		f.Add(index(seed.plugin), []byte(seed.config))
	}

	f.Fuzz(func(t *testing.T, plugin uint8, config []byte) {
		name := names[int(plugin)%len(names)]
		group, _, err := builtin.Plugins().New(name)
		if err != nil {
			t.Fatal(err)
		}
		typ := reflect.TypeOf(group)
		err = fleeting.Configure(group, config)

		blank := len(bytes.TrimSpace(config)) == 0
		var unknown, keys []string
		walkErr := walkKeys(json.NewDecoder(bytes.NewReader(config)), typ, &unknown, &keys)
		isObject := !blank && json.Valid(config) && walkErr == nil && bytes.TrimSpace(config)[0] == '{'

		if err == nil {
			if !blank && !json.Valid(config) {
				t.Fatalf("%s accepted plugin_config that is not one JSON value: %q", name, config)
			}
			if len(unknown) > 0 {
				t.Fatalf("%s accepted plugin_config %q with the unknown keys %q", name, config, unknown)
			}
			enc, err := json.Marshal(group)
			if err != nil {
				t.Fatalf("%s: accepted config does not encode: %v", name, err)
			}
			again, _, _ := builtin.Plugins().New(name)
			if err := fleeting.Configure(again, enc); err != nil {
				t.Fatalf("%s rejects its own encoding %s: %v", name, enc, err)
			}
			if !reflect.DeepEqual(group, again) {
				t.Fatalf("%s: %q decoded as %+v, its encoding %s as %+v", name, config, group, enc, again)
			}
			return
		}
		if !strings.HasPrefix(err.Error(), "plugin_config: ") {
			t.Fatalf("%s: error %q does not say it is about plugin_config", name, err)
		}
		if !isObject {
			return // nothing to name in a value that is not a JSON object
		}
		if m := unknownKeyError.FindStringSubmatch(err.Error()); m != nil {
			if key, qerr := strconv.Unquote(m[1]); qerr != nil || !slices.Contains(unknown, key) {
				t.Fatalf("%s: %q rejected for an unknown key that is not one (unknown: %q): %v", name, config, unknown, err)
			}
			return
		}
		if m := keyError.FindStringSubmatch(err.Error()); m != nil {
			if key, qerr := strconv.Unquote(m[1]); qerr != nil || !(isFieldPath(typ, key) || slices.Contains(keys, key)) {
				t.Fatalf("%s: %q rejected naming %s, neither a field nor a key of it: %v", name, config, m[1], err)
			}
			return
		}
		t.Fatalf("%s: plugin_config %q rejected without naming a key: %v", name, config, err)
	})
}

var (
	unknownKeyError = regexp.MustCompile(`^plugin_config: unknown key ("(?:[^"\\]|\\.)*")$`)
	keyError        = regexp.MustCompile(`^plugin_config: key ("(?:[^"\\]|\\.)*"): `)
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// walkKeys reads one JSON value from dec against the Go type t (nil: no schema) the way
// encoding/json matches keys to fields, appending every object key to keys and every key that no
// field of a struct type takes to unknown.
func walkKeys(dec *json.Decoder, t reflect.Type, unknown, keys *[]string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && reflect.PointerTo(t).Implements(unmarshalerType) {
		t = nil // a type that decodes itself has no keys of ours
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string)
			*keys = append(*keys, key)
			var field reflect.Type
			switch {
			case t != nil && t.Kind() == reflect.Struct:
				if f, ok := jsonField(t, key); ok {
					field = f.Type
				} else {
					*unknown = append(*unknown, key)
				}
			case t != nil && t.Kind() == reflect.Map:
				field = t.Elem()
			}
			if err := walkKeys(dec, field, unknown, keys); err != nil {
				return err
			}
		}
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := walkKeys(dec, elem, unknown, keys); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// jsonField finds the field encoding/json decodes key into: an exact name first, else one equal
// under case folding. The plugin configs embed no structs, so promoted fields are not looked at.
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	var folded *reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f, true
		}
		if folded == nil && strings.EqualFold(name, key) {
			folded = &f
		}
	}
	if folded != nil {
		return *folded, true
	}
	return reflect.StructField{}, false
}

// isFieldPath reports whether path (field names joined by dots, as json.UnmarshalTypeError.Field
// has them) leads through t's fields.
func isFieldPath(t reflect.Type, path string) bool {
	for _, name := range strings.Split(path, ".") {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return false
		}
		f, ok := jsonField(t, name)
		if !ok {
			return false
		}
		t = f.Type
	}
	return true
}
