package executors_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// TestNewJobContextCauses: each way a job ends carries its own cause, which is how an executor tells a
// timeout from an abort from a graceful cancel; a graceful cancel leaves Run's context running.
func TestNewJobContextCauses(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		ctx, canceling, stop := executors.NewJobContext(t.Context(), 20*time.Millisecond, nil, nil)
		defer stop()
		<-ctx.Done()
		var timeout *executors.TimeoutError
		if !errors.As(context.Cause(ctx), &timeout) || timeout.Timeout != 20*time.Millisecond {
			t.Fatalf("cause %v, want a TimeoutError of 20ms", context.Cause(ctx))
		}
		if canceling.Err() != nil {
			t.Error("the timeout ended Canceling too; it says only that GitLab asked to cancel")
		}
	})
	t.Run("aborted", func(t *testing.T) {
		aborted := make(chan struct{})
		ctx, _, stop := executors.NewJobContext(t.Context(), time.Hour, nil, aborted)
		defer stop()
		close(aborted)
		<-ctx.Done()
		if !errors.Is(context.Cause(ctx), executors.ErrAborted) {
			t.Fatalf("cause %v, want ErrAborted", context.Cause(ctx))
		}
	})
	t.Run("graceful cancel", func(t *testing.T) {
		canceling := make(chan struct{})
		ctx, cancelCtx, stop := executors.NewJobContext(t.Context(), time.Hour, canceling, nil)
		defer stop()
		close(canceling)
		<-cancelCtx.Done()
		if !errors.Is(context.Cause(cancelCtx), executors.ErrCanceled) {
			t.Fatalf("cause %v, want ErrCanceled", context.Cause(cancelCtx))
		}
		if ctx.Err() != nil {
			t.Error("a graceful cancel ended Run's context; after_script could not run")
		}
	})
	t.Run("parent", func(t *testing.T) {
		parent, cancel := context.WithCancel(t.Context())
		ctx, _, stop := executors.NewJobContext(parent, time.Hour, nil, nil)
		defer stop()
		cancel()
		<-ctx.Done()
		if !errors.Is(context.Cause(ctx), context.Canceled) {
			t.Fatalf("cause %v, want the parent's", context.Cause(ctx))
		}
	})
}
