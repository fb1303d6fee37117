package awssim

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
)

// FuzzRequest feeds arbitrary requests to the simulator's decoder. Whatever arrives, the answer is one
// of the protocol's own shapes (XML for the Query APIs, JSON for EC2 Instance Connect) with a status
// the SDK understands, never a panic or a 500 caused by the input.
func FuzzRequest(f *testing.F) {
	for _, seed := range []struct{ target, body string }{
		{"", "Action=DescribeAutoScalingGroups&Version=2011-01-01&AutoScalingGroupNames.member.1=fuzz"},
		{"", "Action=SetDesiredCapacity&Version=2011-01-01&AutoScalingGroupName=fuzz&DesiredCapacity=3&HonorCooldown=false"},
		{"", "Action=TerminateInstanceInAutoScalingGroup&Version=2011-01-01&InstanceId=i-0123456789abcdef0&ShouldDecrementDesiredCapacity=true"},
		{"", "Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0&Filter.1.Name=tag:aws:autoscaling:groupName&Filter.1.Value.1=fuzz"},
		{"", "Action=DescribeScalingActivities&Version=2011-01-01&AutoScalingGroupName=fuzz&MaxRecords=100"},
		{"", "Action=UpdateAutoScalingGroup&Version=2011-01-01&AutoScalingGroupName=fuzz&MaxSize=2"},
		{"", "Action=PutWarmPool&Version=2011-01-01&AutoScalingGroupName=fuzz&MinSize=1&MaxGroupPreparedCapacity=1&PoolState=Stopped&InstanceReusePolicy.ReuseOnScaleIn=true"},
		{"", "Action=DescribeWarmPool&Version=2011-01-01&AutoScalingGroupName=fuzz&MaxRecords=10"},
		{"", "Action=Nope&Version=1999-01-01"},
		{"", "%zz"},
		{"AWSEC2InstanceConnectService.SendSSHPublicKey", `{"InstanceId":"i-0123456789abcdef0","InstanceOSUser":"ec2-user","SSHPublicKey":"ssh-ed25519 AAAA"}`},
		{"AWSEC2InstanceConnectService.SendSSHPublicKey", `{"InstanceId":`},
		{"Other.Op", `{}`},
	} {
		f.Add(seed.target, []byte(seed.body))
	}
	// Instances never finish booting within a fuzz run: no sshd is started, however many are asked for.
	s, err := New(Options{Dir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	if err := s.CreateGroup(GroupSpec{Name: "fuzz", MaxSize: 2, Boot: &local.BootModel{Running: time.Hour}}); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, target string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		if target != "" {
			req.Header.Set("X-Amz-Target", target)
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		} else {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("answer %d to %q %q: %s", rec.Code, target, body, rec.Body)
		}
		if target != "" {
			if !json.Valid(rec.Body.Bytes()) && rec.Body.Len() > 0 {
				t.Fatalf("Instance Connect answer is not JSON: %q", rec.Body)
			}
			return
		}
		var doc struct{ XMLName xml.Name }
		if err := xml.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatalf("Query answer %d is not XML (%v): %q", rec.Code, err, rec.Body)
		}
		if rec.Code == http.StatusOK && strings.Contains(doc.XMLName.Local, "Error") {
			t.Fatalf("200 with an error document: %q", rec.Body)
		}
		if form, err := url.ParseQuery(string(body)); err == nil && rec.Code == http.StatusOK && form.Get("Action") != "" &&
			!strings.HasPrefix(doc.XMLName.Local, form.Get("Action")) {
			t.Fatalf("answer %s to action %s", doc.XMLName.Local, form.Get("Action"))
		}
	})
}
