package manager

import (
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

// The rotation tests run against a real simulator; short back-offs keep their retries quick.
func init() {
	rotationRetryMin = 20 * time.Millisecond
	rotationRetryMax = 200 * time.Millisecond
}

func TestRotationDue(t *testing.T) {
	at := func(h int) time.Time { return time.Date(2025, 3, 1, h, 0, 0, 0, time.UTC) }
	tests := []struct {
		name      string
		creds     config.RunnerCredentials
		firstSeen time.Time
		want      time.Time
		ok        bool
	}{
		{name: "never expires", creds: config.RunnerCredentials{TokenObtainedAt: at(0)}},
		{name: "three quarters of the lifetime", creds: config.RunnerCredentials{TokenObtainedAt: at(0), TokenExpiresAt: at(8)}, want: at(6), ok: true},
		{name: "no obtained time: counted from first sight", creds: config.RunnerCredentials{TokenExpiresAt: at(8)}, firstSeen: at(4), want: at(7), ok: true},
		{name: "already expired: due in the past", creds: config.RunnerCredentials{TokenObtainedAt: at(10), TokenExpiresAt: at(2)}, want: at(4), ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := rotationDue(tt.creds, tt.firstSeen)
			if !got.Equal(tt.want) || ok != tt.ok {
				t.Fatalf("rotationDue = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	now := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		failures int
		expires  time.Time
		lo, hi   time.Duration
	}{
		{name: "first retry", failures: 1, lo: rotationRetryMin / 2, hi: rotationRetryMin},
		{name: "doubles", failures: 3, lo: 2 * rotationRetryMin, hi: 4 * rotationRetryMin},
		{name: "capped", failures: 100, lo: rotationRetryMax / 2, hi: rotationRetryMax},
		{name: "near expiry: a quarter of what is left", failures: 100, expires: now.Add(4 * rotationRetryMin), lo: rotationRetryMin / 2, hi: rotationRetryMin},
		{name: "expired: the minimum", failures: 100, expires: now.Add(-time.Hour), lo: rotationRetryMin / 2, hi: rotationRetryMin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 {
				if d := retryDelay(tt.failures, tt.expires, now); d < tt.lo || d > tt.hi {
					t.Fatalf("retryDelay = %v; want within [%v, %v]", d, tt.lo, tt.hi)
				}
			}
		})
	}
}
