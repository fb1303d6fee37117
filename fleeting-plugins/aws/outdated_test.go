package aws

import (
	"slices"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/awssim"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// TestOutdated: a group of three instances on launch template version 1 gets version 2, named the ways
// a group can name it; Outdated then reports exactly the three, and an instance launched afterwards
// (from version 2) is not reported. "$Latest" and "$Default" cost one DescribeLaunchTemplates call per
// listing, a version number none.
func TestOutdated(t *testing.T) {
	tests := []struct {
		name string
		// version is how the group names its template before and after the new version.
		before, after string
		mixed         bool
		makeDefault   bool
		wantCalls     int
	}{
		{name: "version number", before: "1", after: "2"},
		{name: "$Latest", before: "$Latest", after: "$Latest", wantCalls: 1},
		{name: "$Default", before: "$Default", after: "$Default", makeDefault: true, wantCalls: 1},
		{name: "mixed instances policy", before: "$Latest", after: "$Latest", mixed: true, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := awssim.GroupSpec{Name: "roll", MaxSize: 4, ProtectFromScaleIn: true, AZs: []string{"us-east-1a"}, Boot: &local.BootModel{}}
			sim, g, old := runningSimGroup(t, spec, 3)
			slices.Sort(old)
			if err := sim.SetGroupLaunchTemplate(spec.Name, tt.before, tt.mixed); err != nil {
				t.Fatal(err)
			}
			updateOnce(t, g)
			if got, err := g.Outdated(t.Context()); err != nil || len(got) != 0 {
				t.Fatalf("Outdated on version 1 = %+v, %v; want none", got, err)
			}

			v, err := sim.NewLaunchTemplateVersion(spec.Name)
			if err != nil {
				t.Fatal(err)
			}
			if tt.makeDefault {
				if err := sim.SetDefaultLaunchTemplateVersion(spec.Name, v); err != nil {
					t.Fatal(err)
				}
			}
			if err := sim.SetGroupLaunchTemplate(spec.Name, tt.after, tt.mixed); err != nil {
				t.Fatal(err)
			}
			updateOnce(t, g)
			before := sim.Calls()["DescribeLaunchTemplates"]
			for range 2 { // the second answer comes from the same listing, without a call
				if got := outdatedIDs(t, g); !slices.Equal(got, old) {
					t.Fatalf("Outdated after version %d = %v; want the three launched before %v", v, got, old)
				}
			}
			if calls := sim.Calls()["DescribeLaunchTemplates"] - before; calls != tt.wantCalls {
				t.Errorf("%d DescribeLaunchTemplates calls for two checks of one listing, want %d", calls, tt.wantCalls)
			}

			if _, err := g.Increase(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			all := waitRunning(t, g, 4)
			fresh := slices.DeleteFunc(all, func(id string) bool { return slices.Contains(old, id) })
			if len(fresh) != 1 {
				t.Fatalf("new instances %v, want one", fresh)
			}
			if got, _ := sim.LaunchTemplateVersion(fresh[0]); got != v {
				t.Errorf("instance launched after the roll-out began is on version %d, want %d", got, v)
			}
			if got := outdatedIDs(t, g); !slices.Equal(got, old) {
				t.Errorf("Outdated with a new instance = %v; want only the old %v", got, old)
			}
		})
	}
}

func outdatedIDs(t *testing.T, g *InstanceGroup) []string {
	t.Helper()
	got, err := g.Outdated(t.Context())
	if err != nil {
		t.Fatalf("Outdated = %v", err)
	}
	var ids []string
	for _, o := range got {
		if o.Reason == "" {
			t.Errorf("Outdated gave %s no reason", o.Instance)
		}
		ids = append(ids, o.Instance)
	}
	return ids
}

// TestOutdatedReason: what makes a member outdated, by what the group and the member say they launch
// from.
func TestOutdatedReason(t *testing.T) {
	lt := func(id, version string) awsclient.TemplateSpec {
		return awsclient.TemplateSpec{ID: id, Name: "name-" + id, Version: version}
	}
	versions := map[string]awsclient.LaunchTemplate{"lt-a": {ID: "lt-a", Latest: 5, Default: 3}}
	tests := []struct {
		name         string
		member       awsclient.Member
		launchConfig string
		templates    []awsclient.TemplateSpec
		want         string
	}{
		{name: "no launch information", member: awsclient.Member{}, templates: []awsclient.TemplateSpec{lt("lt-a", "2")}},
		{name: "same version number", member: awsclient.Member{Template: lt("lt-a", "2")}, templates: []awsclient.TemplateSpec{lt("lt-a", "2")}},
		{name: "older version number", member: awsclient.Member{Template: lt("lt-a", "1")}, templates: []awsclient.TemplateSpec{lt("lt-a", "2")},
			want: "launch template lt-a version 1, the group launches version 2"},
		{name: "$Latest", member: awsclient.Member{Template: lt("lt-a", "3")}, templates: []awsclient.TemplateSpec{lt("lt-a", "$Latest")},
			want: "launch template lt-a version 3, the group launches version 5"},
		{name: "$Default", member: awsclient.Member{Template: lt("lt-a", "3")}, templates: []awsclient.TemplateSpec{lt("lt-a", "$Default")}},
		{name: "empty version is $Default", member: awsclient.Member{Template: lt("lt-a", "2")}, templates: []awsclient.TemplateSpec{lt("lt-a", "")},
			want: "launch template lt-a version 2, the group launches version 3"},
		{name: "unresolved $Latest", member: awsclient.Member{Template: lt("lt-b", "1")}, templates: []awsclient.TemplateSpec{lt("lt-b", "$Latest")}},
		{name: "override template, current", member: awsclient.Member{Template: lt("lt-b", "7")}, templates: []awsclient.TemplateSpec{lt("lt-a", "$Latest"), lt("lt-b", "7")}},
		{name: "another template", member: awsclient.Member{Template: lt("lt-old", "9")}, templates: []awsclient.TemplateSpec{lt("lt-a", "5")},
			want: "launched from launch template lt-old version 9, the group launches from launch template lt-a"},
		{name: "same launch configuration", member: awsclient.Member{LaunchConfigurationName: "lc-2"}, launchConfig: "lc-2"},
		{name: "older launch configuration", member: awsclient.Member{LaunchConfigurationName: "lc-1"}, launchConfig: "lc-2",
			want: "launched from launch configuration lc-1, the group launches from launch configuration lc-2"},
		{name: "moved to a launch template", member: awsclient.Member{LaunchConfigurationName: "lc-1"}, templates: []awsclient.TemplateSpec{lt("lt-a", "5")},
			want: "launched from launch configuration lc-1, the group launches from launch template lt-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := outdatedReason(tt.member, tt.launchConfig, tt.templates, versions); got != tt.want {
				t.Errorf("outdatedReason = %q, want %q", got, tt.want)
			}
		})
	}
}
