package config

import (
	"strings"
	"testing"
	"time"
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

func TestForecastGetters(t *testing.T) {
	tests := []struct {
		name         string
		a            AutoscalerConfig
		wantEnabled  bool
		wantHistory  time.Duration
		wantQuantile float64
		wantLead     time.Duration
	}{
		{name: "no table", a: AutoscalerConfig{}, wantHistory: DefaultForecastHistory, wantQuantile: DefaultForecastQuantile},
		{name: "enabled, defaults", a: AutoscalerConfig{Forecast: &AutoscalerForecastConfig{Enabled: true}},
			wantEnabled: true, wantHistory: 14 * 24 * time.Hour, wantQuantile: 0.9},
		{name: "set", a: AutoscalerConfig{Forecast: &AutoscalerForecastConfig{Enabled: true, History: 48 * time.Hour, Quantile: 0.5, Lead: time.Minute}},
			wantEnabled: true, wantHistory: 48 * time.Hour, wantQuantile: 0.5, wantLead: time.Minute},
		{name: "table without enabled", a: AutoscalerConfig{Forecast: &AutoscalerForecastConfig{Quantile: 0.5}},
			wantHistory: DefaultForecastHistory, wantQuantile: 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.a.Forecast
			if e, h, q, l := tt.a.ForecastEnabled(), f.GetHistory(), f.GetQuantile(), f.GetLead(); e != tt.wantEnabled || h != tt.wantHistory || q != tt.wantQuantile || l != tt.wantLead {
				t.Fatalf("enabled, history, quantile, lead = %v, %s, %v, %s; want %v, %s, %v, %s", e, h, q, l, tt.wantEnabled, tt.wantHistory, tt.wantQuantile, tt.wantLead)
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
