package connector_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
)

// infoFunc serves the rig's ConnectInfo and counts the calls.
func infoFunc(r *rig, calls *atomic.Int32) connector.ConnectInfoFunc {
	return func(_ context.Context, id string) (fleeting.ConnectInfo, error) {
		calls.Add(1)
		if id != r.info.ID {
			return fleeting.ConnectInfo{}, fmt.Errorf("no instance %q", id)
		}
		return r.info, nil
	}
}

func TestPoolSharesOneConnection(t *testing.T) {
	r := startRig(t, "i-pool")
	var calls atomic.Int32
	p := connector.NewPool(connector.Config{}, infoFunc(r, &calls))
	defer p.Close()

	const users = 8
	leases := make([]*connector.Lease, users)
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for i := range users {
		wg.Go(func() {
			l, err := p.Get(t.Context(), "i-pool")
			if err != nil {
				errs <- err
				return
			}
			leases[i] = l
			if out, code, err := l.Run(t.Context(), "echo shared"); err != nil || code != 0 || string(out) != "shared\n" {
				errs <- fmt.Errorf("Run = %q, %d, %v", out, code, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, l := range leases {
		if l.Client() != leases[0].Client() {
			t.Errorf("lease %d has its own connection; want one shared by all", i)
		}
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("ConnectInfo called %d times, want once (one dial)", got)
	}
	if got := p.Refs("i-pool"); got != users {
		t.Errorf("Refs = %d, want %d", got, users)
	}
	for _, l := range leases {
		l.Release()
		l.Release() // a second Release is a no-op
	}
	if got := p.Refs("i-pool"); got != 0 {
		t.Errorf("Refs after release = %d, want 0", got)
	}
	// The idle connection is kept for the next job.
	l, err := p.Get(t.Context(), "i-pool")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Client() != leases[0].Client() || calls.Load() != 1 {
		t.Errorf("Get after release dialed again; want the idle connection reused")
	}
}

func TestPoolReconnectsEvictsAndCloses(t *testing.T) {
	r := startRig(t, "i-re")
	var calls atomic.Int32
	p := connector.NewPool(connector.Config{}, infoFunc(r, &calls))

	l1, err := p.Get(t.Context(), "i-re")
	if err != nil {
		t.Fatal(err)
	}
	// The instance dies and comes back (same address and host key): the holder sees the loss, the next
	// Get dials afresh.
	if err := r.sshd.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l1.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("lease on a killed instance not told")
	}
	r.start(t)
	l2, err := p.Get(t.Context(), "i-re")
	if err != nil {
		t.Fatalf("Get after the instance came back: %v", err)
	}
	if l2.Client() == l1.Client() {
		t.Fatal("Get handed out the dead connection")
	}
	if _, code, err := l2.Run(t.Context(), "true"); err != nil || code != 0 {
		t.Errorf("Run on the new connection = %d, %v", code, err)
	}
	l1.Release()

	p.Evict("i-re")
	select {
	case <-l2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Evict left the connection open")
	}
	l2.Release()
	if got := p.Refs("i-re"); got != 0 {
		t.Errorf("Refs after Evict = %d", got)
	}

	if _, err := p.Get(t.Context(), "i-unknown"); err == nil {
		t.Errorf("Get of an unknown instance succeeded")
	}
	l3, err := p.Get(t.Context(), "i-re")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	<-l3.Done()
	if _, err := p.Get(t.Context(), "i-re"); !errors.Is(err, connector.ErrPoolClosed) {
		t.Errorf("Get after Close = %v, want ErrPoolClosed", err)
	}
	if _, _, err := p.Run(t.Context(), "i-re", "true"); !errors.Is(err, connector.ErrPoolClosed) {
		t.Errorf("Run after Close = %v, want ErrPoolClosed", err)
	}
}

func TestPoolRun(t *testing.T) {
	r := startRig(t, "i-run")
	var calls atomic.Int32
	p := connector.NewPool(connector.Config{}, infoFunc(r, &calls))
	defer p.Close()
	out, code, err := p.Run(t.Context(), "i-run", "echo ready; exit 1")
	if err != nil || code != 1 || string(out) != "ready\n" {
		t.Errorf("Run = %q, %d, %v; want \"ready\\n\", 1, nil", out, code, err)
	}
	if got := p.Refs("i-run"); got != 0 {
		t.Errorf("Refs after Run = %d, want 0", got)
	}
}

// TestPoolConnectedNeverDials: Connected lends only an open connection; through it DialFrom reaches a
// server as the instance (a direct-tcpip channel of the real sshd).
func TestPoolConnectedNeverDials(t *testing.T) {
	r := startRig(t, "i-conn")
	var calls atomic.Int32
	p := connector.NewPool(connector.Config{}, infoFunc(r, &calls))
	defer p.Close()
	if _, ok := p.Connected("i-conn"); ok {
		t.Fatal("Connected lent a connection before any was opened")
	}
	if calls.Load() != 0 {
		t.Fatalf("Connected asked for connect info %d times; it must never dial", calls.Load())
	}
	l, err := p.Get(t.Context(), "i-conn")
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	lease, ok := p.Connected("i-conn")
	if !ok {
		t.Fatal("Connected lent nothing while the pool holds an open connection")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("from the instance")) }))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: lease.DialFrom}}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET through DialFrom: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(body) != "from the instance" {
		t.Errorf("GET through DialFrom = %q", body)
	}
	hc.CloseIdleConnections()
	lease.Release()
	if got := p.Refs("i-conn"); got != 0 {
		t.Errorf("Refs after Release = %d, want 0", got)
	}
	p.Evict("i-conn")
	if _, ok := p.Connected("i-conn"); ok {
		t.Error("Connected lent an evicted connection")
	}
}

// TestPoolReadyingLendsConnectInfo: while the ready hook lends the pool its connection details, dials
// use them; once they expired, and after the hook, the ConnectInfoFunc is asked.
func TestPoolReadyingLendsConnectInfo(t *testing.T) {
	r := startRig(t, "i-lent")
	var calls atomic.Int32
	p := connector.NewPool(connector.Config{}, infoFunc(r, &calls))
	defer p.Close()

	done := p.Readying("i-lent", r.info)
	for range 2 { // a reconnect of a booting instance uses the lent details again
		if _, _, err := p.Run(t.Context(), "i-lent", "true"); err != nil {
			t.Fatal(err)
		}
		p.Evict("i-lent")
	}
	if got := calls.Load(); got != 0 {
		t.Fatalf("ConnectInfoFunc called %d times while details were lent, want 0", got)
	}
	expired := r.info
	past := time.Now().Add(-time.Second)
	expired.Expires = &past
	p.Readying("i-lent", expired)
	if _, _, err := p.Run(t.Context(), "i-lent", "true"); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("ConnectInfoFunc called %d times for expired lent details, want 1", got)
	}
	done()
	p.Evict("i-lent")
	if _, _, err := p.Run(t.Context(), "i-lent", "true"); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("ConnectInfoFunc called %d times after the hook, want 2", got)
	}
}

// TestPoolRemove: an instance that left the group loses its connection and its lent details.
func TestPoolRemove(t *testing.T) {
	r := startRig(t, "i-gone")
	var calls atomic.Int32
	p := connector.NewPool(connector.Config{}, infoFunc(r, &calls))
	defer p.Close()
	p.Readying("i-gone", r.info)
	l, err := p.Get(t.Context(), "i-gone")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	p.Remove("i-gone")
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Remove left the connection open")
	}
	again, err := p.Get(t.Context(), "i-gone")
	if err != nil || calls.Load() != 1 {
		t.Fatalf("Get after Remove = %v with %d ConnectInfoFunc calls; want a dial with fresh details", err, calls.Load())
	}
	again.Release()
}
