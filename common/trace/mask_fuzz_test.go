package trace

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// gitlabMaskable is GitLab's rule for a value that may be masked (Ci::Maskable): 8 or more characters
// of the Base64 alphabets plus @ : . ~. Such a value cannot overlap a "[MASKED]" marker (it has no
// brackets and is longer than "MASKED"), so a copy of it anywhere in the stored log is a leak.
var gitlabMaskable = regexp.MustCompile(`^[a-zA-Z0-9_+=/@:.~-]{8,}$`)

// FuzzMasking writes one log cut into writes of fuzzed lengths and asserts, for every cut:
//   - the stored log equals referenceMask of the whole log (so unmasked text passes unchanged and
//     the result does not depend on write boundaries);
//   - no masked value that GitLab accepts for masking occurs in the stored log.
//
// Arguments: phrases are the masked values, one per line (any bytes, empty and duplicate lines
// included, in any order); in log the bytes \x01-\x04 stand for a whole phrase and \x05-\x08 for a
// phrase without its last byte, so that values, repeats and near misses meet write boundaries; each
// byte of cuts is the length (mod 16) of the next write, the rest is the last write; prefixes are
// extra token prefixes, one per line, as from features.token_mask_prefixes.
func FuzzMasking(f *testing.F) {
	f.Add("s3cr3t-value\ns3cr3t\nanother$ecret!\nü-unicode-ß", []byte("pre \x01 post \x02\x02 \x05 x \x03 y \x04 z"), []byte{3, 1, 0, 7, 2}, "")
	f.Add("abc\nabcdef", []byte("1 \x02 2 \x06 3"), []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, "")
	f.Add("glcbt-64_ExAmPlEjObToKeN\ns3cr3tValue_123", []byte("token=\x01 and \x02\n\x05\x06"), []byte{5, 9, 2}, "")
	f.Add("", []byte("use glpat-AbC_12.3=x now; glrt-t1_abc; (glcbt-64_xyz); glpat- alone; ends in glpat-"), []byte{4, 15, 6}, "")
	f.Add("", []byte("custom_abc def p9-x p10-y"), []byte{2}, "custom_\np0-\np1-\np2-\np3-\np4-\np5-\np6-\np7-\np8-\np9-\np10-")
	f.Add("a glrt-x\nglrt-xyzzy1234", []byte("\x01\x02 glrt-xyz\x06"), []byte{0, 8}, "ab-")
	f.Add("€uro-s3cret", []byte("a\xe2\x82\x01\xff\x05\xe2"), []byte{1, 1, 1}, "")
	f.Add("aaaaaaaa\naaaaaaaaab\nMASKED]x", []byte("\x01\x01\x06\x02\x03"), []byte{9, 3, 14}, "a")

	f.Fuzz(func(t *testing.T, phraseList string, log, cuts []byte, prefixList string) {
		phrases := strings.Split(phraseList, "\n")
		var prefixes []string
		if prefixList != "" {
			prefixes = strings.Split(prefixList, "\n")
		}
		in := expandLog(log, phrases)
		var parts []string
		rest := in
		for _, c := range cuts {
			n := min(int(c)%16, len(rest))
			parts, rest = append(parts, string(rest[:n])), rest[n:]
		}
		parts = append(parts, string(rest))

		got := finishBytes(t, Options{MaskPhrases: phrases, TokenPrefixes: prefixes}, parts...)
		if want := referenceMask(in, phrases, prefixes); !bytes.Equal(got, want) {
			t.Fatalf("phrases %q, prefixes %q, log %q written as %q:\nstored    %q\nreference %q", phrases, prefixes, in, parts, got, want)
		}
		for _, p := range phrases {
			if gitlabMaskable.MatchString(p) && bytes.Contains(got, []byte(p)) {
				t.Fatalf("masked value %q survives in %q (log %q written as %q)", p, got, in, parts)
			}
		}
	})
}

// expandLog replaces the placeholder bytes of a fuzzed log by phrases (see FuzzMasking).
func expandLog(log []byte, phrases []string) []byte {
	var out []byte
	for _, b := range log {
		switch {
		case b >= 1 && b <= 4:
			out = append(out, phrases[int(b-1)%len(phrases)]...)
		case b >= 5 && b <= 8:
			p := phrases[int(b-5)%len(phrases)]
			out = append(out, p[:max(len(p)-1, 0)]...)
		default:
			out = append(out, b)
		}
	}
	return out
}

// referenceMask is what the pipeline means, applied to the whole log at once and written for
// clarity, independently of the streaming code (spec gitlab-api.md §5.2):
//  1. at each position, the longest token prefix (glpat-, glrt-, glcbt- and the first ten extra ones)
//     is kept and the run of token characters after it becomes [MASKED];
//  2. then, at each position, the longest masked phrase becomes [MASKED];
//  3. then each byte that is not part of valid UTF-8 becomes U+FFFD (Go's []rune conversion does
//     exactly that).
func referenceMask(in []byte, phrases, extraPrefixes []string) []byte {
	const tokenChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._="
	prefixes := append([]string{"glpat-", "glrt-", "glcbt-"}, extraPrefixes[:min(len(extraPrefixes), 10)]...)

	var sanitized []byte
	for i := 0; i < len(in); {
		p := longestPrefixAt(in[i:], prefixes)
		if p == "" {
			sanitized = append(sanitized, in[i])
			i++
			continue
		}
		sanitized = append(sanitized, p...)
		j := i + len(p)
		for j < len(in) && strings.IndexByte(tokenChars, in[j]) >= 0 {
			j++
		}
		if j > i+len(p) {
			sanitized = append(sanitized, "[MASKED]"...)
		}
		i = j
	}

	var masked []byte
	for i := 0; i < len(sanitized); {
		if p := longestPrefixAt(sanitized[i:], phrases); p != "" {
			masked = append(masked, "[MASKED]"...)
			i += len(p)
			continue
		}
		masked = append(masked, sanitized[i])
		i++
	}
	return []byte(string([]rune(string(masked))))
}

// longestPrefixAt returns the longest non-empty candidate that data starts with, or "".
func longestPrefixAt(data []byte, candidates []string) string {
	best := ""
	for _, c := range candidates {
		if len(c) > len(best) && bytes.HasPrefix(data, []byte(c)) {
			best = c
		}
	}
	return best
}

// The reference must agree with the hand-checked examples of trace_test.go, or it proves nothing.
func TestReferenceMaskExamples(t *testing.T) {
	tests := []struct {
		phrases, prefixes []string
		in, want          string
	}{
		{[]string{"s3cr3t-value", "s3cr3t"}, nil, "a s3cr3ts3cr3t b s3cr3t-valu", "a [MASKED][MASKED] b [MASKED]-valu"},
		{[]string{"abc", "abcdef"}, nil, "1 abcdef 2 abcde 3", "1 [MASKED] 2 [MASKED]de 3"},
		{nil, nil, "use glpat-AbC_12.3=x now, glpat- alone", "use glpat-[MASKED] now, glpat- alone"},
		{nil, []string{"p0-", "p1-", "p2-", "p3-", "p4-", "p5-", "p6-", "p7-", "p8-", "p9-", "p10-"}, "p9-x p10-y", "p9-[MASKED] p10-y"},
		{nil, nil, "a\xffb\xe2\x82", "a\uFFFDb\uFFFD\uFFFD"},
	}
	for _, tc := range tests {
		if got := referenceMask([]byte(tc.in), tc.phrases, tc.prefixes); string(got) != tc.want {
			t.Errorf("referenceMask(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if !slices.Equal(defaultTokenPrefixes, []string{"glpat-", "glrt-", "glcbt-"}) || maxExtraTokenPrefixes != 10 {
		t.Errorf("the reference's prefixes are out of date: %q, %d extra", defaultTokenPrefixes, maxExtraTokenPrefixes)
	}
}
