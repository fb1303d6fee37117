package awssim

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
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

// ec2Response is an EC2 response body, which names its namespace and request ID.
type ec2Response interface{ stamp(reqID string) }

func (r *describeInstancesResponse) stamp(reqID string) { r.Xmlns, r.RequestID = ec2NS, reqID }

func (r *describeSpotRequestsResponse) stamp(reqID string) { r.Xmlns, r.RequestID = ec2NS, reqID }

// ec2 answers one EC2 action with a whole response body.
func (s *Server) ec2(action string, form url.Values, reqID string) ([]byte, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var resp ec2Response
	var err *apiError
	switch action {
	case "DescribeInstances":
		r, e := s.describeInstances(form)
		resp, err = &r, e
	case "DescribeSpotInstanceRequests":
		r, e := s.describeSpotRequests(form)
		resp, err = &r, e
	case "DescribeLaunchTemplates":
		r, e := s.describeLaunchTemplates(form)
		resp, err = &r, e
	default:
		return nil, &apiError{http.StatusBadRequest, "InvalidAction", fmt.Sprintf("The action %s is not valid for this web service.", action)}
	}
	if err != nil {
		return nil, err
	}
	resp.stamp(reqID)
	body, merr := xml.Marshal(resp)
	if merr != nil {
		return nil, &apiError{http.StatusInternalServerError, "InternalError", merr.Error()}
	}
	return append([]byte(xml.Header), body...), nil
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

// parseFilters reads the Filter.N.Name / Filter.N.Value.M parameters, refusing names known is false for.
func parseFilters(form url.Values, known func(name string) bool) ([]ec2Filter, *apiError) {
	var filters []ec2Filter
	for i := 1; ; i++ {
		name := form.Get("Filter." + strconv.Itoa(i) + ".Name")
		if name == "" {
			return filters, nil
		}
		if !known(name) {
			return nil, &apiError{http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf("The filter '%s' is invalid", name)}
		}
		filters = append(filters, ec2Filter{name: name, values: queryList(form, "Filter."+strconv.Itoa(i)+".Value")})
	}
}

func (s *Server) tags(inst *instance) map[string]string {
	tags := map[string]string{}
	if g, ok := s.groups[inst.group]; ok {
		for k, t := range g.tags {
			if t.propagate {
				tags[k] = t.value
			}
		}
		tags["aws:autoscaling:groupName"] = inst.group
	}
	return tags
}

func (s *Server) describeInstances(form url.Values) (describeInstancesResponse, *apiError) {
	filters, ferr := parseFilters(form, func(name string) bool {
		return name == "instance-id" || name == "instance-state-name" || name == "tag-key" || strings.HasPrefix(name, "tag:")
	})
	if ferr != nil {
		return describeInstancesResponse{}, ferr
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

// Every simulated instance is a spot instance, launched by the group through a one-time spot request
// whose status EC2 moves from fulfilled to marked-for-termination when it issues the interruption
// notice (spotMarked), and to instance-terminated-no-capacity once it has reclaimed the instance.
const spotMarked, spotTerminated = "marked-for-termination", "instance-terminated-no-capacity"

// spotRequest is one item of DescribeSpotInstanceRequests; the launch specification is left out.
type spotRequest struct {
	ID         string `xml:"spotInstanceRequestId"`
	State      string `xml:"state"`
	Type       string `xml:"type"`
	Code       string `xml:"status>code"`
	UpdateTime string `xml:"status>updateTime"`
	Message    string `xml:"status>message"`
	InstanceID string `xml:"instanceId"`
	AZ         string `xml:"launchedAvailabilityZone"`
}

type describeSpotRequestsResponse struct {
	XMLName   xml.Name      `xml:"DescribeSpotInstanceRequestsResponse"`
	Xmlns     string        `xml:"xmlns,attr"`
	RequestID string        `xml:"requestId"`
	Requests  []spotRequest `xml:"spotInstanceRequestSet>item"`
}

// describeSpotRequests answers DescribeSpotInstanceRequests with the instance-id filter (the only one
// the plugin sends), one request per instance, unpaged as EC2 answers when MaxResults is not given.
func (s *Server) describeSpotRequests(form url.Values) (describeSpotRequestsResponse, *apiError) {
	filters, ferr := parseFilters(form, func(name string) bool { return name == "instance-id" })
	if ferr != nil {
		return describeSpotRequestsResponse{}, ferr
	}
	var ids []string
	for _, f := range filters {
		ids = append(ids, f.values...)
	}
	cutoff := s.listingCutoff()
	var resp describeSpotRequestsResponse
	for _, inst := range s.sortedInstances() {
		if inst.group == "" || !listed(inst, cutoff) || len(ids) > 0 && !slices.Contains(ids, inst.id) {
			continue
		}
		r := spotRequest{
			ID: "sir-" + strings.TrimPrefix(inst.id, "i-"), State: "active", Type: "one-time", InstanceID: inst.id, AZ: inst.az,
			Code: "fulfilled", UpdateTime: awsTime(inst.launched), Message: "Your spot request is fulfilled.",
		}
		switch inst.spotCode {
		case spotMarked:
			r.Code, r.UpdateTime = spotMarked, awsTime(inst.spotUpdated)
			r.Message = "Spot Instance has been marked for termination due to a lack of capacity."
		case spotTerminated:
			r.State, r.Code, r.UpdateTime = "closed", spotTerminated, awsTime(inst.spotUpdated)
			r.Message = "Spot Instance terminated due to a lack of capacity."
		}
		resp.Requests = append(resp.Requests, r)
	}
	return resp, nil
}

// InterruptSpot issues a spot interruption notice for an instance now (its spot request turns
// marked-for-termination) and reclaims it after warning, as EC2 does two minutes after the notice: its
// sshd dies, it leaves the group, and the group launches a replacement.
func (s *Server) InterruptSpot(instanceID string, warning time.Duration) error {
	s.mu.Lock()
	inst, ok := s.instances[instanceID]
	if !ok || inst.group == "" || inst.lifecycle == lifecycleTerminating || inst.lifecycle == lifecycleTerminated {
		s.mu.Unlock()
		return fmt.Errorf("awssim: no live instance %s to interrupt", instanceID)
	}
	if inst.spotCode != "" {
		s.mu.Unlock()
		return fmt.Errorf("awssim: instance %s already has an interruption notice", instanceID)
	}
	inst.spotCode, inst.spotUpdated = spotMarked, time.Now()
	s.log.WithField("instance", instanceID).WithField("warning", warning).Info("spot interruption notice")
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		if !s.sleep(warning) {
			return
		}
		if err := s.ReplaceInstance(instanceID, ReplaceSpotInterruption); err != nil {
			s.log.WithError(err).WithField("instance", instanceID).Warn("could not reclaim the interrupted instance")
			return
		}
		s.mu.Lock()
		inst.spotCode, inst.spotUpdated = spotTerminated, time.Now()
		s.mu.Unlock()
	}()
	return nil
}
