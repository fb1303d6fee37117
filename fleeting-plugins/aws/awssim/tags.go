package awssim

import (
	"maps"
	"net/url"
	"slices"
	"strconv"
)

// groupTag is one tag of a group: set from GroupSpec.Tags (propagated) or by CreateOrUpdateTags.
type groupTag struct {
	value     string
	propagate bool
}

// tagAction answers CreateOrUpdateTags and DeleteTags; ok is false for any other action. Both answer
// an empty Result element, as AWS does.
func (s *Server) tagAction(action string, form url.Values) (result any, err *apiError, ok bool) {
	switch action {
	case "CreateOrUpdateTags":
		return struct{}{}, s.changeTags(form, true), true
	case "DeleteTags":
		return struct{}{}, s.changeTags(form, false), true
	}
	return nil, nil, false
}

// tagRequest is one Tags.member.N of a request.
type tagRequest struct {
	g         *group
	key       string
	value     string
	propagate bool
}

// changeTags applies the request's tags to their groups, all of them or, on the first invalid one,
// none.
func (s *Server) changeTags(form url.Values, set bool) *apiError {
	var reqs []tagRequest
	for i := 1; ; i++ {
		p := "Tags.member." + strconv.Itoa(i) + "."
		if _, ok := form[p+"Key"]; !ok && form.Get(p+"ResourceId") == "" {
			break
		}
		r, err := s.tagRequestAt(form, p, set)
		if err != nil {
			return err
		}
		reqs = append(reqs, r)
	}
	if len(reqs) == 0 {
		return validationError("1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null")
	}
	for _, r := range reqs {
		if !set {
			delete(r.g.tags, r.key)
			continue
		}
		if r.g.tags == nil {
			r.g.tags = map[string]groupTag{}
		}
		r.g.tags[r.key] = groupTag{value: r.value, propagate: r.propagate}
	}
	return nil
}

func (s *Server) tagRequestAt(form url.Values, p string, set bool) (tagRequest, *apiError) {
	key := form.Get(p + "Key")
	if key == "" {
		return tagRequest{}, validationError("1 validation error detected: Value null at 'tags.%s.member.key' failed to satisfy constraint: Member must not be null", p[len("Tags.member."):len(p)-1])
	}
	if rt := form.Get(p + "ResourceType"); rt != "auto-scaling-group" {
		return tagRequest{}, validationError("Invalid resource type: %s", rt)
	}
	g, err := s.group(form.Get(p + "ResourceId"))
	if err != nil {
		return tagRequest{}, err
	}
	r := tagRequest{g: g, key: key, value: form.Get(p + "Value")}
	if v := form.Get(p + "PropagateAtLaunch"); set && v != "" {
		var perr error
		if r.propagate, perr = strconv.ParseBool(v); perr != nil {
			return tagRequest{}, validationError("Value '%s' at 'tags.member.propagateAtLaunch' is not a boolean", v)
		}
	}
	return r, nil
}

// groupTagsXML lists a group's tags as DescribeAutoScalingGroups shows them, by key.
func groupTagsXML(name string, g *group) []asgTag {
	var out []asgTag
	for _, k := range slices.Sorted(maps.Keys(g.tags)) {
		t := g.tags[k]
		out = append(out, asgTag{ResourceID: name, ResourceType: "auto-scaling-group", Key: k, Value: t.value, PropagateAtLaunch: t.propagate})
	}
	return out
}

// specTags are the tags a group starts with: GroupSpec.Tags, propagated.
func specTags(spec GroupSpec) map[string]groupTag {
	tags := make(map[string]groupTag, len(spec.Tags))
	for k, v := range spec.Tags {
		tags[k] = groupTag{value: v, propagate: true}
	}
	return tags
}
