package gitlab

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzRangeEnd feeds Range header values of a 416 answer to rangeEnd and asserts:
//   - a size it accepts is not negative and is the number after the dash;
//   - what it accepts is a range: the number before the dash is a size too, and not beyond the end;
//   - it reads GitLab's format back: rangeEnd("0-<n>") == n, for the size it read and for any n >= 0.
func FuzzRangeEnd(f *testing.F) {
	for _, v := range []string{"0-0", "0-3", "0-10", " 0-2 ", "bytes=0-42", "0-", "x-y", "0-+5", "0--1",
		"0-9223372036854775807", "0-9223372036854775808", "1-2-3", "0 - 7", ""} {
		f.Add(v, int64(len(v)))
	}
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size >= 0 {
			if got, err := rangeEnd("0-" + strconv.FormatInt(size, 10)); err != nil || int64(got) != size {
				t.Fatalf("rangeEnd(\"0-%d\") = %d, %v", size, got, err)
			}
		}
		n, err := rangeEnd(v)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("rangeEnd(%q) = %d, a negative size", v, n)
		}
		startText, endText, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(v), "bytes="), "-")
		if end, err := strconv.Atoi(strings.TrimSpace(endText)); err != nil || end != n {
			t.Fatalf("rangeEnd(%q) = %d, not the number after the dash", v, n)
		}
		if start, err := strconv.Atoi(strings.TrimSpace(startText)); err != nil || start < 0 || start > n {
			t.Fatalf("rangeEnd(%q) = %d accepts a range whose start %q is not a size up to the end", v, n, startText)
		}
		if again, err := rangeEnd("0-" + strconv.Itoa(n)); err != nil || again != n {
			t.Fatalf("rangeEnd(%q) = %d, but rangeEnd(\"0-%d\") = %d, %v", v, n, n, again, err)
		}
	})
}
