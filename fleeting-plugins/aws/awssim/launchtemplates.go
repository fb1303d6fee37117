package awssim

import (
	"encoding/xml"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

// Each group launches from a launch template of its own, named after the group. It starts at version 1,
// latest and default, named by the group with version "$Default"; tests roll out a new image with
// NewLaunchTemplateVersion and SetGroupLaunchTemplate. Every instance records the version number it
// was launched from and reports it, as Auto Scaling does.
type launchTemplate struct {
	id            string
	latest, deflt int
	// version is the group's LaunchTemplateSpecification version: a number, "$Latest" or "$Default".
	version string
	// mixed names the template in the group's MixedInstancesPolicy instead of its LaunchTemplate.
	mixed bool
}

// templateLocked returns g's launch template, made on first use. Called with s.mu held.
func (s *Server) templateLocked(g *group) *launchTemplate {
	if g.template.id == "" {
		h := fnv.New64a()
		_, _ = h.Write([]byte(g.spec.Name))
		g.template = launchTemplate{id: fmt.Sprintf("lt-0%016x", h.Sum64()), latest: 1, deflt: 1, version: "$Default"}
	}
	return &g.template
}

// launchVersionLocked is the version number a new instance of g launches from: the group's version,
// resolved as Auto Scaling resolves it at launch. Called with s.mu held.
func (s *Server) launchVersionLocked(g *group) int {
	t := s.templateLocked(g)
	switch t.version {
	case "$Latest":
		return t.latest
	case "$Default":
		return t.deflt
	}
	n, _ := strconv.Atoi(t.version) // SetGroupLaunchTemplate let only numbers through
	return n
}

// groupLaunchTemplateLocked fills in how out, g's description, names its launch template. Called with
// s.mu held.
func (s *Server) groupLaunchTemplateLocked(g *group, out *asgGroup) {
	t := s.templateLocked(g)
	spec := asgLaunchTemplate{LaunchTemplateID: t.id, LaunchTemplateName: g.spec.Name, Version: t.version}
	if t.mixed {
		out.MixedInstancesPolicy = &asgMixedPolicy{LaunchTemplate: asgMixedLaunchTemplate{Spec: spec}}
		return
	}
	out.LaunchTemplate = optLaunchTemplate(spec)
}

// optLaunchTemplate is a group's LaunchTemplate element, left out when empty: a group that launches from
// a MixedInstancesPolicy has none.
type optLaunchTemplate asgLaunchTemplate

// MarshalXML implements xml.Marshaler.
func (t optLaunchTemplate) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	if t == (optLaunchTemplate{}) {
		return nil
	}
	return e.EncodeElement(asgLaunchTemplate(t), start)
}

// instanceLaunchTemplate is the launch template inst reports: its group's, at the version it was
// launched from. Called with s.mu held.
func (s *Server) instanceLaunchTemplate(inst *instance) asgLaunchTemplate {
	t := s.templateLocked(s.groups[inst.group])
	return asgLaunchTemplate{LaunchTemplateID: t.id, LaunchTemplateName: inst.group, Version: strconv.Itoa(inst.templateVersion)}
}

type asgMixedPolicy struct {
	LaunchTemplate asgMixedLaunchTemplate `xml:"LaunchTemplate"`
}

type asgMixedLaunchTemplate struct {
	Spec asgLaunchTemplate `xml:"LaunchTemplateSpecification"`
}

// NewLaunchTemplateVersion adds a version to the group's launch template, as CreateLaunchTemplateVersion
// does (a new AMI, say), and returns its number. It becomes the latest version, not the default one.
func (s *Server) NewLaunchTemplateVersion(groupName string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.groups[groupName]
	if !ok {
		return 0, fmt.Errorf("awssim: no group %s", groupName)
	}
	t := s.templateLocked(g)
	t.latest++
	return t.latest, nil
}

// SetDefaultLaunchTemplateVersion makes version the default of the group's launch template, as
// ModifyLaunchTemplate does.
func (s *Server) SetDefaultLaunchTemplateVersion(groupName string, version int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.groups[groupName]
	if !ok {
		return fmt.Errorf("awssim: no group %s", groupName)
	}
	t := s.templateLocked(g)
	if version < 1 || version > t.latest {
		return fmt.Errorf("awssim: group %s: launch template %s has versions 1 to %d, not %d", groupName, t.id, t.latest, version)
	}
	t.deflt = version
	return nil
}

// SetGroupLaunchTemplate sets the version the group names its launch template with (a number,
// "$Latest" or "$Default"), in its LaunchTemplate or, with mixed, in a MixedInstancesPolicy, as
// UpdateAutoScalingGroup does. Instances launched before keep the version they were launched from.
func (s *Server) SetGroupLaunchTemplate(groupName, version string, mixed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.groups[groupName]
	if !ok {
		return fmt.Errorf("awssim: no group %s", groupName)
	}
	t := s.templateLocked(g)
	if version != "$Latest" && version != "$Default" {
		if n, err := strconv.Atoi(version); err != nil || n < 1 || n > t.latest {
			return fmt.Errorf("awssim: group %s: launch template version %q: want $Latest, $Default or 1 to %d", groupName, version, t.latest)
		}
	}
	t.version, t.mixed = version, mixed
	return nil
}

// LaunchTemplateVersion is the launch template version instance id was launched from.
func (s *Server) LaunchTemplateVersion(id string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.instances[id]
	if !ok || inst.group == "" {
		return 0, false
	}
	return inst.templateVersion, true
}

type ec2LaunchTemplate struct {
	CreateTime           string `xml:"createTime"`
	CreatedBy            string `xml:"createdBy"`
	DefaultVersionNumber int    `xml:"defaultVersionNumber"`
	LatestVersionNumber  int    `xml:"latestVersionNumber"`
	LaunchTemplateID     string `xml:"launchTemplateId"`
	LaunchTemplateName   string `xml:"launchTemplateName"`
}

type describeLaunchTemplatesResponse struct {
	XMLName         xml.Name            `xml:"DescribeLaunchTemplatesResponse"`
	Xmlns           string              `xml:"xmlns,attr"`
	RequestID       string              `xml:"requestId"`
	LaunchTemplates []ec2LaunchTemplate `xml:"launchTemplates>item"`
}

func (r *describeLaunchTemplatesResponse) stamp(reqID string) { r.Xmlns, r.RequestID = ec2NS, reqID }

// describeLaunchTemplates answers DescribeLaunchTemplates by LaunchTemplateId.N or LaunchTemplateName.N
// (all templates without either). Like EC2 it fails the whole call when one named template does not
// exist. Called with s.mu held.
func (s *Server) describeLaunchTemplates(form url.Values) (describeLaunchTemplatesResponse, *apiError) {
	ids, names := queryList(form, "LaunchTemplateId"), queryList(form, "LaunchTemplateName")
	var out []ec2LaunchTemplate
	found := map[string]bool{}
	for _, n := range s.groupNames() {
		g := s.groups[n]
		t := s.templateLocked(g)
		if (len(ids) > 0 || len(names) > 0) && !slices.Contains(ids, t.id) && !slices.Contains(names, n) {
			continue
		}
		found[t.id], found[n] = true, true
		out = append(out, ec2LaunchTemplate{
			CreateTime: awsTime(g.created), CreatedBy: fmt.Sprintf("arn:aws:iam::%s:root", s.opts.AccountID),
			DefaultVersionNumber: t.deflt, LatestVersionNumber: t.latest, LaunchTemplateID: t.id, LaunchTemplateName: n,
		})
	}
	for _, id := range ids {
		if !found[id] {
			return describeLaunchTemplatesResponse{}, &apiError{http.StatusBadRequest, "InvalidLaunchTemplateId.NotFound",
				fmt.Sprintf("The specified launch template, with template ID %s, does not exist.", id)}
		}
	}
	for _, n := range names {
		if !found[n] {
			return describeLaunchTemplatesResponse{}, &apiError{http.StatusBadRequest, "InvalidLaunchTemplateName.NotFoundException",
				"At least one of the launch templates specified in the request does not exist."}
		}
	}
	return describeLaunchTemplatesResponse{LaunchTemplates: out}, nil
}
