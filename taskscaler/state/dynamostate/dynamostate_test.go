package dynamostate

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/clock"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

const (
	testTable = "fleetrunner-state"
	// lease is short only to keep the numbers small: time is the fake clock's, nothing sleeps.
	lease = 2 * time.Second
)

var (
	alpha = state.Holder{SystemID: "s_0123456789ab", Host: "manager-a", PID: 101}
	beta  = state.Holder{SystemID: "s_ba9876543210", Host: "manager-b", PID: 202}
)

// isolateAWS gives the SDK dummy credentials and keeps it away from this machine's AWS configuration.
func isolateAWS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "AKIAFLEETRUNNERTEST",
		"AWS_SECRET_ACCESS_KEY":       "fleetrunner-test-secret",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
		"AWS_DEFAULT_REGION":          "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
}

// motoTable starts moto, creates the state table as deploy/aws/fleetrunner-state-table.yaml does, and
// returns it on a fake clock.
//
// serialize puts a proxy in front of moto that passes one request at a time. moto (5.2.1) serves each
// request on its own thread and evaluates an UpdateItem's condition and applies its update without a
// lock, so two racing conditional writes can both succeed; DynamoDB applies the writes to one item one
// after the other. Serialized, moto shows what any order of racing writes leaves behind.
func motoTable(t *testing.T, serialize bool) (*Table, *clock.Fake) {
	t.Helper()
	isolateAWS(t)
	m := testenv.StartMoto(t)
	endpoint := m.URL
	if serialize {
		target, err := url.Parse(m.URL)
		if err != nil {
			t.Fatal(err)
		}
		proxy := httputil.NewSingleHostReverseProxy(target)
		var one sync.Mutex
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			one.Lock()
			defer one.Unlock()
			proxy.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		endpoint = srv.URL
	}
	clk := clock.NewFake(time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC))
	tbl, err := New(t.Context(), Config{Table: testTable, Region: "us-east-1", Endpoint: endpoint, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.client.CreateTable(t.Context(), &dynamodb.CreateTableInput{
		TableName:            aws.String(testTable),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(KeyAttribute), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(KeyAttribute), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	}); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	return tbl, clk
}

// leaseError asserts err wraps want and returns its LeaseError (a copy: errcheck would see an error).
func leaseError(t *testing.T, err, want error) state.LeaseError {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want one wrapping %q", err, want)
	}
	var le *state.LeaseError
	if !errors.As(err, &le) {
		t.Fatalf("error %v is no *state.LeaseError", err)
	}
	return *le
}

func acquire(t *testing.T, l *Lease, want state.Token) {
	t.Helper()
	got, err := l.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire by %s: %v", l.me, err)
	}
	if got != want {
		t.Fatalf("Acquire by %s = token %d, want %d", l.me, got, want)
	}
}

func sample(n int) *state.Snapshot {
	at := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	s := &state.Snapshot{SavedAt: at, Forecast: &state.Forecast{Hours: []state.ForecastHour{{Hour: 493000, Peak: 4}}, BootDelays: []time.Duration{40 * time.Second}}}
	for i := range n {
		id := fmt.Sprintf("i-%017d", i)
		s.Instances = append(s.Instances, state.Instance{
			ID: id, State: "ready", UseCount: i, CreatedAt: at, ReadyAt: at.Add(time.Minute),
			ConnectInfo: &fleeting.ConnectInfo{
				ID: id, InternalAddr: "10.0.0.1",
				ConnectorConfig: fleeting.ConnectorConfig{Username: "ubuntu", Key: []byte("PRIVATE KEY"), Password: "secret"},
			},
			Data: map[string][]byte{"hostkey": []byte("ssh-ed25519 AAAA")},
		})
		s.Jobs = append(s.Jobs, state.Job{Key: fmt.Sprintf("job-%d", i), JobID: int64(1000 + i), InstanceID: id, Data: []byte(`{"token":"x"}`), Since: at})
	}
	return s
}

// fileRoundTrip is what the file backend gives back for s: the reference for the table's round trip.
func fileRoundTrip(t *testing.T, s *state.Snapshot) *state.Snapshot {
	t.Helper()
	f := state.NewFile(filepath.Join(t.TempDir(), "state.json"))
	if err := f.Save(s); err != nil {
		t.Fatal(err)
	}
	got, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// recordCalls notes the IAM action of every call the client makes.
func recordCalls(t *testing.T, tbl *Table) *sync.Map {
	t.Helper()
	var calls sync.Map
	record := func(stack *middleware.Stack) error {
		return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("RecordCall",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				calls.Store("dynamodb:"+awsmiddleware.GetOperationName(ctx), true)
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
	}
	tbl.client = dynamodb.New(tbl.client.Options(), func(o *dynamodb.Options) { o.APIOptions = append(o.APIOptions, record) })
	return &calls
}

func TestLease(t *testing.T) {
	tbl, clk := motoTable(t, false)
	calls := recordCalls(t, tbl)
	t.Cleanup(func() {
		// The kit's policy grants IAMActions only; a call outside them would be refused on AWS.
		calls.Range(func(action, _ any) bool {
			if !slices.Contains(IAMActions, action.(string)) {
				t.Errorf("the package called %s, which IAMActions (and so the kit's policy) does not grant", action)
			}
			return true
		})
		for _, action := range IAMActions {
			if _, ok := calls.Load(action); !ok {
				t.Errorf("IAMActions grants %s, which no test called", action)
			}
		}
	})
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, a, b *Lease)
	}{
		{"acquire on an empty table", func(t *testing.T, a, _ *Lease) {
			acquire(t, a, 1)
			got, err := a.Holder(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got.Holder != alpha || got.Token != 1 || !got.Expires.Equal(clk.Now().Add(lease)) || !got.HeldAt(clk.Now()) {
				t.Fatalf("Holder = %+v, want %s with token 1 until %s", got, alpha, clk.Now().Add(lease))
			}
		}},
		{"nobody holds a lease never acquired", func(t *testing.T, a, _ *Lease) {
			got, err := a.Holder(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got != (state.Tenure{}) || got.HeldAt(clk.Now()) {
				t.Fatalf("Holder = %+v, want the zero Tenure", got)
			}
		}},
		{"a second holder is refused and told who holds it", func(t *testing.T, a, b *Lease) {
			acquire(t, a, 1)
			_, err := b.Acquire(t.Context())
			le := leaseError(t, err, state.ErrHeld)
			if le.Current.Holder != alpha || le.Current.Token != 1 {
				t.Fatalf("refusal names %+v, want %s with token 1", le.Current, alpha)
			}
			for _, want := range []string{alpha.SystemID, alpha.Host} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q does not name %s", err, want)
				}
			}
		}},
		{"the holder acquiring again gets a new token", func(t *testing.T, a, _ *Lease) {
			acquire(t, a, 1)
			acquire(t, a, 2)
		}},
		{"an expired lease goes to the next with token+1", func(t *testing.T, a, b *Lease) {
			acquire(t, a, 1)
			clk.Advance(lease + time.Millisecond)
			acquire(t, b, 2)
		}},
		{"renewal keeps the lease past its first expiry", func(t *testing.T, a, b *Lease) {
			acquire(t, a, 1)
			clk.Advance(lease / 2)
			if err := a.Renew(t.Context()); err != nil {
				t.Fatal(err)
			}
			clk.Advance(lease/2 + time.Millisecond)
			_, err := b.Acquire(t.Context())
			leaseError(t, err, state.ErrHeld)
		}},
		{"renewal by a stale holder is lost", func(t *testing.T, a, b *Lease) {
			acquire(t, a, 1)
			clk.Advance(lease + time.Millisecond)
			acquire(t, b, 2)
			le := leaseError(t, a.Renew(t.Context()), state.ErrLost)
			if le.Current.Holder != beta || le.Current.Token != 2 {
				t.Fatalf("lost renewal names %+v, want %s with token 2", le.Current, beta)
			}
		}},
		{"a stale holder's write is fenced off and the new holder's state stays", func(t *testing.T, a, b *Lease) {
			acquire(t, a, 1)
			if err := a.Store(t.Context()).Save(sample(1)); err != nil {
				t.Fatal(err)
			}
			clk.Advance(lease + time.Millisecond)
			acquire(t, b, 2)
			mine := sample(3)
			if err := b.Store(t.Context()).Save(mine); err != nil {
				t.Fatal(err)
			}
			err := a.Store(t.Context()).Save(sample(5))
			le := leaseError(t, err, state.ErrFenced)
			if le.Current.Holder != beta {
				t.Fatalf("fenced write names %+v, want %s", le.Current.Holder, beta)
			}
			got, err := b.Store(t.Context()).Load()
			if err != nil {
				t.Fatal(err)
			}
			if want := fileRoundTrip(t, mine); !reflect.DeepEqual(got, want) {
				t.Fatalf("after the fenced write the table holds %d instances, want the new holder's %d", len(got.Instances), len(want.Instances))
			}
		}},
		{"release hands over without waiting for expiry", func(t *testing.T, a, b *Lease) {
			acquire(t, a, 1)
			if err := a.Release(t.Context()); err != nil {
				t.Fatal(err)
			}
			acquire(t, b, 2)
			got, err := b.Holder(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got.Holder != beta || !got.HeldAt(clk.Now()) {
				t.Fatalf("after the handover Holder = %+v, want %s holding it", got, beta)
			}
		}},
		{"release by a stale holder is lost and leaves the new holder's lease", func(t *testing.T, a, b *Lease) {
			acquire(t, a, 1)
			clk.Advance(lease + time.Millisecond)
			acquire(t, b, 2)
			leaseError(t, a.Release(t.Context()), state.ErrLost)
			got, err := b.Holder(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !got.HeldAt(clk.Now()) || got.Holder != beta {
				t.Fatalf("Holder = %+v, want %s still holding it", got, beta)
			}
		}},
		{"a write before any acquisition is fenced", func(t *testing.T, a, _ *Lease) {
			leaseError(t, a.Store(t.Context()).Save(sample(1)), state.ErrFenced)
		}},
		{"nothing saved loads as nil", func(t *testing.T, a, _ *Lease) {
			acquire(t, a, 1)
			got, err := a.Store(t.Context()).Load()
			if err != nil || got != nil {
				t.Fatalf("Load = %v, %v; want nil, nil", got, err)
			}
		}},
		{"a snapshot round-trips as through the file backend", func(t *testing.T, a, _ *Lease) {
			acquire(t, a, 1)
			s := sample(50)
			if err := a.Store(t.Context()).Save(s); err != nil {
				t.Fatal(err)
			}
			got, err := a.Store(t.Context()).Load()
			if err != nil {
				t.Fatal(err)
			}
			if want := fileRoundTrip(t, s); !reflect.DeepEqual(got, want) {
				t.Fatalf("Load after Save:\n got %+v\nwant %+v", got, want)
			}
			if ci := got.Instances[0].ConnectInfo; ci.Key != nil || ci.Password != "" {
				t.Fatal("credentials were stored")
			}
		}},
		{"an oversized snapshot is refused and the stored one stays", func(t *testing.T, a, _ *Lease) {
			acquire(t, a, 1)
			small := sample(2)
			if err := a.Store(t.Context()).Save(small); err != nil {
				t.Fatal(err)
			}
			big := sample(1)
			big.Instances[0].Data["noise"] = make([]byte, MaxStateBytes)
			_, _ = rand.Read(big.Instances[0].Data["noise"])
			err := a.Store(t.Context()).Save(big)
			if err == nil || !strings.Contains(err.Error(), "do not fit a DynamoDB item") || !strings.Contains(err.Error(), `backend = "file"`) {
				t.Fatalf("Save of an oversized snapshot: %v, want a refusal naming the item limit and the file backend", err)
			}
			t.Logf("refusal: %v", err)
			got, err := a.Store(t.Context()).Load()
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Instances) != len(small.Instances) {
				t.Fatalf("after the refused write the table holds %d instances, want %d", len(got.Instances), len(small.Instances))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := state.Key(state.Runner{URL: "https://gitlab.example.com", Name: tc.name})
			tc.run(t, tbl.Lease(key, alpha, lease), tbl.Lease(key, beta, lease))
		})
	}
}

// TestAcquireRace races managers for an expired lease: exactly one may win. moto needs its requests
// serialized for that (motoTable).
func TestAcquireRace(t *testing.T) {
	tbl, clk := motoTable(t, true)
	const managers = 8
	key := state.Key(state.Runner{ID: 7, URL: "https://gitlab.example.com"})
	acquire(t, tbl.Lease(key, alpha, lease), 1)
	clk.Advance(lease + time.Millisecond)

	var wg sync.WaitGroup
	errs := make([]error, managers)
	tokens := make([]state.Token, managers)
	for i := range managers {
		wg.Go(func() {
			me := state.Holder{SystemID: fmt.Sprintf("s_%012d", i), Host: "standby", PID: i}
			tokens[i], errs[i] = tbl.Lease(key, me, lease).Acquire(t.Context())
		})
	}
	wg.Wait()
	var winners []int
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, i)
		case !errors.Is(err, state.ErrHeld):
			t.Errorf("manager %d: %v, want a win or ErrHeld", i, err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d managers won the lease (%v), want exactly one", len(winners), winners)
	}
	if tok := tokens[winners[0]]; tok != 2 {
		t.Fatalf("winner's token = %d, want 2", tok)
	}
}

// TestRenewThatDoesNotGetThrough: a renewal that fails for want of a connection is retried while the
// lease lasts, and lost once the holder's clock is past its expiry.
func TestRenewThatDoesNotGetThrough(t *testing.T) {
	isolateAWS(t)
	clk := clock.NewFake(time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC))
	// Port 1 on loopback refuses connections.
	tbl, err := New(t.Context(), Config{Table: testTable, Region: "us-east-1", Endpoint: "http://127.0.0.1:1", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	l := tbl.Lease("runner-1", alpha, lease)
	l.token, l.expires = 1, clk.Now().Add(lease)

	err = l.Renew(t.Context())
	if err == nil || errors.Is(err, state.ErrLost) {
		t.Fatalf("Renew without a connection while the lease lasts: %v, want an error that is not ErrLost", err)
	}
	clk.Advance(lease)
	le := leaseError(t, l.Renew(t.Context()), state.ErrLost)
	if le.Cause == nil {
		t.Fatal("the lost renewal does not say why")
	}
}

func TestNewWithoutRegion(t *testing.T) {
	isolateAWS(t)
	_, err := New(t.Context(), Config{Table: testTable})
	if err == nil || !strings.Contains(err.Error(), "dynamodb_region") {
		t.Fatalf("New without a region: %v, want an error naming dynamodb_region", err)
	}
}

func TestDecodeTenureRefusesForeignItems(t *testing.T) {
	good := map[string]types.AttributeValue{
		attrSystemID: str(alpha.SystemID), attrHost: str(alpha.Host), attrPID: num(101), attrToken: num(3),
		attrAcquired: num(1), attrRenewed: num(2), attrExpires: num(3),
	}
	if got, err := decodeTenure(good); err != nil || got.Holder != alpha || got.Token != 3 || got.Expires.UnixMilli() != 3 {
		t.Fatalf("decodeTenure = %+v, %v", got, err)
	}
	for name, change := range map[string]func(map[string]types.AttributeValue){
		"missing token":     func(m map[string]types.AttributeValue) { delete(m, attrToken) },
		"host as a number":  func(m map[string]types.AttributeValue) { m[attrHost] = num(1) },
		"expires not whole": func(m map[string]types.AttributeValue) { m[attrExpires] = &types.AttributeValueMemberN{Value: "1.5"} },
	} {
		item := map[string]types.AttributeValue{}
		for k, v := range good {
			item[k] = v
		}
		change(item)
		if _, err := decodeTenure(item); err == nil || !strings.Contains(err.Error(), "by hand") {
			t.Errorf("%s: decodeTenure error %v, want one saying the item is not fleetrunner's", name, err)
		}
	}
}

// FuzzDecodeState: whatever the state attribute holds, decoding returns a snapshot or an error, and a
// snapshot it returns encodes and decodes to itself.
func FuzzDecodeState(f *testing.F) {
	enc, err := encodeState(sample(2))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc)
	f.Add(enc[:len(enc)/2])
	f.Add([]byte("{}"))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		snap, err := decodeState(b)
		if err != nil {
			return
		}
		again, err := encodeState(snap)
		if err != nil {
			return // too big for an item once re-encoded (indentation)
		}
		back, err := decodeState(again)
		if err != nil {
			t.Fatalf("re-encoded snapshot does not decode: %v", err)
		}
		if back.Version != state.Version || len(back.Instances) != len(snap.Instances) || len(back.Jobs) != len(snap.Jobs) {
			t.Fatalf("re-encoded snapshot changed: %d instances, %d jobs; was %d, %d", len(back.Instances), len(back.Jobs), len(snap.Instances), len(snap.Jobs))
		}
	})
}
