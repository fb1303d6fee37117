// Package builtin maps a runner's `plugin` setting to one of the fleeting plugins compiled into
// fleetrunner, accepting upstream's spellings (binary names, OCI image references with tags), and
// decodes plugin_config into the plugin.
package builtin

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

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/static"
)

// constructors holds every compiled-in plugin by canonical name. A new plugin is one line here; its
// package must import only common/fleeting.
var constructors = map[string]func() fleeting.InstanceGroup{
	"aws":    func() fleeting.InstanceGroup { return &aws.InstanceGroup{} },
	"local":  func() fleeting.InstanceGroup { return &local.InstanceGroup{} },
	"static": func() fleeting.InstanceGroup { return &static.InstanceGroup{} },
}

// Names lists the built-in plugins, sorted.
func Names() []string { return slices.Sorted(maps.Keys(constructors)) }

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

// New makes a fresh, unconfigured instance of the named plugin and returns it with its canonical name.
func New(plugin string) (fleeting.InstanceGroup, string, error) {
	name := Canonical(plugin)
	if name == "" {
		return nil, "", fmt.Errorf("no autoscaler plugin configured: set [runners.autoscaler] plugin to one of %s", strings.Join(Names(), ", "))
	}
	mk, ok := constructors[name]
	if !ok {
		return nil, name, fmt.Errorf("unknown autoscaler plugin %q (read as %q): fleetrunner has its plugins built in and these are available: %s",
			plugin, name, strings.Join(Names(), ", "))
	}
	return mk(), name, nil
}

// Registry hands the built-in plugins to the executor that makes them (dockerautoscaler.New); cmd
// chooses it, so that the executor names no concrete plugin.
type Registry struct{}

// New is the package's New.
func (Registry) New(plugin string) (fleeting.InstanceGroup, string, error) { return New(plugin) }

// Configure is the package's Configure.
func (Registry) Configure(group fleeting.InstanceGroup, pluginConfig []byte) error {
	return Configure(group, pluginConfig)
}

// Configure decodes plugin_config (JSON) into the plugin. Unknown keys are rejected by name, since a
// misspelt key would otherwise be silently ignored.
func Configure(group fleeting.InstanceGroup, pluginConfig []byte) error {
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
func failingKey(group fleeting.InstanceGroup, pluginConfig []byte, decodeErr error) (string, bool) {
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
