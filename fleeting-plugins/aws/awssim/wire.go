package awssim

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Service API versions and XML namespaces as AWS sends them.
const (
	autoScalingVersion = "2011-01-01"
	autoScalingNS      = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
	ec2Version         = "2016-11-15"
	ec2NS              = "http://ec2.amazonaws.com/doc/2016-11-15/"
	// instanceConnectTarget prefixes the X-Amz-Target of EC2 Instance Connect (awsJson1_1).
	instanceConnectTarget = "AWSEC2InstanceConnectService."
)

// apiError is an error answered on the wire.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func validationError(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationError", fmt.Sprintf(format, args...)}
}

// awsTime is how AWS writes timestamps in XML.
func awsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// ServeHTTP dispatches by protocol: a JSON target header for EC2 Instance Connect, else a form-encoded
// Query request whose Version names the service.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := uuid.NewString()
	w.Header().Set("x-amzn-RequestId", reqID)
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		s.serveInstanceConnect(w, r, reqID, target)
		return
	}
	if r.Method != http.MethodPost {
		writeQueryError(w, autoScalingNS, reqID, &apiError{http.StatusBadRequest, "InvalidAction", "Query APIs take POST"})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeQueryError(w, autoScalingNS, reqID, &apiError{http.StatusBadRequest, "MalformedQueryString", err.Error()})
		return
	}
	action, version := r.PostForm.Get("Action"), r.PostForm.Get("Version")
	switch version {
	case autoScalingVersion:
		if err := s.fault(action, "Throttling", http.StatusBadRequest, "Rate exceeded",
			"AccessDenied", "User: arn:aws:sts::%s:assumed-role/fleetrunner-manager/i-0 is not authorized to perform: autoscaling:%s because no identity-based policy allows the autoscaling:%s action"); err != nil {
			writeQueryError(w, autoScalingNS, reqID, err)
			return
		}
		result, err := s.autoScaling(action, r.PostForm)
		if err != nil {
			writeQueryError(w, autoScalingNS, reqID, err)
			return
		}
		writeQuery(w, action, reqID, result)
	case ec2Version:
		if err := s.fault(action, "RequestLimitExceeded", http.StatusServiceUnavailable, "Request limit exceeded.",
			"UnauthorizedOperation", "You are not authorized to perform this operation. User: arn:aws:sts::%s:assumed-role/fleetrunner-manager/i-0 is not authorized to perform: ec2:%s because no identity-based policy allows the ec2:%s action"); err != nil {
			writeEC2Error(w, reqID, err)
			return
		}
		body, err := s.ec2(action, r.PostForm, reqID)
		if err != nil {
			writeEC2Error(w, reqID, err)
			return
		}
		writeXML(w, http.StatusOK, body)
	default:
		s.count(action)
		writeQueryError(w, autoScalingNS, reqID, &apiError{http.StatusBadRequest, "InvalidAction",
			fmt.Sprintf("Could not find operation %s for version %s", action, version)})
	}
}

func (s *Server) count(action string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[action]++
}

// fault counts the call and answers it with an injected throttling or access-denied error, if any.
// The access-denied message takes the account and the action twice.
func (s *Server) fault(action, throttleCode string, throttleStatus int, throttleMsg, deniedCode, deniedFmt string) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[action]++
	if slices.Contains(s.faults.AccessDenied, action) {
		return &apiError{http.StatusForbidden, deniedCode, fmt.Sprintf(deniedFmt, s.opts.AccountID, action, action)}
	}
	if s.faults.ThrottleRate > 0 && s.rng.Float64() < s.faults.ThrottleRate {
		return &apiError{throttleStatus, throttleCode, throttleMsg}
	}
	return nil
}

// writeQuery writes an awsQuery answer: <ActionResponse><ActionResult>…</ActionResult><ResponseMetadata>.
// A nil result writes no Result element (actions without output).
func writeQuery(w http.ResponseWriter, action, reqID string, result any) {
	var b strings.Builder
	b.WriteString(xml.Header)
	fmt.Fprintf(&b, "<%sResponse xmlns=%q>", action, autoScalingNS)
	if result != nil {
		if err := xml.NewEncoder(&b).EncodeElement(result, xml.StartElement{Name: xml.Name{Local: action + "Result"}}); err != nil {
			writeQueryError(w, autoScalingNS, reqID, &apiError{http.StatusInternalServerError, "InternalFailure", err.Error()})
			return
		}
	}
	fmt.Fprintf(&b, "<ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>", reqID, action)
	writeXML(w, http.StatusOK, []byte(b.String()))
}

// writeQueryError writes the awsQuery error shape.
func writeQueryError(w http.ResponseWriter, ns, reqID string, e *apiError) {
	typ := "Sender"
	if e.status >= 500 {
		typ = "Receiver"
	}
	var b strings.Builder
	b.WriteString(xml.Header)
	fmt.Fprintf(&b, "<ErrorResponse xmlns=%q><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>",
		ns, typ, escape(e.code), escape(e.message), reqID)
	writeXML(w, e.status, []byte(b.String()))
}

// writeEC2Error writes EC2's own error shape (Response/Errors/Error, RequestID).
func writeEC2Error(w http.ResponseWriter, reqID string, e *apiError) {
	body := fmt.Sprintf("%s<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>",
		xml.Header, escape(e.code), escape(e.message), reqID)
	writeXML(w, e.status, []byte(body))
}

func writeXML(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// writeJSONError writes the awsJson error shape: __type in the body and X-Amzn-ErrorType.
func writeJSONError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("X-Amzn-ErrorType", e.code)
	writeJSON(w, e.status, map[string]string{"__type": e.code, "Message": e.message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// queryList reads a Query list parameter: prefix.1, prefix.2, … (prefix includes ".member" for awsQuery).
func queryList(form url.Values, prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[prefix+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

// queryInt reads an optional integer parameter.
func queryInt(form url.Values, name string, def int) (int, *apiError) {
	v := form.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, validationError("Value %q at %s failed to satisfy constraint: Member must be a number", v, name)
	}
	return n, nil
}

// maxRecords reads MaxRecords: def when absent, at most most.
func maxRecords(form url.Values, def, most int) (int, *apiError) {
	size, err := queryInt(form, "MaxRecords", def)
	if err != nil {
		return 0, err
	}
	if size < 1 || size > most {
		return 0, validationError("Value '%d' at 'maxRecords' failed to satisfy constraint: Member must have value less than or equal to %d", size, most)
	}
	return size, nil
}

// page cuts a result list at a NextToken (an index, as AWS's tokens are opaque) and a page size.
func page[T any](items []T, token string, size int) ([]T, string, *apiError) {
	start := 0
	if token != "" {
		n, err := strconv.Atoi(token)
		if err != nil || n < 0 || n > len(items) {
			return nil, "", &apiError{http.StatusBadRequest, "InvalidNextToken", "The token '" + token + "' is invalid."}
		}
		start = n
	}
	end := min(start+size, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next, nil
}

func readAll(r io.Reader) ([]byte, error) { return io.ReadAll(io.LimitReader(r, 1<<20)) }
