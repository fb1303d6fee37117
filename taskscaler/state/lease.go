package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Lease is the right to manage one runner's instance group: only its holder scales the group, takes
// jobs for the runner and writes its state. A backend shared by several managers (dynamostate) grants it
// to one manager at a time, for a duration the holder keeps renewing; a holder that stops renewing (host
// lost, kill -9, network cut) loses it once the duration has passed, and a standby may take it over.
type Lease interface {
	// Acquire takes the lease when nobody holds it, its holder let it expire, or this holder already
	// holds it. Each acquisition returns a new, higher token. When another holder has it, the error wraps
	// ErrHeld and is a *LeaseError naming that holder.
	Acquire(ctx context.Context) (Token, error)
	// Renew extends the lease this holder acquired. An error wrapping ErrLost means another holder took it
	// over or it expired before a renewal got through: the caller must stop scaling and writing at once.
	Renew(ctx context.Context) error
	// Release hands the lease over: a standby acquires it at once instead of waiting for it to expire.
	Release(ctx context.Context) error
	// Holder reads who holds the lease and since when; the zero Tenure when nobody ever held it.
	Holder(ctx context.Context) (Tenure, error)
}

// RenewInterval is how often a holder renews a lease of the given duration: three times per duration,
// so that two renewals in a row may fail (a slow or lost request) before the lease expires.
func RenewInterval(lease time.Duration) time.Duration { return lease / 3 }

// Token is the fencing token: it grows with every acquisition, and every write of a holder carries its
// own, so a holder that lost the lease without noticing (paused, cut off) cannot overwrite the state of
// the one that took over.
type Token int64

// Holder names a manager process.
type Holder struct {
	// SystemID is the manager's system ID (s_ and 12 hex digits, kept in .runner_system_id).
	SystemID string
	Host     string
	PID      int
}

// String is how a holder is named in messages and compared in conditions.
func (h Holder) String() string {
	return h.SystemID + " on " + h.Host + " (pid " + strconv.Itoa(h.PID) + ")"
}

// Tenure is who holds a lease and since when.
type Tenure struct {
	Holder   Holder
	Token    Token
	Acquired time.Time
	Renewed  time.Time
	// Expires is written by the holder from its own clock; Release sets it to the Unix epoch.
	Expires time.Time
}

// HeldAt reports whether the lease is held at now (a reader's clock).
func (t Tenure) HeldAt(now time.Time) bool {
	return t.Holder != (Holder{}) && now.Before(t.Expires)
}

// Errors of a lease and of the writes bound to it; a *LeaseError wraps one of them.
var (
	// ErrHeld: another holder has the lease.
	ErrHeld = errors.New("lease held by another manager")
	// ErrLost: this holder no longer has the lease.
	ErrLost = errors.New("lease lost")
	// ErrFenced: a write carried a token that is no longer the lease's.
	ErrFenced = errors.New("write fenced off: another manager took the lease over")
)

// LeaseError is a refused lease operation or fenced write, with the tenure found when it was refused.
type LeaseError struct {
	// Key is the runner's state key (Key).
	Key string
	// Err is ErrHeld, ErrLost or ErrFenced.
	Err error
	// Current is the tenure read after the refusal; the zero Tenure when it could not be read.
	Current Tenure
	// Cause is why, when the refusal was not a failed condition (a renewal that did not get through).
	Cause error
}

func (e *LeaseError) Error() string {
	msg := fmt.Sprintf("runner state %s: %v", e.Key, e.Err)
	if e.Current.Holder != (Holder{}) {
		msg += fmt.Sprintf("; held by manager %s, token %d, acquired %s, renewed %s, expires %s",
			e.Current.Holder, e.Current.Token, stamp(e.Current.Acquired), stamp(e.Current.Renewed), stamp(e.Current.Expires))
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

func (e *LeaseError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Err, e.Cause}
	}
	return []error{e.Err}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
