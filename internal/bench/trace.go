package bench

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/common/trace"
)

func init() {
	Register(Bench{Name: "4 trace", Run: runTrace})
}

// traceChunk is the size of one write, as a job's output arrives through the executor.
const traceChunk = 4096

// traceLogSize bounds one job's log: after it a fresh Trace is made, so that memory stays bounded.
const traceLogSize = 16 << 20

// runTrace measures common/trace's pipeline (token sanitizer, 20 masked phrases, UTF-8 repair, output
// limit, buffer and CRC-32, with a section opened and closed every 64 KiB) against a plain copy of the
// same bytes into a buffer of the same size, each for the same wall time, one after the other.
func runTrace(t *testing.T, p Profile) []Row {
	d := 3 * time.Second
	if p.Short {
		d = 200 * time.Millisecond
	}
	var phrases []string
	for i := range 20 {
		phrases = append(phrases, fmt.Sprintf("masked-value-%02d-%s", i, strings.Repeat("q", i)))
	}
	var chunk bytes.Buffer
	for i := 0; chunk.Len() < traceChunk; i++ {
		fmt.Fprintf(&chunk, "Step %d: compiling package example.com/pkg%d with flags -O2 (masked-value-0%d) é\n", i, i, i%10)
	}
	data := chunk.Bytes()[:traceChunk]

	newTrace := func() *trace.Trace {
		return trace.New(discardNet{}, gitlab.JobCredentials{ID: 1}, trace.Options{MaskPhrases: phrases, OutputLimit: 1 << 62})
	}
	pipeline := throughput(d, func(n int) int {
		tr := newTrace()
		written := 0
		for i := range n {
			if i%16 == 0 {
				tr.SectionStart(fmt.Sprintf("step_%d", i), "Step")
			}
			if _, err := tr.Write(data); err != nil {
				t.Fatal(err)
			}
			written += len(data)
			if i%16 == 15 {
				tr.SectionEnd(fmt.Sprintf("step_%d", i-15))
			}
		}
		if tr.Checksum() == "" {
			t.Fatal("no checksum")
		}
		return written
	})
	plain := throughput(d, func(n int) int {
		buf := make([]byte, 0, traceLogSize)
		for range n {
			buf = append(buf, data...)
		}
		return len(buf)
	})
	return []Row{{
		Name:      "trace pipeline: 20 masked variables + sections + CRC",
		Value:     pipeline,
		Unit:      "MB/s",
		Limit:     plain,
		LimitName: "plain copy of the same 4 KiB writes into a buffer, same run",
		Goal:      "≥ 100 MB/s",
		Note:      "ratio is the share of a plain copy's speed the pipeline keeps",
	}}
}

// throughput calls log with the number of writes that fill one log, again and again for at least d,
// and returns the bytes it reported per second, in MB/s (10⁶ bytes).
func throughput(d time.Duration, log func(writes int) int) float64 {
	writes := traceLogSize / traceChunk
	var bytes int
	start := time.Now()
	for time.Since(start) < d {
		bytes += log(writes)
	}
	return float64(bytes) / time.Since(start).Seconds() / 1e6
}

// discardNet acknowledges everything at once, so that the pipeline is measured alone.
type discardNet struct{}

func (discardNet) UpdateJob(context.Context, gitlab.JobCredentials, gitlab.UpdateJobInfo) gitlab.UpdateJobResult {
	return gitlab.UpdateJobResult{}
}

func (discardNet) PatchTrace(_ context.Context, _ gitlab.JobCredentials, c []byte, off int, _ bool) gitlab.PatchTraceResult {
	return gitlab.PatchTraceResult{SentOffset: off + len(c)}
}
