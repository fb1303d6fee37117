package builtin_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/builtin"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/static"
)

func TestNew(t *testing.T) {
	tests := []struct {
		plugin   string
		wantName string
		wantType any
		wantErr  string
	}{
		{"local", "local", &local.InstanceGroup{}, ""},
		{"fleeting-plugin-static:latest", "static", &static.InstanceGroup{}, ""},
		{"registry.example.com/fleeting/plugins/local:2.0", "local", &local.InstanceGroup{}, ""},
		{"hetzner", "hetzner", nil, "available: aws, local, static"},
		{"", "", nil, "no autoscaler plugin"},
	}
	for _, tt := range tests {
		t.Run(tt.plugin, func(t *testing.T) {
			g, name, err := builtin.Plugins().New(tt.plugin)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New(%q) error = %v, want one containing %q", tt.plugin, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "local") {
					t.Errorf("error %q does not list the built-in plugins", err)
				}
				return
			}
			if err != nil || name != tt.wantName {
				t.Fatalf("New(%q) = %q, %v; want %q", tt.plugin, name, err, tt.wantName)
			}
			if gotT, wantT := fmt.Sprintf("%T", g), fmt.Sprintf("%T", tt.wantType); gotT != wantT {
				t.Errorf("New(%q) made %s, want %s", tt.plugin, gotT, wantT)
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	g := &local.InstanceGroup{}
	err := fleeting.Configure(g, []byte(`{"name":"demo","max_size":3,"boot_delay":"2s","base_address":"127.0.20.1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if g.Name != "demo" || g.MaxSize != 3 || g.BootDelay == nil || time.Duration(*g.BootDelay) != 2*time.Second || g.BaseAddress != "127.0.20.1" {
		t.Errorf("Configure decoded %+v", g)
	}
	tests := []struct {
		name, json, want string
	}{
		{"unknown key", `{"name":"x","max_sise":3}`, `unknown key "max_sise"`},
		{"wrong type", `{"max_size":"three"}`, `key "max_size"`},
		{"bad duration", `{"boot_delay":"soon"}`, "duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fleeting.Configure(&local.InstanceGroup{}, []byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%s) = %v, want an error containing %q", tt.json, err, tt.want)
			}
		})
	}
	if err := fleeting.Configure(&static.InstanceGroup{}, nil); err != nil {
		t.Errorf("Configure(empty) = %v", err)
	}
}
