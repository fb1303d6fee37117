// Package dynamostate keeps a runner's taskscaler state in a DynamoDB table shared by the managers of a
// high-availability pair, together with the lease that says which of them manages the runner.
//
// Each runner has one item, keyed by state.Key: the lease (holder, fencing token, acquired, renewed and
// expires times) and the snapshot (JSON, gzip-compressed). Every write is a conditional UpdateItem: an
// acquisition succeeds only on a lease that is free, expired or already this holder's, and increments
// the token; a renewal, a release and a state write succeed only while the item still names this holder
// and this holder's token, so a manager that lost the lease (paused, cut off) cannot overwrite the state
// of the one that took over.
//
// Clocks: expires is written from the holder's clock, and another manager takes the lease over only once
// its own clock is past it. A standby whose clock runs ahead by s takes over s early, while the holder may
// still scale for up to s (its writes are fenced off from then on, its scaling is not); one behind by s
// takes over s late. Keep the managers' clocks synchronised (NTP) to well under the lease duration.
package dynamostate

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
)

// KeyAttribute is the table's partition key, a string: the runner's state.Key.
// deploy/aws/fleetrunner-state-table.yaml creates the table and docs/ha.md describes the item.
const KeyAttribute = "key"

// IAMActions are the DynamoDB actions this package calls; the kit's policy grants these and no more.
var IAMActions = []string{"dynamodb:GetItem", "dynamodb:UpdateItem"}

// The item's other attributes.
const (
	attrHolder   = "holder"
	attrSystemID = "system_id"
	attrHost     = "host"
	attrPID      = "pid"
	attrToken    = "token"
	attrAcquired = "acquired"
	attrRenewed  = "renewed"
	attrExpires  = "expires"
	attrState    = "state"
	attrSaved    = "saved"
)

// names are the expression attribute names: key, token and state are among DynamoDB's reserved words,
// so every expression names attributes through #placeholders.
func names(attrs ...string) map[string]string {
	m := make(map[string]string, len(attrs))
	for _, a := range attrs {
		m["#"+a] = a
	}
	return m
}

// MaxStateBytes is the most a compressed snapshot may take: DynamoDB's item limit is 400 KB, attribute
// names included, and the key and the lease's attributes take well under the 2 KB left for them.
const MaxStateBytes = 400*1024 - 2*1024

// maxDecodedState bounds what a stored snapshot may expand to when it is read: far above any real one
// (a few MB for thousands of instances), it keeps a corrupt item from exhausting memory.
const maxDecodedState = 256 << 20

// Config names the table.
type Config struct {
	Table string
	// Region overrides the default chain's region (AWS_REGION, the shared config).
	Region string
	// Endpoint overrides DynamoDB's endpoint (DynamoDB Local, moto).
	Endpoint string
	// Now is the clock leases are timed by; nil is the wall clock.
	Now func() time.Time
}

// Table is a connection to the state table.
type Table struct {
	name   string
	client *dynamodb.Client
	now    func() time.Time
}

// New builds the DynamoDB client from the SDK's default chain (environment, shared files, instance
// profile) with cfg's overrides; it makes no call.
func New(ctx context.Context, cfg Config) (*Table, error) {
	opts := []func(*config.LoadOptions) error{
		// Adaptive mode slows down on throttling, which a table shared by many runners may see.
		config.WithRetryer(func() aws.Retryer { return retry.NewAdaptiveMode() }),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("state table %s: load the AWS configuration (credentials from the environment, shared files or the instance profile): %w", cfg.Table, err)
	}
	if awsCfg.Region == "" {
		return nil, fmt.Errorf("state table %s: no AWS region: set state_storage dynamodb_region or AWS_REGION", cfg.Table)
	}
	client := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Table{name: cfg.Table, client: client, now: now}, nil
}

// Lease is one runner's lease, as held by one manager.
type Lease struct {
	table    *Table
	key      string
	me       state.Holder
	duration time.Duration

	mu sync.Mutex
	// token is the one the last acquisition returned, 0 before it.
	token state.Token
	// expires is what the last acquisition or renewal wrote.
	expires time.Time
}

var _ state.Lease = (*Lease)(nil)

// Lease returns the lease on the item key (state.Key of the runner) for the holder me. duration is how
// long an acquisition or renewal holds it; every call is also bounded by it, since a write that takes
// longer would land after the lease it relies on has expired.
func (t *Table) Lease(key string, me state.Holder, duration time.Duration) *Lease {
	return &Lease{table: t, key: key, me: me, duration: duration}
}

// Acquire implements state.Lease.
func (l *Lease) Acquire(ctx context.Context) (state.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, l.duration)
	defer cancel()
	now := l.table.now()
	expires := now.Add(l.duration)
	out, err := l.table.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(l.table.name),
		Key:       l.itemKey(),
		UpdateExpression: aws.String("SET #holder = :me, #system_id = :system_id, #host = :host, #pid = :pid, " +
			"#acquired = :now, #renewed = :now, #expires = :expires ADD #token :one"),
		ConditionExpression:      aws.String("attribute_not_exists(#key) OR #expires < :now OR #holder = :me"),
		ExpressionAttributeNames: names(KeyAttribute, attrHolder, attrSystemID, attrHost, attrPID, attrAcquired, attrRenewed, attrExpires, attrToken),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":me":        str(l.me.String()),
			":system_id": str(l.me.SystemID),
			":host":      str(l.me.Host),
			":pid":       num(int64(l.me.PID)),
			":now":       millis(now),
			":expires":   millis(expires),
			":one":       num(1),
		},
		ReturnValues: types.ReturnValueUpdatedNew,
	})
	if err != nil {
		return 0, l.refusal(ctx, "acquire", state.ErrHeld, err)
	}
	token, err := int64Attr(out.Attributes, attrToken)
	if err != nil {
		return 0, fmt.Errorf("state table %s: acquire lease %s: %w", l.table.name, l.key, err)
	}
	l.mu.Lock()
	l.token, l.expires = state.Token(token), expires
	l.mu.Unlock()
	return state.Token(token), nil
}

// Renew implements state.Lease. A renewal that fails for another reason than a lost condition (the
// network) is an error to retry at the next interval, until the lease has expired by this holder's
// clock: from then on it is lost.
func (l *Lease) Renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.duration)
	defer cancel()
	_, expiresBefore := l.held()
	now := l.table.now()
	expires := now.Add(l.duration)
	err := l.updateAsHolder(ctx, "SET #renewed = :now, #expires = :expires", []string{attrRenewed, attrExpires},
		map[string]types.AttributeValue{":now": millis(now), ":expires": millis(expires)})
	var failed *types.ConditionalCheckFailedException
	switch {
	case errors.As(err, &failed):
		return l.refusal(ctx, "renew", state.ErrLost, err)
	case err != nil && !l.table.now().Before(expiresBefore):
		return &state.LeaseError{Key: l.key, Err: state.ErrLost, Cause: fmt.Errorf("no renewal got through before the lease expired at %s: %w", expiresBefore.UTC().Format(time.RFC3339Nano), err)}
	case err != nil:
		return fmt.Errorf("state table %s: renew lease %s (retried at the next renewal; the lease expires at %s): %w", l.table.name, l.key, expiresBefore.UTC().Format(time.RFC3339Nano), err)
	}
	l.mu.Lock()
	l.expires = expires
	l.mu.Unlock()
	return nil
}

// Release implements state.Lease: it keeps the holder's name for the status and sets expires to the
// epoch, so a standby's next acquisition succeeds. Save the last snapshot before.
func (l *Lease) Release(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.duration)
	defer cancel()
	err := l.updateAsHolder(ctx, "SET #expires = :zero", []string{attrExpires}, map[string]types.AttributeValue{":zero": num(0)})
	if err != nil {
		return l.refusal(ctx, "release", state.ErrLost, err)
	}
	l.mu.Lock()
	l.expires = time.UnixMilli(0)
	l.mu.Unlock()
	return nil
}

// Holder implements state.Lease with a strongly consistent read.
func (l *Lease) Holder(ctx context.Context) (state.Tenure, error) {
	ctx, cancel := context.WithTimeout(ctx, l.duration)
	defer cancel()
	out, err := l.table.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:                aws.String(l.table.name),
		Key:                      l.itemKey(),
		ConsistentRead:           aws.Bool(true),
		ProjectionExpression:     aws.String("#holder, #system_id, #host, #pid, #token, #acquired, #renewed, #expires"),
		ExpressionAttributeNames: names(attrHolder, attrSystemID, attrHost, attrPID, attrToken, attrAcquired, attrRenewed, attrExpires),
	})
	if err != nil {
		return state.Tenure{}, fmt.Errorf("state table %s: read lease %s: %w", l.table.name, l.key, err)
	}
	tenure, err := decodeTenure(out.Item)
	if err != nil {
		return state.Tenure{}, fmt.Errorf("state table %s: lease %s: %w", l.table.name, l.key, err)
	}
	return tenure, nil
}

// Store returns the runner's state store bound to this lease: Save writes only while the lease is still
// this holder's. ctx bounds every Load and Save, since state.Store's methods take none.
func (l *Lease) Store(ctx context.Context) *Store { return &Store{ctx: ctx, lease: l} }

// held is the token and expiry of the last acquisition or renewal.
func (l *Lease) held() (state.Token, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.token, l.expires
}

// updateAsHolder runs the update set on the lease's item, fenced: only while this holder, with the
// token it acquired, still holds the lease. attrs are the attributes set names, values its values.
func (l *Lease) updateAsHolder(ctx context.Context, set string, attrs []string, values map[string]types.AttributeValue) error {
	token, _ := l.held()
	values[":me"], values[":token"] = str(l.me.String()), num(int64(token))
	_, err := l.table.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(l.table.name),
		Key:                       l.itemKey(),
		UpdateExpression:          aws.String(set),
		ConditionExpression:       aws.String("#holder = :me AND #token = :token"),
		ExpressionAttributeNames:  names(append([]string{attrHolder, attrToken}, attrs...)...),
		ExpressionAttributeValues: values,
	})
	return err
}

func (l *Lease) itemKey() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{KeyAttribute: str(l.key)}
}

// refusal turns a failed conditional write into a *state.LeaseError naming the current holder, and
// wraps any other error.
func (l *Lease) refusal(ctx context.Context, op string, sentinel error, err error) error {
	var failed *types.ConditionalCheckFailedException
	if !errors.As(err, &failed) {
		return fmt.Errorf("state table %s: %s lease %s: %w", l.table.name, op, l.key, err)
	}
	current, readErr := l.Holder(context.WithoutCancel(ctx))
	if readErr != nil {
		return &state.LeaseError{Key: l.key, Err: sentinel, Cause: readErr}
	}
	return &state.LeaseError{Key: l.key, Err: sentinel, Current: current}
}

// Store is a state.Store on the table, fenced by a lease.
type Store struct {
	// ctx is Lease.Store's: state.Store's methods take no context.
	ctx   context.Context
	lease *Lease
}

var _ state.Store = (*Store)(nil)

// Load implements state.Store with a strongly consistent read: a manager that just took the lease over
// sees the last snapshot its predecessor wrote.
func (s *Store) Load() (*state.Snapshot, error) {
	l := s.lease
	ctx, cancel := context.WithTimeout(s.ctx, l.duration)
	defer cancel()
	out, err := l.table.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:                aws.String(l.table.name),
		Key:                      l.itemKey(),
		ConsistentRead:           aws.Bool(true),
		ProjectionExpression:     aws.String("#state"),
		ExpressionAttributeNames: names(attrState),
	})
	if err != nil {
		return nil, fmt.Errorf("state table %s: read taskscaler state %s: %w", l.table.name, l.key, err)
	}
	v, ok := out.Item[attrState]
	if !ok {
		return nil, nil
	}
	b, ok := v.(*types.AttributeValueMemberB)
	if !ok {
		return nil, fmt.Errorf("state table %s: taskscaler state %s: attribute %s is %T, not binary (was the item written by hand?)", l.table.name, l.key, attrState, v)
	}
	snap, err := decodeState(b.Value)
	if err != nil {
		return nil, fmt.Errorf("state table %s: taskscaler state %s: %w", l.table.name, l.key, err)
	}
	return snap, nil
}

// Save implements state.Store: a write fenced by the lease's token. When another manager took the lease
// over, the error wraps state.ErrFenced and names it, and the table keeps that manager's state.
func (s *Store) Save(snap *state.Snapshot) error {
	l := s.lease
	b, err := encodeState(snap)
	if err != nil {
		return fmt.Errorf("state table %s: taskscaler state %s: %w", l.table.name, l.key, err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, l.duration)
	defer cancel()
	err = l.updateAsHolder(ctx, "SET #state = :state, #saved = :now", []string{attrState, attrSaved},
		map[string]types.AttributeValue{":state": &types.AttributeValueMemberB{Value: b}, ":now": millis(l.table.now())})
	if err != nil {
		return l.refusal(ctx, "write state under", state.ErrFenced, err)
	}
	return nil
}

// encodeState is state.Marshal, gzip-compressed, refused when it would not fit an item.
func encodeState(snap *state.Snapshot) ([]byte, error) {
	b, err := state.Marshal(snap)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	if buf.Len() > MaxStateBytes {
		return nil, fmt.Errorf("%d bytes gzip-compressed (%d instances, %d jobs in flight) do not fit a DynamoDB item, which holds at most %d: lower max_instances or forecast.history, or use state_storage backend = \"file\"",
			buf.Len(), len(snap.Instances), len(snap.Jobs), MaxStateBytes)
	}
	return buf.Bytes(), nil
}

// decodeState reads what encodeState wrote.
func decodeState(b []byte) (*state.Snapshot, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("corrupt (not gzip; delete the item's state attribute to start without it): %w", err)
	}
	defer zr.Close()
	raw, err := io.ReadAll(io.LimitReader(zr, maxDecodedState+1))
	if err != nil {
		return nil, fmt.Errorf("corrupt (delete the item's state attribute to start without it): %w", err)
	}
	if len(raw) > maxDecodedState {
		return nil, fmt.Errorf("corrupt: expands to more than %d bytes (delete the item's state attribute to start without it)", maxDecodedState)
	}
	return state.Unmarshal(raw)
}

// decodeTenure reads the lease's attributes of an item; an empty item is the zero Tenure.
func decodeTenure(item map[string]types.AttributeValue) (state.Tenure, error) {
	if len(item) == 0 {
		return state.Tenure{}, nil
	}
	var t state.Tenure
	var err error
	if t.Holder.SystemID, err = stringAttr(item, attrSystemID); err != nil {
		return state.Tenure{}, err
	}
	if t.Holder.Host, err = stringAttr(item, attrHost); err != nil {
		return state.Tenure{}, err
	}
	pid, err := int64Attr(item, attrPID)
	if err != nil {
		return state.Tenure{}, err
	}
	t.Holder.PID = int(pid)
	token, err := int64Attr(item, attrToken)
	if err != nil {
		return state.Tenure{}, err
	}
	t.Token = state.Token(token)
	for _, f := range []struct {
		attr string
		into *time.Time
	}{{attrAcquired, &t.Acquired}, {attrRenewed, &t.Renewed}, {attrExpires, &t.Expires}} {
		ms, err := int64Attr(item, f.attr)
		if err != nil {
			return state.Tenure{}, err
		}
		*f.into = time.UnixMilli(ms)
	}
	return t, nil
}

func stringAttr(item map[string]types.AttributeValue, name string) (string, error) {
	switch v := item[name].(type) {
	case *types.AttributeValueMemberS:
		return v.Value, nil
	case nil:
		return "", fmt.Errorf("attribute %s is missing (was the item written by hand?)", name)
	default:
		return "", fmt.Errorf("attribute %s is %T, not a string (was the item written by hand?)", name, v)
	}
}

func int64Attr(item map[string]types.AttributeValue, name string) (int64, error) {
	switch v := item[name].(type) {
	case *types.AttributeValueMemberN:
		n, err := strconv.ParseInt(v.Value, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("attribute %s is %q, not an integer (was the item written by hand?)", name, v.Value)
		}
		return n, nil
	case nil:
		return 0, fmt.Errorf("attribute %s is missing (was the item written by hand?)", name)
	default:
		return 0, fmt.Errorf("attribute %s is %T, not a number (was the item written by hand?)", name, v)
	}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func millis(t time.Time) types.AttributeValue { return num(t.UnixMilli()) }
