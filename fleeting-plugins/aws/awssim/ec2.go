package awssim

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// XML shapes of EC2's DescribeInstances (ec2Query: camelCase elements, lists of <item>).

type ec2Tag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type ec2State struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type ec2Placement struct {
	AvailabilityZone string `xml:"availabilityZone"`
	Tenancy          string `xml:"tenancy"`
}

type ec2Instance struct {
	InstanceID       string       `xml:"instanceId"`
	ImageID          string       `xml:"imageId"`
	InstanceState    ec2State     `xml:"instanceState"`
	PrivateDNSName   string       `xml:"privateDnsName"`
	DNSName          string       `xml:"dnsName"`
	Reason           string       `xml:"reason"`
	AmiLaunchIndex   int          `xml:"amiLaunchIndex"`
	InstanceType     string       `xml:"instanceType"`
	LaunchTime       string       `xml:"launchTime"`
	Placement        ec2Placement `xml:"placement"`
	Platform         string       `xml:"platform,omitempty"`
	PlatformDetails  string       `xml:"platformDetails"`
	SubnetID         string       `xml:"subnetId"`
	VpcID            string       `xml:"vpcId"`
	PrivateIPAddress string       `xml:"privateIpAddress,omitempty"`
	IPAddress        string       `xml:"ipAddress,omitempty"`
	Architecture     string       `xml:"architecture"`
	RootDeviceType   string       `xml:"rootDeviceType"`
	StateReason      *struct {
		Code    string `xml:"code"`
		Message string `xml:"message"`
	} `xml:"stateReason,omitempty"`
	TagSet []ec2Tag `xml:"tagSet>item"`
}

type ec2Reservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Instances     []ec2Instance `xml:"instancesSet>item"`
}

type describeInstancesResponse struct {
	XMLName      xml.Name         `xml:"DescribeInstancesResponse"`
	Xmlns        string           `xml:"xmlns,attr"`
	RequestID    string           `xml:"requestId"`
	Reservations []ec2Reservation `xml:"reservationSet>item"`
	NextToken    string           `xml:"nextToken,omitempty"`
}

var ec2StateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

// ec2 answers one EC2 action with a whole response body.
func (s *Server) ec2(action string, form url.Values, reqID string) ([]byte, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch action {
	case "DescribeInstances":
		resp, err := s.describeInstances(form)
		if err != nil {
			return nil, err
		}
		resp.Xmlns, resp.RequestID = ec2NS, reqID
		body, merr := xml.Marshal(resp)
		if merr != nil {
			return nil, &apiError{http.StatusInternalServerError, "InternalError", merr.Error()}
		}
		return append([]byte(xml.Header), body...), nil
	}
	return nil, &apiError{http.StatusBadRequest, "InvalidAction", fmt.Sprintf("The action %s is not valid for this web service.", action)}
}

type ec2Filter struct {
	name   string
	values []string
}

// matches applies one DescribeInstances filter; unsupported filter names were refused before.
func (f ec2Filter) matches(inst *instance, tags map[string]string) bool {
	switch {
	case f.name == "instance-id":
		return slices.Contains(f.values, inst.id)
	case f.name == "instance-state-name":
		return slices.Contains(f.values, inst.ec2State)
	case f.name == "tag-key":
		for _, v := range f.values {
			if _, ok := tags[v]; ok {
				return true
			}
		}
		return false
	case strings.HasPrefix(f.name, "tag:"):
		v, ok := tags[strings.TrimPrefix(f.name, "tag:")]
		return ok && slices.Contains(f.values, v)
	}
	return false
}

func (s *Server) tags(inst *instance) map[string]string {
	tags := map[string]string{}
	if g, ok := s.groups[inst.group]; ok {
		for k, v := range g.spec.Tags {
			tags[k] = v
		}
		tags["aws:autoscaling:groupName"] = inst.group
	}
	return tags
}

func (s *Server) describeInstances(form url.Values) (describeInstancesResponse, *apiError) {
	var filters []ec2Filter
	for i := 1; ; i++ {
		name := form.Get("Filter." + strconv.Itoa(i) + ".Name")
		if name == "" {
			break
		}
		switch {
		case name == "instance-id", name == "instance-state-name", name == "tag-key", strings.HasPrefix(name, "tag:"):
		default:
			return describeInstancesResponse{}, &apiError{http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf("The filter '%s' is invalid", name)}
		}
		filters = append(filters, ec2Filter{name: name, values: queryList(form, "Filter."+strconv.Itoa(i)+".Value")})
	}
	ids := queryList(form, "InstanceId")
	cutoff := s.listingCutoff()
	for _, id := range ids {
		if !instanceIDOK(id) {
			return describeInstancesResponse{}, &apiError{http.StatusBadRequest, "InvalidInstanceID.Malformed", fmt.Sprintf("Invalid id: \"%s\"", id)}
		}
		// A just-launched instance is unknown to a lagging replica, as EC2's eventual consistency has it.
		if inst, ok := s.instances[id]; !ok || !listed(inst, cutoff) {
			return describeInstancesResponse{}, &apiError{http.StatusBadRequest, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", id)}
		}
	}
	size, err := queryInt(form, "MaxResults", 1000)
	if err != nil {
		return describeInstancesResponse{}, err
	}
	if size < 5 || size > 1000 {
		return describeInstancesResponse{}, &apiError{http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf("Value ( %d ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", size)}
	}

	var matched []ec2Instance
	for _, inst := range s.sortedInstances() {
		if !listed(inst, cutoff) || len(ids) > 0 && !slices.Contains(ids, inst.id) {
			continue
		}
		tags := s.tags(inst)
		ok := true
		for _, f := range filters {
			ok = ok && f.matches(inst, tags)
		}
		if ok {
			matched = append(matched, s.ec2Instance(inst, tags))
		}
	}
	matched, next, err := page(matched, form.Get("NextToken"), size)
	if err != nil {
		return describeInstancesResponse{}, err
	}
	// One reservation per instance, as a group launches them one by one.
	resp := describeInstancesResponse{NextToken: next}
	for _, inst := range matched {
		resp.Reservations = append(resp.Reservations, ec2Reservation{
			ReservationID: "r-" + strings.TrimPrefix(inst.InstanceID, "i-"), OwnerID: s.opts.AccountID, Instances: []ec2Instance{inst},
		})
	}
	return resp, nil
}

func (s *Server) ec2Instance(inst *instance, tags map[string]string) ec2Instance {
	out := ec2Instance{
		InstanceID: inst.id, ImageID: "ami-0123456789abcdef0",
		InstanceState:  ec2State{Code: ec2StateCodes[inst.ec2State], Name: inst.ec2State},
		InstanceType:   "t3.micro",
		LaunchTime:     awsTime(inst.launched),
		Placement:      ec2Placement{AvailabilityZone: inst.az, Tenancy: "default"},
		Platform:       s.opts.Platform,
		SubnetID:       "subnet-0123456789abcdef0",
		VpcID:          "vpc-0123456789abcdef0",
		Architecture:   s.opts.Architecture,
		RootDeviceType: "ebs",
	}
	out.PlatformDetails = "Linux/UNIX"
	if s.opts.Platform == "windows" {
		out.PlatformDetails = "Windows"
	}
	// Addresses go away with the instance, as EC2's do.
	if inst.ec2State != "terminated" {
		out.PrivateIPAddress = inst.addr.String()
		out.PrivateDNSName = "ip-" + strings.ReplaceAll(inst.addr.String(), ".", "-") + ".ec2.internal"
		if s.opts.PublicIP {
			out.IPAddress = inst.addr.String()
		}
	}
	if inst.ec2State == "terminated" || inst.ec2State == "shutting-down" {
		code, _, _ := strings.Cut(inst.stateReason, ": ")
		out.StateReason = &struct {
			Code    string `xml:"code"`
			Message string `xml:"message"`
		}{code, inst.stateReason}
	}
	for _, k := range sortedKeys(tags) {
		out.TagSet = append(out.TagSet, ec2Tag{Key: k, Value: tags[k]})
	}
	return out
}
