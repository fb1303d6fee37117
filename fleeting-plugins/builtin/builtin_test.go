package builtin_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/builtin"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/static"
)

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"aws", "aws"},
		{"fleeting-plugin-aws", "aws"},
		{"aws:latest", "aws"},
		{"aws:1.0.0", "aws"},
		{"registry.gitlab.com/gitlab-org/fleeting/plugins/aws:1.0.0", "aws"},
		{"registry.gitlab.com/gitlab-org/fleeting/plugins/aws@sha256:0123abcd", "aws"},
		{"gitlab-org/fleeting/plugins/aws", "aws"},
		{"localhost:5000/plugins/aws:1", "aws"},
		{"  AWS  ", "aws"},
		{"local", "local"},
		{"fleeting-plugin-static", "static"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := builtin.Canonical(tt.in); got != tt.want {
			t.Errorf("Canonical(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

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
			g, name, err := builtin.New(tt.plugin)
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
	err := builtin.Configure(g, []byte(`{"name":"demo","max_size":3,"boot_delay":"2s","base_address":"127.0.20.1"}`))
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
			err := builtin.Configure(&local.InstanceGroup{}, []byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%s) = %v, want an error containing %q", tt.json, err, tt.want)
			}
		})
	}
	if err := builtin.Configure(&static.InstanceGroup{}, nil); err != nil {
		t.Errorf("Configure(empty) = %v", err)
	}
}

// TestRegistry: the registry cmd hands the docker-autoscaler executor makes and configures the same
// plugins as the package's functions.
func TestRegistry(t *testing.T) {
	var r builtin.Registry
	g, name, err := r.New("fleeting-plugin-local")
	if err != nil || name != "local" {
		t.Fatalf("Registry.New = %q, %v; want local", name, err)
	}
	if err := r.Configure(g, []byte(`{"boot_delai":"1s"}`)); err == nil || !strings.Contains(err.Error(), "boot_delai") {
		t.Errorf("Registry.Configure with an unknown key = %v, want it named", err)
	}
}
