package aws

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws/internal/awsclient"
)

var _ fleeting.OutdatedReporter = (*InstanceGroup)(nil)

// Outdated reports the group's in-service members launched from something other than what the group
// launches from now: another launch template, another version of it, or another launch configuration.
// A new AMI reaches an Auto Scaling group as a new launch template version, which only new instances
// get; Auto Scaling itself replaces the old ones only in an instance refresh, which terminates them
// whatever runs on them.
//
// It reads the last listing: DescribeAutoScalingGroups reports the group's launch template with a
// version number, "$Latest" or "$Default" (directly or in its MixedInstancesPolicy, whose overrides may
// name templates of their own), and each instance's template with the version number it was launched
// from. "$Latest" and "$Default" are resolved with one DescribeLaunchTemplates call per listing
// (ec2:DescribeLaunchTemplates). A member whose listing names no launch template or configuration is
// never reported: there is nothing to compare.
func (g *InstanceGroup) Outdated(ctx context.Context) ([]fleeting.Outdated, error) {
	g.mu.Lock()
	launchConfig, templates, listedAt := g.launchConfig, slices.Clone(g.templates), g.listedAt
	var members []awsclient.Member
	for _, m := range g.members {
		if m.LifecycleState == "InService" {
			members = append(members, m)
		}
	}
	versions := g.versions
	if !g.versionsFor.Equal(listedAt) {
		versions = nil
	}
	g.mu.Unlock()
	if len(members) == 0 || launchConfig == "" && len(templates) == 0 {
		return nil, nil
	}
	if versions == nil {
		var err error
		if versions, err = g.templateVersions(ctx, templates); err != nil {
			return nil, err
		}
		g.mu.Lock()
		g.versions, g.versionsFor = versions, listedAt
		g.mu.Unlock()
	}
	slices.SortFunc(members, func(a, b awsclient.Member) int { return cmp.Compare(a.ID, b.ID) })
	var out []fleeting.Outdated
	for _, m := range members {
		if reason := outdatedReason(m, launchConfig, templates, versions); reason != "" {
			out = append(out, fleeting.Outdated{Instance: m.ID, Reason: reason})
		}
	}
	return out, nil
}

// templateVersions asks for the version numbers of the templates whose version is "$Latest" or
// "$Default", by template ID; none is asked for when every version is a number.
func (g *InstanceGroup) templateVersions(ctx context.Context, templates []awsclient.TemplateSpec) (map[string]awsclient.LaunchTemplate, error) {
	ids := map[string]bool{}
	for _, t := range templates {
		if _, numbered := versionNumber(t.Version); !numbered && t.ID != "" {
			ids[t.ID] = true
		}
	}
	versions := map[string]awsclient.LaunchTemplate{}
	if len(ids) == 0 {
		return versions, nil
	}
	found, err := g.client.LaunchTemplates(ctx, slices.Sorted(maps.Keys(ids)))
	if err != nil {
		return nil, fmt.Errorf("launch template versions for the roll-out check: %w", g.apiError("DescribeLaunchTemplates", err))
	}
	for _, t := range found {
		versions[t.ID] = t
	}
	return versions, nil
}

// versionNumber parses a launch template version that is a number.
func versionNumber(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// outdatedReason says how member m differs from what the group launches from, or "" when it does not
// (or cannot be told).
func outdatedReason(m awsclient.Member, launchConfig string, templates []awsclient.TemplateSpec, versions map[string]awsclient.LaunchTemplate) string {
	have := m.Template
	switch {
	case have == (awsclient.TemplateSpec{}) && m.LaunchConfigurationName == "":
		return ""
	case launchConfig != "":
		if m.LaunchConfigurationName == launchConfig {
			return ""
		}
		return fmt.Sprintf("launched from %s, the group launches from launch configuration %s", launchedFrom(m), launchConfig)
	}
	i := slices.IndexFunc(templates, func(t awsclient.TemplateSpec) bool { return sameTemplate(t, have) })
	if i < 0 {
		return fmt.Sprintf("launched from %s, the group launches from launch template %s", launchedFrom(m), templateName(templates[0]))
	}
	want := templates[i]
	n, ok := versionNumber(want.Version)
	if !ok {
		lt, known := versions[want.ID]
		if !known {
			return ""
		}
		n = lt.Default
		if want.Version == "$Latest" {
			n = lt.Latest
		}
	}
	if have.Version == strconv.FormatInt(n, 10) {
		return ""
	}
	return fmt.Sprintf("launch template %s version %s, the group launches version %d", templateName(have), have.Version, n)
}

// sameTemplate compares by ID when both have one (a template can be renamed), else by name.
func sameTemplate(a, b awsclient.TemplateSpec) bool {
	if a.ID != "" && b.ID != "" {
		return a.ID == b.ID
	}
	return a.Name != "" && a.Name == b.Name
}

func templateName(t awsclient.TemplateSpec) string {
	if t.ID != "" {
		return t.ID
	}
	return t.Name
}

func launchedFrom(m awsclient.Member) string {
	if m.LaunchConfigurationName != "" {
		return "launch configuration " + m.LaunchConfigurationName
	}
	return fmt.Sprintf("launch template %s version %s", templateName(m.Template), m.Template.Version)
}
