package config

import (
	"bytes"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestRolloutMaxDraining: rollout_max_draining as written in config.toml, what it allows for fleets of
// a few sizes, and what it refuses; a saved config writes it back as it was written.
func TestRolloutMaxDraining(t *testing.T) {
	tests := []struct {
		name    string
		value   string // the TOML value; empty leaves the key out
		want    Pace
		allowed map[int]int // instances → how many may drain at once
		wantErr string
	}{
		{name: "default", want: DefaultRolloutMaxDraining, allowed: map[int]int{0: 0, 1: 1, 5: 1, 6: 2, 50: 10}},
		{name: "count", value: "3", want: PaceCount(3), allowed: map[int]int{0: 3, 1: 3, 50: 3}},
		{name: "count as a string", value: `"2"`, want: PaceCount(2), allowed: map[int]int{10: 2}},
		{name: "percentage", value: `"25%"`, want: PacePercent(25), allowed: map[int]int{1: 1, 4: 1, 5: 2, 8: 2}},
		{name: "off", value: "0", want: PaceCount(0), allowed: map[int]int{10: 0}},
		{name: "off as a percentage", value: `"0%"`, want: PacePercent(0), allowed: map[int]int{10: 0}},
		{name: "negative", value: "-1", wantErr: "rollout_max_draining"},
		{name: "over 100%", value: `"150%"`, wantErr: "at most 100%"},
		{name: "not a number", value: `"half"`, wantErr: `invalid pace "half"`},
		{name: "a float", value: "0.5", wantErr: "want a number of instances"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := "[[runners]]\n  name = \"r\"\n  url = \"https://gitlab.example.com\"\n  token = \"glrt-x\"\n  executor = \"docker-autoscaler\"\n  [runners.docker]\n    image = \"alpine\"\n  [runners.autoscaler]\n    plugin = \"aws\"\n"
			if tt.value != "" {
				text += "    rollout_max_draining = " + tt.value + "\n"
			}
			cfg, _, err := Parse([]byte(text))
			if err == nil {
				err = cfg.Validate()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := cfg.Runners[0].Autoscaler
			got := a.GetRolloutMaxDraining()
			if got != tt.want {
				t.Errorf("GetRolloutMaxDraining = %v, want %v", got, tt.want)
			}
			for n, want := range tt.allowed {
				if got := got.Of(n); got != want {
					t.Errorf("%v of %d instances = %d, want %d", tt.want, n, got, want)
				}
			}
			if tt.value == "" {
				return
			}
			var buf bytes.Buffer
			if err := toml.NewEncoder(&buf).Encode(a); err != nil {
				t.Fatal(err)
			}
			written, _ := tt.want.MarshalTOML()
			if !strings.Contains(buf.String(), "rollout_max_draining = "+string(written)+"\n") {
				t.Errorf("saved as:\n%s\nwant rollout_max_draining = %s", buf.String(), written)
			}
		})
	}
}
