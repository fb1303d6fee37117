package fleeting_test

import (
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
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
		if got := fleeting.Canonical(tt.in); got != tt.want {
			t.Errorf("Canonical(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

type fakeGroup struct {
	fleeting.InstanceGroup
	Name string `json:"name"`
}

func TestRegistryNew(t *testing.T) {
	r := fleeting.Registry{"fake": func() fleeting.InstanceGroup { return &fakeGroup{} }, "other": func() fleeting.InstanceGroup { return &fakeGroup{} }}
	if _, name, err := r.New("registry.example.com/fleeting/plugins/fake:1.2"); err != nil || name != "fake" {
		t.Fatalf("New(OCI reference) = %q, %v; want fake", name, err)
	}
	for plugin, want := range map[string]string{"": "no autoscaler plugin", "nimbus": `"nimbus"`} {
		if _, _, err := r.New(plugin); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "fake, other") {
			t.Errorf("New(%q) = %v, want an error containing %q and the available plugins", plugin, err, want)
		}
	}
}
