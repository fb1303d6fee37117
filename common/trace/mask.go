package trace

import (
	"bytes"
	"slices"
	"unicode/utf8"
)

// masked replaces a secret in the log.
const masked = "[MASKED]"

// defaultTokenPrefixes are always masked, whatever GitLab sends in features.token_mask_prefixes.
var defaultTokenPrefixes = []string{"glpat-", "glrt-", "glcbt-"}

// maxExtraTokenPrefixes bounds features.token_mask_prefixes, as upstream does.
const maxExtraTokenPrefixes = 10

// matcher is a byte trie of the patterns: matching at a position walks at most the longest pattern's
// length, however many patterns there are. Only bytes that start some pattern are examined.
type matcher struct {
	nodes []trieNode
	first [256]bool
	// singleFirst is the only first byte of all patterns, or -1: then candidates are found with
	// bytes.IndexByte (vectorised) instead of a table scan.
	singleFirst int
}

type trieNode struct {
	terminal bool
	labels   []byte
	children []int32
}

func (n *trieNode) child(b byte) int32 {
	for k, l := range n.labels {
		if l == b {
			return n.children[k]
		}
	}
	return -1
}

func newMatcher(patterns []string) matcher {
	m := matcher{nodes: []trieNode{{}}, singleFirst: -1}
	firsts := 0
	for _, p := range patterns {
		if p == "" {
			continue
		}
		if !m.first[p[0]] {
			firsts++
			m.first[p[0]] = true
			m.singleFirst = int(p[0])
		}
		cur := int32(0)
		for i := 0; i < len(p); i++ {
			next := m.nodes[cur].child(p[i])
			if next < 0 {
				next = int32(len(m.nodes))
				m.nodes = append(m.nodes, trieNode{})
				m.nodes[cur].labels = append(m.nodes[cur].labels, p[i])
				m.nodes[cur].children = append(m.nodes[cur].children, next)
			}
			cur = next
		}
		m.nodes[cur].terminal = true
	}
	if firsts != 1 {
		m.singleFirst = -1
	}
	return m
}

func (m *matcher) empty() bool { return len(m.nodes) == 1 }

// at looks for a pattern at data[i:]. It returns the length of the longest full match, or partial=true
// when the data ends inside a longer pattern that more data could complete (only when !final): the
// longest pattern wins, so a possible longer match is waited for.
func (m *matcher) at(data []byte, i int, final bool) (n int, partial bool) {
	cur := int32(0)
	for j := i; j < len(data); j++ {
		cur = m.nodes[cur].child(data[j])
		if cur < 0 {
			return n, false
		}
		if m.nodes[cur].terminal {
			n = j + 1 - i
		}
	}
	if !final && len(m.nodes[cur].children) > 0 {
		return 0, true
	}
	return n, false
}

// next returns the first index >= i whose byte starts a pattern, or len(data).
func (m *matcher) next(data []byte, i int) int {
	if m.singleFirst >= 0 {
		if k := bytes.IndexByte(data[i:], byte(m.singleFirst)); k >= 0 {
			return i + k
		}
		return len(data)
	}
	for i < len(data) && !m.first[data[i]] {
		i++
	}
	return i
}

// tokenSanitizer keeps a token prefix and replaces the token characters after it with [MASKED]. It
// works across writes: a partial prefix at the end of a write is held back, and a token that runs to
// the end of a write keeps swallowing token characters in the next.
type tokenSanitizer struct {
	m       matcher
	held    []byte
	inToken bool // the last write ended inside a token
	scratch []byte
}

func newTokenSanitizer(extra []string) *tokenSanitizer {
	prefixes := slices.Clone(defaultTokenPrefixes)
	prefixes = append(prefixes, extra[:min(len(extra), maxExtraTokenPrefixes)]...)
	return &tokenSanitizer{m: newMatcher(prefixes)}
}

func isTokenChar(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '.' || b == '_' || b == '='
}

func tokenRun(data []byte, i int) int {
	j := i
	for j < len(data) && isTokenChar(data[j]) {
		j++
	}
	return j
}

// process appends the sanitized form of in to dst. final flushes everything held back.
func (s *tokenSanitizer) process(dst, in []byte, final bool) []byte {
	data := in
	if len(s.held) > 0 {
		s.scratch = append(append(s.scratch[:0], s.held...), in...)
		data = s.scratch
		s.held = s.held[:0]
	}
	i := 0
	if s.inToken {
		i = tokenRun(data, 0)
		if i == len(data) && !final {
			return dst
		}
		s.inToken = false
	}
	start := i
	for {
		i = s.m.next(data, i)
		if i >= len(data) {
			break
		}
		n, partial := s.m.at(data, i, final)
		switch {
		case partial:
			s.held = append(s.held, data[i:]...)
			return append(dst, data[start:i]...)
		case n > 0:
			end := tokenRun(data, i+n)
			if end == len(data) && !final {
				if end == i+n {
					// A prefix at the very end: whether a token follows is decided by the next write.
					s.held = append(s.held, data[i:]...)
					return append(dst, data[start:i]...)
				}
				s.inToken = true
				return append(append(dst, data[start:i+n]...), masked...)
			}
			dst = append(dst, data[start:i+n]...)
			if end > i+n {
				dst = append(dst, masked...)
			}
			i, start = end, end
		default:
			i++
		}
	}
	return append(dst, data[start:]...)
}

// phraseMasker replaces masked variable values with [MASKED], longest first, across writes: a tail that
// could be the start of a phrase is held back until the next write or the final flush.
type phraseMasker struct {
	m       matcher
	held    []byte
	scratch []byte
}

func newPhraseMasker(phrases []string) *phraseMasker {
	return &phraseMasker{m: newMatcher(phrases)}
}

func (p *phraseMasker) process(dst, in []byte, final bool) []byte {
	if p.m.empty() {
		return append(dst, in...)
	}
	data := in
	if len(p.held) > 0 {
		p.scratch = append(append(p.scratch[:0], p.held...), in...)
		data = p.scratch
		p.held = p.held[:0]
	}
	start, i := 0, 0
	for {
		i = p.m.next(data, i)
		if i >= len(data) {
			break
		}
		n, partial := p.m.at(data, i, final)
		switch {
		case partial:
			p.held = append(p.held, data[i:]...)
			return append(dst, data[start:i]...)
		case n > 0:
			dst = append(append(dst, data[start:i]...), masked...)
			i += n
			start = i
		default:
			i++
		}
	}
	return append(dst, data[start:]...)
}

// utf8Fixer replaces invalid UTF-8 with U+FFFD, holding back a character split across writes.
type utf8Fixer struct {
	held    []byte
	scratch []byte
}

func (u *utf8Fixer) process(dst, in []byte, final bool) []byte {
	data := in
	if len(u.held) > 0 {
		u.scratch = append(append(u.scratch[:0], u.held...), in...)
		data = u.scratch
		u.held = u.held[:0]
	}
	if !final {
		k := incompleteTail(data)
		u.held = append(u.held, data[k:]...)
		data = data[:k]
	}
	if utf8.Valid(data) {
		return append(dst, data...)
	}
	// Each invalid byte becomes one U+FFFD (not each run, as bytes.ToValidUTF8 does), so that the
	// result does not depend on where writes were cut.
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, data[:size]...)
		}
		data = data[size:]
	}
	return dst
}

// incompleteTail returns where a trailing, not yet complete UTF-8 sequence starts, or len(data).
func incompleteTail(data []byte) int {
	for j := len(data) - 1; j >= 0 && j >= len(data)-utf8.UTFMax+1; j-- {
		if utf8.RuneStart(data[j]) {
			if !utf8.FullRune(data[j:]) {
				return j
			}
			break
		}
	}
	return len(data)
}
