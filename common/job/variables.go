package job

import (
	"os"
	"sort"
)

// Variable is one job variable.
type Variable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	Masked bool   `json:"masked"`
	File   bool   `json:"file,omitempty"`
	Raw    bool   `json:"raw,omitempty"`
}

// Variables is the ordered variable list; later entries override earlier ones with the same key.
type Variables []Variable

// Get returns the value of the last variable named key, or "".
func (vs Variables) Get(key string) string {
	v, _ := vs.Lookup(key)
	return v
}

// Lookup returns the value of the last variable named key.
func (vs Variables) Lookup(key string) (string, bool) {
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Key == key {
			return vs[i].Value, true
		}
	}
	return "", false
}

// Bool reads a variable as upstream does for flags: "1", "true", "yes" (any case) are true.
func (vs Variables) Bool(key string) bool {
	switch v := vs.Get(key); v {
	case "1", "true", "TRUE", "True", "yes", "YES", "Yes", "on", "ON":
		return true
	}
	return false
}

// Expand replaces $VAR and ${VAR} in s with the variables' values (unknown ones become empty,
// as in a shell). File variables expand to their value here; callers that wrote them to files
// expand with the path instead.
func (vs Variables) Expand(s string) string {
	return os.Expand(s, vs.Get)
}

// MaskedValues returns the distinct non-empty values of masked variables, longest first, which is
// the order a masker must try them in.
func (vs Variables) MaskedValues() []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range vs {
		if v.Masked && v.Value != "" && !seen[v.Value] {
			seen[v.Value] = true
			out = append(out, v.Value)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}
