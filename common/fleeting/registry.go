package fleeting

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Registry makes plugins from the [runners.autoscaler] plugin setting: each canonical plugin name
// (see Canonical) maps to a constructor of a fresh, unconfigured plugin. fleeting-plugins/builtin
// holds the compiled-in ones; cmd hands them to the docker-autoscaler executor.
type Registry map[string]func() InstanceGroup

// Names lists the registry's plugins, sorted.
func (r Registry) Names() []string { return slices.Sorted(maps.Keys(r)) }

// New makes a fresh, unconfigured instance of the named plugin and returns it with its canonical name.
func (r Registry) New(plugin string) (InstanceGroup, string, error) {
	name := Canonical(plugin)
	if name == "" {
		return nil, "", fmt.Errorf("no autoscaler plugin configured: set [runners.autoscaler] plugin to one of %s", strings.Join(r.Names(), ", "))
	}
	mk, ok := r[name]
	if !ok {
		return nil, name, fmt.Errorf("unknown autoscaler plugin %q (read as %q): fleetrunner has its plugins built in and these are available: %s",
			plugin, name, strings.Join(r.Names(), ", "))
	}
	return mk(), name, nil
}

// Canonical turns an upstream plugin reference into a bare plugin name:
// "registry.gitlab.com/gitlab-org/fleeting/plugins/aws:1.0.0", "aws:latest", "fleeting-plugin-aws" and
// "gitlab-org/fleeting/plugins/aws" all become "aws".
func Canonical(plugin string) string {
	name := strings.ToLower(strings.TrimSpace(plugin))
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if i := strings.IndexByte(name, '@'); i >= 0 { // digest: aws@sha256:...
		name = name[:i]
	}
	if i := strings.IndexByte(name, ':'); i >= 0 { // tag: aws:1.0.0
		name = name[:i]
	}
	return strings.TrimPrefix(name, "fleeting-plugin-")
}

// Configure decodes plugin_config (JSON) into the plugin. Unknown keys are rejected by name, since a
// misspelt key would otherwise be silently ignored.
func Configure(group InstanceGroup, pluginConfig []byte) error {
	if len(bytes.TrimSpace(pluginConfig)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(pluginConfig))
	dec.DisallowUnknownFields()
	if err := dec.Decode(group); err != nil {
		if key, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return fmt.Errorf("plugin_config: unknown key %s", key)
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return fmt.Errorf("plugin_config: key %q: want %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value)
		}
		if key, ok := failingKey(group, pluginConfig, err); ok {
			return fmt.Errorf("plugin_config: key %q: %w", key, err)
		}
		return fmt.Errorf("plugin_config: %w", err)
	}
	// Decode reads one value: anything after it would otherwise be ignored unseen.
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("plugin_config: unexpected data after the JSON object")
	}
	return nil
}

// failingKey finds the top-level key whose value alone fails to decode with decodeErr. A field's own
// decoder (a duration, say) reports its error without the key, which the decoder does not add.
func failingKey(group InstanceGroup, pluginConfig []byte, decodeErr error) (string, bool) {
	t := reflect.TypeOf(group)
	if t.Kind() != reflect.Pointer {
		return "", false
	}
	dec := json.NewDecoder(bytes.NewReader(pluginConfig))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	for dec.More() {
		tok, err := dec.Token()
		var value json.RawMessage
		if err != nil || dec.Decode(&value) != nil {
			return "", false
		}
		key, _ := tok.(string)
		one, err := json.Marshal(map[string]json.RawMessage{key: value})
		if err != nil {
			return "", false
		}
		if err := json.Unmarshal(one, reflect.New(t.Elem()).Interface()); err != nil && err.Error() == decodeErr.Error() {
			return key, true
		}
	}
	return "", false
}
