package aws

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
)

// TestReadNotice reads notices from a fake instance metadata service (IMDSv2 only), dialed directly as
// the executor's SSH tunnel would from the instance.
func TestReadNotice(t *testing.T) {
	at := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	off := false
	for _, tc := range []struct {
		name       string
		issue      func(*awssim.Metadata)
		disabled   bool
		wantReason string // "" for no notice
		wantReads  int
	}{
		{name: "no notice", issue: func(*awssim.Metadata) {}, wantReads: 2},
		{name: "rebalance recommendation", issue: func(m *awssim.Metadata) { m.Rebalance(at) }, wantReason: "spot rebalance recommendation", wantReads: 2},
		{name: "interruption notice", issue: func(m *awssim.Metadata) { m.Interrupt("terminate", at.Add(2*time.Minute)) },
			wantReason: "spot interruption notice (terminate at 2026-12-07T03:02:00Z)", wantReads: 1},
		{name: "notice wins over recommendation", issue: func(m *awssim.Metadata) { m.Rebalance(at); m.Interrupt("stop", at) },
			wantReason: "spot interruption notice (stop", wantReads: 1},
		{name: "turned off", issue: func(m *awssim.Metadata) { m.Rebalance(at) }, disabled: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := awssim.NewMetadata()
			tc.issue(md)
			srv := httptest.NewServer(md)
			defer srv.Close()
			g := &InstanceGroup{Name: "jobs", MetadataEndpoint: srv.URL}
			if tc.disabled {
				g.InstanceMetadata = &off
			}
			got, err := g.ReadNotice(t.Context(), "i-1", (&net.Dialer{}).DialContext)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.wantReason == "" && got != nil:
				t.Fatalf("notice %+v, want none", got)
			case tc.wantReason != "" && (got == nil || got.Instance != "i-1" || !strings.HasPrefix(got.Reason, tc.wantReason)):
				t.Fatalf("notice %+v, want instance i-1 and a reason starting %q", got, tc.wantReason)
			}
			if tc.wantReason == "spot rebalance recommendation" && !got.NoticedAt.Equal(at) {
				t.Errorf("noticed at %s, want %s", got.NoticedAt, at)
			}
			if n := md.Reads(); n != tc.wantReads {
				t.Errorf("%d notice documents read, want %d", n, tc.wantReads)
			}
		})
	}
}

// TestReadNoticeErrors: a metadata service that cannot be read is an error naming the instance and the
// fix, never "no notice", and IMDSv1 is not used as a fallback.
func TestReadNoticeErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{name: "IMDSv1 only", handler: func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				http.Error(w, "", http.StatusForbidden)
				return
			}
			_, _ = w.Write([]byte(`{"action":"terminate","time":"2026-12-07T03:02:00Z"}`))
		}, want: "instance i-1: read spot/instance-action"},
		{name: "malformed document", handler: func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
				_, _ = w.Write([]byte("token"))
				return
			}
			_, _ = w.Write([]byte(`not json`))
		}, want: "malformed document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			g := &InstanceGroup{Name: "jobs", MetadataEndpoint: srv.URL}
			got, err := g.ReadNotice(t.Context(), "i-1", (&net.Dialer{}).DialContext)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "instance_metadata = false") {
				t.Fatalf("notice %+v, error %v; want an error containing %q and the fix", got, err, tc.want)
			}
		})
	}
}

var _ fleeting.DialFunc = (&net.Dialer{}).DialContext
