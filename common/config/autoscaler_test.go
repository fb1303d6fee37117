package config

import (
	"strings"
	"testing"
)

func TestPreemptiveMode(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name string
		p    AutoscalerPolicyConfig
		want bool
	}{
		{name: "idle_count 0 → off", p: AutoscalerPolicyConfig{}, want: false},
		{name: "idle_count 2 → on", p: AutoscalerPolicyConfig{IdleCount: 2}, want: true},
		{name: "explicit false with idle_count", p: AutoscalerPolicyConfig{IdleCount: 2, PreemptiveMode: &no}, want: false},
		{name: "explicit true without idle_count", p: AutoscalerPolicyConfig{PreemptiveMode: &yes}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.GetPreemptiveMode(); got != tt.want {
				t.Fatalf("GetPreemptiveMode = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestScaleThrottle(t *testing.T) {
	tests := []struct {
		name                 string
		a                    AutoscalerConfig
		wantLimit, wantBurst int
	}{
		{name: "default limit, burst = max_instances", a: AutoscalerConfig{MaxInstances: 4}, wantLimit: 100, wantBurst: 4},
		{name: "limit 1 burst 3", a: AutoscalerConfig{ScaleThrottle: ScaleThrottle{Limit: 1, Burst: 3}}, wantLimit: 1, wantBurst: 3},
		{name: "no max: burst = limit", a: AutoscalerConfig{ScaleThrottle: ScaleThrottle{Limit: 2}}, wantLimit: 2, wantBurst: 2},
		{name: "unlimited", a: AutoscalerConfig{ScaleThrottle: ScaleThrottle{Limit: -1}}, wantLimit: ScaleThrottleUnlimited, wantBurst: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, b := tt.a.GetScaleThrottleLimit(), tt.a.GetScaleThrottleBurst(); l != tt.wantLimit || b != tt.wantBurst {
				t.Fatalf("limit, burst = %d, %d; want %d, %d", l, b, tt.wantLimit, tt.wantBurst)
			}
		})
	}
}

// TestNegativeCountsPassThrough: a negative count is not replaced by the default, so that the
// taskscaler refuses it as it did before the defaults moved here.
func TestNegativeCountsPassThrough(t *testing.T) {
	a := AutoscalerConfig{CapacityPerInstance: -1, FailureThreshold: -2, ShutdownDeletionRetries: -3}
	if got := []int{a.GetCapacityPerInstance(), a.GetFailureThreshold(), a.GetShutdownDeletionRetries()}; got[0] != -1 || got[1] != -2 || got[2] != -3 {
		t.Fatalf("getters = %v, want the negative values as set", got)
	}
}

func TestPolicyLocationUnknown(t *testing.T) {
	_, err := (&AutoscalerPolicyConfig{Timezone: "Mars/Olympus"}).GetLocation()
	if err == nil || !strings.Contains(err.Error(), "Mars/Olympus") {
		t.Fatalf("GetLocation of an unknown zone = %v, want an error naming it", err)
	}
}
