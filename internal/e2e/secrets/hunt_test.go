package secrets_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// secret is one value that must not leak, in every form it could leak in.
type secret struct {
	// name says what it is, for the failure message.
	name string
	// forms are the texts to look for: the value itself first, then, for a token, its tail, and
	// what any base64 text holding the value holds (state files keep job data base64-encoded; an
	// HTTP Basic header carries a token so).
	forms []string
}

// newSecret is a secret found by its value, the extra texts given and its base64 forms.
func newSecret(name, value string, extra ...string) secret {
	return secret{name: name, forms: append(append([]string{value}, extra...), base64Forms(value)...)}
}

// base64Forms are texts that every base64 encoding (standard or URL alphabet) of data holding s
// contains: one per position of s in the encoder's 3-byte groups. The first group of an unaligned s
// and the last group mix in the bytes around it, so they are left out.
func base64Forms(s string) []string {
	var out []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for k := range 3 {
			text := enc.EncodeToString(append(make([]byte, k), s...))
			start := 0
			if k > 0 {
				start = 4
			}
			out = append(out, text[start:len(text)-4])
		}
	}
	return out
}

// tail is the end of a token that no short form shows: a log that printed the token without its
// prefix, or cut, still leaks this.
func tail(token string) string { return token[len(token)-16:] }

// hunt searches places for secrets and records every place a secret was found.
type hunt struct {
	secrets []secret

	mu    sync.Mutex
	found map[string][]string // secret name → places
}

func newHunt(secrets ...secret) *hunt {
	return &hunt{secrets: secrets, found: map[string][]string{}}
}

// text searches b, read from where, for every secret but those named in allowed.
func (h *hunt) text(where string, b []byte, allowed ...string) {
	for _, s := range h.secrets {
		if slices.Contains(allowed, s.name) {
			continue
		}
		for _, form := range s.forms {
			if i := bytes.Index(b, []byte(form)); i >= 0 {
				h.record(s.name, fmt.Sprintf("%s, line %d", where, 1+bytes.Count(b[:i], []byte("\n"))))
				break
			}
		}
	}
}

// json searches a JSON document read from where field by field, so that a find names its field.
func (h *hunt) json(where string, doc []byte) {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		h.text(where, doc)
		return
	}
	h.walk(where, "", v)
}

func (h *hunt) walk(where, path string, v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			h.walk(where, path+"."+k, e)
		}
	case []any:
		for i, e := range x {
			h.walk(where, fmt.Sprintf("%s[%d]", path, i), e)
		}
	case string:
		for _, s := range h.secrets {
			for _, form := range s.forms {
				if strings.Contains(x, form) {
					h.record(s.name, where+" "+strings.TrimPrefix(path, "."))
					break
				}
			}
		}
	}
}

func (h *hunt) record(name, where string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.Contains(h.found[name], where) {
		h.found[name] = append(h.found[name], where)
	}
}

// leaks lists every find as "<secret> found in <place>", sorted.
func (h *hunt) leaks() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for name, places := range h.found {
		for _, p := range places {
			out = append(out, name+" found in "+p)
		}
	}
	sort.Strings(out)
	return out
}

// holds reports whether b holds the named secret in any form.
func (h *hunt) holds(name string, b []byte) bool {
	for _, s := range h.secrets {
		if s.name != name {
			continue
		}
		for _, form := range s.forms {
			if bytes.Contains(b, []byte(form)) {
				return true
			}
		}
	}
	return false
}
