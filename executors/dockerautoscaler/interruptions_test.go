package dockerautoscaler

import (
	"context"
	"errors"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

// TestNoticesMoveUnstartedJobs: a notice cancels, with errReclaimNotice, the attempts on its instance
// whose script has not started, leaves the running script alone and other instances' attempts too; an
// attempt that begins on a noticed instance is moved at once; a repeated notice is no news.
func TestNoticesMoveUnstartedJobs(t *testing.T) {
	n := notices{seen: map[string]notice{}, attempts: map[string]map[*scriptWatch]context.CancelCauseFunc{}}
	attempt := func(id string, started bool) (context.Context, func()) {
		ctx, cancel := context.WithCancelCause(t.Context())
		w := &scriptWatch{}
		w.started.Store(started)
		return ctx, n.track(id, w, cancel)
	}
	preparing, untrack := attempt("i-1", false)
	defer untrack()
	running, untrack := attempt("i-1", true)
	defer untrack()
	elsewhere, untrack := attempt("i-2", false)
	defer untrack()

	in := fleeting.Interruption{Instance: "i-1", Reason: "spot interruption notice (marked-for-termination)"}
	if !n.note(in, time.Now()) {
		t.Fatal("the first notice was taken for a repeat")
	}
	if n.note(in, time.Now()) {
		t.Error("a repeated notice was taken for news")
	}
	if err := context.Cause(preparing); !errors.Is(err, errReclaimNotice) {
		t.Errorf("attempt before its script: cause %v, want errReclaimNotice", err)
	}
	if running.Err() != nil || elsewhere.Err() != nil {
		t.Errorf("a running script (%v) or another instance's attempt (%v) was cancelled", context.Cause(running), context.Cause(elsewhere))
	}
	late, untrack := attempt("i-1", false)
	defer untrack()
	if !errors.Is(context.Cause(late), errReclaimNotice) {
		t.Errorf("attempt beginning on a noticed instance: cause %v, want errReclaimNotice", context.Cause(late))
	}
	if r, ok := n.reclaimed("i-1"); !ok || r != in.Reason {
		t.Errorf("reclaimed(i-1) = %q, %t", r, ok)
	}
	if _, ok := n.reclaimed("i-2"); ok {
		t.Error("i-2 has no notice but is taken as reclaimed")
	}
	// Past noticeMemory a notice is forgotten, when the next one is noted.
	n.note(fleeting.Interruption{Instance: "i-3", Reason: "later"}, time.Now().Add(noticeMemory+time.Minute))
	if _, ok := n.reclaimed("i-1"); ok {
		t.Error("a notice older than noticeMemory is still remembered")
	}
}
