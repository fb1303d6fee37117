package awssim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// osUserPattern is what EC2 Instance Connect accepts as InstanceOSUser.
var osUserPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9@._-]{0,31}$`)

type sendSSHPublicKeyInput struct {
	InstanceID       string `json:"InstanceId"`
	InstanceOSUser   string `json:"InstanceOSUser"`
	SSHPublicKey     string `json:"SSHPublicKey"`
	AvailabilityZone string `json:"AvailabilityZone"`
}

// serveInstanceConnect answers EC2 Instance Connect (awsJson1_1, X-Amz-Target).
func (s *Server) serveInstanceConnect(w http.ResponseWriter, r *http.Request, reqID, target string) {
	action, ok := strings.CutPrefix(target, instanceConnectTarget)
	if !ok || action != "SendSSHPublicKey" {
		s.count(target)
		writeJSONError(w, &apiError{http.StatusBadRequest, "UnknownOperationException", "Unknown operation " + target})
		return
	}
	if err := s.fault(action, "ThrottlingException", http.StatusBadRequest, "Rate exceeded",
		"AccessDeniedException", "User: arn:aws:sts::%s:assumed-role/fleetrunner-manager/i-0 is not authorized to perform: ec2-instance-connect:%s because no identity-based policy allows the ec2-instance-connect:%s action"); err != nil {
		writeJSONError(w, err)
		return
	}
	body, err := readAll(r.Body)
	var in sendSSHPublicKeyInput
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil {
		writeJSONError(w, &apiError{http.StatusBadRequest, "SerializationException", "Could not parse the request body"})
		return
	}
	if e := s.sendSSHPublicKey(in); e != nil {
		writeJSONError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"RequestId": reqID, "Success": true})
}

func (s *Server) sendSSHPublicKey(in sendSSHPublicKeyInput) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	push := KeyPush{InstanceID: in.InstanceID, User: in.InstanceOSUser, Key: in.SSHPublicKey, Time: time.Now()}
	e := s.checkPush(in, &push)
	if e == nil {
		if err := s.pushKeyLocked(s.instances[in.InstanceID], in.InstanceOSUser, strings.TrimSpace(in.SSHPublicKey)); err != nil {
			e = &apiError{http.StatusInternalServerError, "ServiceException", "could not install the key: " + err.Error()}
		}
	}
	if e != nil {
		push.Err = e.code
	}
	s.pushes = append(s.pushes, push)
	return e
}

// checkPush validates a push as EC2 Instance Connect does. Called with s.mu held.
func (s *Server) checkPush(in sendSSHPublicKeyInput, push *KeyPush) *apiError {
	if in.InstanceID == "" || in.InstanceOSUser == "" || in.SSHPublicKey == "" {
		return &apiError{http.StatusBadRequest, "InvalidArgsException", "InstanceId, InstanceOSUser and SSHPublicKey are required"}
	}
	if !osUserPattern.MatchString(in.InstanceOSUser) {
		return &apiError{http.StatusBadRequest, "InvalidArgsException", fmt.Sprintf("Invalid InstanceOSUser %q", in.InstanceOSUser)}
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(in.SSHPublicKey)); err != nil {
		return &apiError{http.StatusBadRequest, "InvalidArgsException", "Unsupported or malformed SSH public key"}
	}
	inst, ok := s.instances[in.InstanceID]
	if !ok {
		return &apiError{http.StatusBadRequest, "EC2InstanceNotFoundException", "Instance not found"}
	}
	push.Group = inst.group
	if in.AvailabilityZone != "" && in.AvailabilityZone != inst.az {
		return &apiError{http.StatusBadRequest, "InvalidArgsException", "Instance is not in the given availability zone"}
	}
	if inst.ec2State != "running" {
		return &apiError{http.StatusBadRequest, "EC2InstanceStateInvalidException", "Instance is not in a valid state for this operation"}
	}
	return nil
}
