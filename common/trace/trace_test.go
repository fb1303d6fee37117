package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

// fakeNet is an in-memory GitLab trace endpoint with GitLab's append-only semantics and scripted faults.
type fakeNet struct {
	mu      sync.Mutex
	stored  []byte
	patches int
	puts    []gitlab.UpdateJobInfo
	// patchFaults / putFaults are consumed one per call before normal handling.
	patchFaults []gitlab.PatchState
	putFaults   []gitlab.UpdateState
	// truncateTo, when >= 0, makes the server lose data once (it then answers 416 with its size).
	truncateTo int
	jobStatus  string // "canceling" sets CancelRequested
}

func newFakeNet() *fakeNet { return &fakeNet{truncateTo: -1} }

func (f *fakeNet) PatchTrace(_ context.Context, _ gitlab.JobCredentials, content []byte, start int, _ bool) gitlab.PatchTraceResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.patches++
	res := gitlab.PatchTraceResult{SentOffset: start, CancelRequested: f.jobStatus == "canceling"}
	if len(f.patchFaults) > 0 {
		res.State = f.patchFaults[0]
		f.patchFaults = f.patchFaults[1:]
		if res.State != gitlab.PatchSucceeded {
			return res
		}
	}
	if f.truncateTo >= 0 {
		f.stored = f.stored[:f.truncateTo]
		f.truncateTo = -1
	}
	if start != len(f.stored) {
		res.State = gitlab.PatchRangeMismatch
		res.SentOffset = len(f.stored)
		return res
	}
	f.stored = append(f.stored, content...)
	res.State = gitlab.PatchSucceeded
	res.SentOffset = len(f.stored)
	return res
}

func (f *fakeNet) UpdateJob(_ context.Context, _ gitlab.JobCredentials, u gitlab.UpdateJobInfo) gitlab.UpdateJobResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts = append(f.puts, u)
	res := gitlab.UpdateJobResult{CancelRequested: f.jobStatus == "canceling"}
	if len(f.putFaults) > 0 {
		res.State = f.putFaults[0]
		f.putFaults = f.putFaults[1:]
		return res
	}
	return res
}

func (f *fakeNet) snapshot() ([]byte, []gitlab.UpdateJobInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.stored...), append([]gitlab.UpdateJobInfo(nil), f.puts...)
}

func noSleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func newTestTrace(net Network, o Options) *Trace {
	o.Sleep = noSleep
	return New(net, gitlab.JobCredentials{ID: 7, Token: "glcbt-jobtoken"}, o)
}

// finishBytes writes parts, finishes, and returns the stored log (the trace's own and the server's must agree).
func finishBytes(t *testing.T, o Options, parts ...string) []byte {
	t.Helper()
	net := newFakeNet()
	tr := newTestTrace(net, o)
	for _, p := range parts {
		if _, err := tr.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Finish(t.Context(), gitlab.JobSuccess, "", 0); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	stored, puts := net.snapshot()
	if !bytes.Equal(stored, tr.Bytes()) {
		t.Fatalf("server holds %q, trace holds %q", stored, tr.Bytes())
	}
	last := puts[len(puts)-1]
	if want := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(stored)); last.Output.Checksum != want || last.Output.Bytesize != int64(len(stored)) {
		t.Fatalf("final output = %+v, want checksum %s bytesize %d", last.Output, want, len(stored))
	}
	return stored
}

func TestMaskingAcrossEveryWriteBoundary(t *testing.T) {
	phrases := []string{"s3cr3t-value", "s3cr3t", "another$ecret!", "ü-unicode-ß"}
	tests := []struct{ in, want string }{
		{"pre s3cr3t-value post", "pre [MASKED] post"},
		{"pre s3cr3t-valu post", "pre [MASKED]-valu post"},
		{"a s3cr3ts3cr3t b", "a [MASKED][MASKED] b"},
		{"x another$ecret! y ü-unicode-ß z", "x [MASKED] y [MASKED] z"},
		{"s3cr3", "s3cr3"},
		{"end with s3cr3t", "end with [MASKED]"},
		{"nothing to hide", "nothing to hide"},
	}
	for _, tc := range tests {
		for split := 0; split <= len(tc.in); split++ {
			got := finishBytes(t, Options{MaskPhrases: phrases}, tc.in[:split], tc.in[split:])
			if string(got) != tc.want {
				t.Errorf("%q split at %d: got %q, want %q", tc.in, split, got, tc.want)
			}
		}
	}
}

func TestMaskingByteByByte(t *testing.T) {
	in := "log: s3cr3t-value and again s3cr3t-value."
	var parts []string
	for i := range len(in) {
		parts = append(parts, in[i:i+1])
	}
	got := finishBytes(t, Options{MaskPhrases: []string{"s3cr3t-value"}}, parts...)
	if want := "log: [MASKED] and again [MASKED]."; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestLongestPhraseFirst(t *testing.T) {
	got := finishBytes(t, Options{MaskPhrases: []string{"abc", "abcdef"}}, "1 abcdef 2 abcde 3")
	if want := "1 [MASKED] 2 [MASKED]de 3"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestTokenPrefixes(t *testing.T) {
	tests := []struct {
		name  string
		extra []string
		in    string
		want  string
	}{
		{"pat", nil, "use glpat-AbC_12.3=x now", "use glpat-[MASKED] now"},
		{"runner token", nil, "token=glrt-t1_abcdef\n", "token=glrt-[MASKED]\n"},
		{"job token", nil, "(glcbt-64_xyz)", "(glcbt-[MASKED])"},
		{"prefix alone", nil, "glpat- is a prefix", "glpat- is a prefix"},
		{"prefix at end", nil, "ends in glpat-", "ends in glpat-"},
		{"feature prefix", []string{"custom_"}, "custom_abc def", "custom_[MASKED] def"},
		{"unknown prefix", nil, "custom_abc def", "custom_abc def"},
		{"two tokens", nil, "glpat-a glrt-b", "glpat-[MASKED] glrt-[MASKED]"},
		{"eleventh extra prefix ignored", []string{"p0-", "p1-", "p2-", "p3-", "p4-", "p5-", "p6-", "p7-", "p8-", "p9-", "p10-"},
			"p9-x p10-y", "p9-[MASKED] p10-y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for split := 0; split <= len(tc.in); split++ {
				got := finishBytes(t, Options{TokenPrefixes: tc.extra}, tc.in[:split], tc.in[split:])
				if string(got) != tc.want {
					t.Errorf("split at %d: got %q, want %q", split, got, tc.want)
				}
			}
		})
	}
}

func TestTokenRunningIntoNextWrites(t *testing.T) {
	got := finishBytes(t, Options{}, "a glpat-abc", "def", "ghi jk")
	if want := "a glpat-[MASKED] jk"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestInvalidUTF8(t *testing.T) {
	euro := "€" // three bytes
	tests := []struct {
		name  string
		parts []string
		want  string
	}{
		{"split character kept", []string{"a" + euro[:1], euro[1:2], euro[2:] + "b"}, "a€b"},
		{"invalid byte replaced", []string{"a\xffb"}, "a\uFFFDb"},
		{"truncated character at the end", []string{"a" + euro[:2]}, "a\uFFFD\uFFFD"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := finishBytes(t, Options{}, tc.parts...); string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOutputLimit(t *testing.T) {
	// "ééé" is 6 bytes; a limit of 7 falls inside the second é after "abcd".
	got := finishBytes(t, Options{OutputLimit: 7}, "abcdééé", "zzz", "and zzz")
	s := string(got)
	if !strings.HasPrefix(s, "abcdé\n") {
		t.Fatalf("log must be cut at a character boundary before the notice, got %q", s)
	}
	if strings.Count(s, "Job's log exceeded limit of 7 bytes.") != 1 {
		t.Fatalf("notice must appear exactly once, got %q", s)
	}
	if strings.Contains(s, "zzz") {
		t.Fatalf("writes after the limit must be discarded, got %q", s)
	}
}

func TestSectionsAndMessages(t *testing.T) {
	net := newFakeNet()
	tr := newTestTrace(net, Options{})
	tr.SectionStart("step_script", `Executing "step_script" stage`)
	tr.Infof("hello %d", 1)
	tr.Warnf("careful")
	tr.Errorf("broken")
	tr.SectionEnd("step_script")
	tr.SectionStart("bad name!", "x")
	tr.SectionStart("opts[collapsed=true]", "y")
	if err := tr.Finish(t.Context(), gitlab.JobSuccess, "", 0); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\x1b\[0Ksection_start:\d+:step_script\r\x1b\[0KExecuting "step_script" stage\n` +
		`\x1b\[32;1mhello 1\x1b\[0;m\n` +
		`\x1b\[0;33mWARNING: careful\x1b\[0;m\n` +
		`\x1b\[31;1mERROR: broken\x1b\[0;m\n` +
		`\x1b\[0Ksection_end:\d+:step_script\r\x1b\[0K` +
		`\x1b\[0Ksection_start:\d+:bad_name_\r\x1b\[0Kx\n` +
		`\x1b\[0Ksection_start:\d+:opts\[collapsed=true\]\r\x1b\[0Ky\n$`)
	if got := tr.Bytes(); !re.Match(got) {
		t.Fatalf("log %q does not match %s", got, re)
	}
}

func TestChecksumAndSize(t *testing.T) {
	tr := newTestTrace(newFakeNet(), Options{MaskPhrases: []string{"pw"}})
	_, _ = tr.Write([]byte("the pw is "))
	_, _ = tr.Write([]byte("pw\n"))
	if err := tr.Finish(t.Context(), gitlab.JobSuccess, "", 0); err != nil {
		t.Fatal(err)
	}
	b := tr.Bytes()
	if string(b) != "the [MASKED] is [MASKED]\n" {
		t.Fatalf("log = %q", b)
	}
	if want := fmt.Sprintf("crc32:%08x", crc32.ChecksumIEEE(b)); tr.Checksum() != want {
		t.Fatalf("Checksum() = %s, want %s", tr.Checksum(), want)
	}
	if tr.Size() != int64(len(b)) {
		t.Fatalf("Size() = %d, want %d", tr.Size(), len(b))
	}
	if _, err := tr.Write([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Finish: err = %v, want ErrClosed", err)
	}
}

func TestFinishSequence(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", (3*maxPatchSize)/16+5) // needs several PATCHes
	tests := []struct {
		name        string
		patchFaults []gitlab.PatchState
		putFaults   []gitlab.UpdateState
		truncateTo  int
		wantErr     error
		wantPuts    int
	}{
		{name: "plain", wantPuts: 1},
		{name: "patch failures retried", patchFaults: []gitlab.PatchState{gitlab.PatchFailed, gitlab.PatchFailed}, wantPuts: 1},
		{name: "patch 404 gives up on log", patchFaults: []gitlab.PatchState{gitlab.PatchNotFound}, wantPuts: 1},
		{name: "202 repeats", putFaults: []gitlab.UpdateState{gitlab.UpdateAcceptedButNotCompleted, gitlab.UpdateAcceptedButNotCompleted}, wantPuts: 3},
		{name: "412 resends all", putFaults: []gitlab.UpdateState{gitlab.UpdateTraceValidationFailed}, wantPuts: 2},
		{name: "put failure retried", putFaults: []gitlab.UpdateState{gitlab.UpdateFailed}, wantPuts: 2},
		{name: "server lost data: 416 jumps back", truncateTo: 1000, wantPuts: 1},
		{name: "abort", putFaults: []gitlab.UpdateState{gitlab.UpdateAbort}, wantErr: ErrAborted, wantPuts: 1},
		{name: "not found", putFaults: []gitlab.UpdateState{gitlab.UpdateNotFound}, wantErr: gitlab.ErrNotFound, wantPuts: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			net := newFakeNet()
			tr := newTestTrace(net, Options{})
			_, _ = tr.Write([]byte(big[:maxPatchSize+10]))
			// Send part of the log as the loop would, then let the server lose some.
			if more, _ := tr.patchOnce(t.Context()); !more {
				t.Fatal("first patch should succeed")
			}
			_, _ = tr.Write([]byte(big[maxPatchSize+10:]))
			net.mu.Lock()
			net.patchFaults, net.putFaults = tc.patchFaults, tc.putFaults
			if tc.truncateTo > 0 {
				net.truncateTo = tc.truncateTo
			}
			net.mu.Unlock()
			err := tr.Finish(t.Context(), gitlab.JobFailed, job.ScriptFailure, 3)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Finish err = %v, want %v", err, tc.wantErr)
			}
			stored, puts := net.snapshot()
			if len(puts) != tc.wantPuts {
				t.Fatalf("%d PUTs, want %d", len(puts), tc.wantPuts)
			}
			last := puts[len(puts)-1]
			if last.State != gitlab.JobFailed || last.FailureReason != job.ScriptFailure || last.ExitCode != 3 {
				t.Fatalf("final PUT = %+v", last)
			}
			if tc.wantErr == nil && tc.patchFaults == nil && string(stored) != big {
				t.Fatalf("server holds %d bytes, want the whole %d-byte log", len(stored), len(big))
			}
		})
	}
}

func TestFinishStopsAtContextEnd(t *testing.T) {
	net := newFakeNet()
	net.putFaults = []gitlab.UpdateState{gitlab.UpdateFailed, gitlab.UpdateFailed, gitlab.UpdateFailed}
	ctx, cancel := context.WithCancel(t.Context())
	tr := New(net, gitlab.JobCredentials{ID: 1}, Options{Sleep: func(context.Context, time.Duration) error {
		cancel()
		return context.Canceled
	}})
	if err := tr.Finish(ctx, gitlab.JobSuccess, "", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// waitFor polls cond; the generous bound only guards against a hang, it asserts no timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("gave up waiting for %s", what)
}

func TestLoopStreamsKeepsAliveAndSignals(t *testing.T) {
	net := newFakeNet()
	tr := newTestTrace(net, Options{UpdateInterval: 5 * time.Millisecond, ForceSendInterval: 20 * time.Millisecond})
	tr.Start()
	_, _ = tr.Write([]byte("streamed\n"))
	waitFor(t, "incremental patch", func() bool { s, _ := net.snapshot(); return string(s) == "streamed\n" })
	waitFor(t, "keep-alive PUT", func() bool {
		_, puts := net.snapshot()
		return len(puts) > 0 && puts[0].State == gitlab.JobRunning && puts[0].Output.Bytesize == 9
	})
	net.mu.Lock()
	net.jobStatus = "canceling"
	net.mu.Unlock()
	_, _ = tr.Write([]byte("x"))
	select {
	case <-tr.Canceling():
	case <-time.After(20 * time.Second):
		t.Fatal("Canceling() not closed")
	}
	net.mu.Lock()
	net.patchFaults = []gitlab.PatchState{gitlab.PatchAbort}
	net.mu.Unlock()
	_, _ = tr.Write([]byte("y"))
	select {
	case <-tr.Aborted():
	case <-time.After(20 * time.Second):
		t.Fatal("Aborted() not closed")
	}
	if err := tr.Finish(t.Context(), gitlab.JobFailed, job.ScriptFailure, 1); !errors.Is(err, ErrAborted) {
		t.Fatalf("Finish after abort: %v", err)
	}
}

// TestStreamingEqualsWhole: however a log is cut into writes, the stored bytes are those of one write.
func TestStreamingEqualsWhole(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab-glpat_rtc \n\xc3\xa9")
	randString := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 300 {
		o := Options{MaskPhrases: []string{randString(1 + rng.IntN(4)), randString(2 + rng.IntN(6)), "glrt-ab"}, TokenPrefixes: []string{"ab-"}}
		in := randString(rng.IntN(80))
		whole := finishBytes(t, o, in)
		var parts []string
		for rest := in; len(rest) > 0; {
			n := 1 + rng.IntN(min(len(rest), 7))
			parts, rest = append(parts, rest[:n]), rest[n:]
		}
		if got := finishBytes(t, o, parts...); !bytes.Equal(got, whole) {
			t.Fatalf("phrases %q, input %q cut as %q:\nstreamed %q\nwhole    %q", o.MaskPhrases, in, parts, got, whole)
		}
	}
}

// FinalUpdateRetryLimit (job_status_final_update_retry_limit) bounds the retries of failed requests in
// the final update sequence; GitLab's 202 answers are not failures and do not count.
func TestFinalUpdateRetryLimit(t *testing.T) {
	tests := []struct {
		name        string
		limit       int
		patchFaults []gitlab.PatchState
		putFaults   []gitlab.UpdateState
		wantErr     bool
		wantPuts    int
	}{
		{"PUT failures within the limit", 2, nil, []gitlab.UpdateState{gitlab.UpdateFailed, gitlab.UpdateFailed}, false, 3},
		{"PUT failures beyond the limit", 2, nil, []gitlab.UpdateState{gitlab.UpdateFailed, gitlab.UpdateFailed, gitlab.UpdateFailed}, true, 3},
		{"PATCH failures count too", 1, []gitlab.PatchState{gitlab.PatchFailed, gitlab.PatchFailed}, nil, true, 0},
		{"202 is not a failure", 1, nil, []gitlab.UpdateState{gitlab.UpdateAcceptedButNotCompleted, gitlab.UpdateAcceptedButNotCompleted, gitlab.UpdateFailed}, false, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			net := newFakeNet()
			net.patchFaults, net.putFaults = tc.patchFaults, tc.putFaults
			tr := newTestTrace(net, Options{FinalUpdateRetryLimit: tc.limit})
			_, _ = tr.Write([]byte("log\n"))
			err := tr.Finish(t.Context(), gitlab.JobSuccess, "", 0)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Finish err = %v, want error: %v", err, tc.wantErr)
			}
			if _, puts := net.snapshot(); len(puts) != tc.wantPuts {
				t.Fatalf("%d PUTs, want %d", len(puts), tc.wantPuts)
			}
		})
	}
}
