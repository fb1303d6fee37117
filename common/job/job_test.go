package job

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestDecodeIsLenient(t *testing.T) {
	payload := `{"id": 42, "token": "glcbt-abc", "unknown_top": {"x": 1},
	  "job_info": {"name": "build", "stage": "test", "project_id": 7, "new_field": "ignored"},
	  "runner_info": {"timeout": 0, "runner_session_url": null},
	  "steps": [{"name": "script", "script": "echo single", "timeout": 60, "when": "on_success"},
	            {"name": "after_script", "script": null}],
	  "image": {"name": "alpine", "executor_opts": {"docker": {"user": 1000, "platform": "linux/amd64"}}},
	  "services": [{"name": "db", "executor_opts": {"docker": {"user": "postgres"}}}],
	  "variables": [{"key": "A", "value": "1", "public": true, "masked": false},
	                {"key": "A", "value": "2", "public": true, "masked": false, "raw": true}],
	  "artifacts": null, "cache": null, "dependencies": null}`
	j, err := Decode([]byte(payload))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if j.ID != 42 || j.JobInfo.ID != 42 {
		t.Errorf("ids = %d/%d, want 42/42", j.ID, j.JobInfo.ID)
	}
	if got := j.StepByName(StepScript).Script; !slices.Equal(got, []string{"echo single"}) {
		t.Errorf("script from a string = %q", got)
	}
	if j.StepByName(StepAfterScript).Script != nil {
		t.Error("null script should decode to nil")
	}
	if j.StepByName("release") != nil {
		t.Error("StepByName found a step that is not there")
	}
	if u := j.Image.ExecutorOpts.Docker.User; u != "1000" {
		t.Errorf("numeric user = %q, want 1000", u)
	}
	if u := j.Services[0].ExecutorOpts.Docker.User; u != "postgres" {
		t.Errorf("string user = %q", u)
	}
	if got := j.Variables.Get("A"); got != "2" {
		t.Errorf("later variable should win, got %q", got)
	}
	if j.TimeoutSeconds() != DefaultTimeoutSeconds {
		t.Errorf("timeout 0 should mean the default, got %d", j.TimeoutSeconds())
	}
}

func TestDecodeMalformedKeepsIDAndToken(t *testing.T) {
	tests := []struct {
		name, payload string
		wantID        int64
	}{
		{"wrong type", `{"id": 9, "token": "glcbt-t", "runner_info": {"timeout": "soon"}}`, 9},
		{"bad user", `{"id": 10, "token": "glcbt-t", "image": {"executor_opts": {"docker": {"user": [1]}}}}`, 10},
		{"not json", `{"id": 11, "token": `, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := Decode([]byte(tt.payload))
			if err == nil {
				t.Fatal("want an error")
			}
			if j == nil || j.ID != tt.wantID {
				t.Fatalf("job = %+v, want ID %d", j, tt.wantID)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("job %d", tt.wantID)) {
				t.Errorf("error %q does not name the job", err)
			}
			if tt.wantID != 0 && j.Token != "glcbt-t" {
				t.Errorf("token lost: %q", j.Token)
			}
		})
	}
}

func TestReasonFor(t *testing.T) {
	j := &Job{Features: Features{FailureReasons: []string{"script_failure", "runner_system_failure", "unknown_failure", "runner_configuration_error"}}}
	old := &Job{}
	tests := []struct {
		job  *Job
		in   FailureReason
		want FailureReason
	}{
		{j, "", ScriptFailure},
		{j, ScriptFailure, ScriptFailure},
		{j, RunnerConfigurationErr, RunnerConfigurationErr},
		{old, RunnerConfigurationErr, UnknownFailure},
		{j, ImagePullFailure, RunnerSystemFailure},
		{old, ImagePullFailure, RunnerSystemFailure},
		{j, ConfigurationError, ScriptFailure},
		{j, JobCanceled, UnknownFailure},
		{old, JobExecutionTimeout, JobExecutionTimeout},
	}
	for _, tt := range tests {
		if got := tt.job.ReasonFor(tt.in); got != tt.want {
			t.Errorf("ReasonFor(%q) with %d known reasons = %q, want %q", tt.in, len(tt.job.Features.FailureReasons), got, tt.want)
		}
	}
}

func TestFailure(t *testing.T) {
	tests := []struct {
		err      error
		reason   FailureReason
		exitCode int
	}{
		{nil, "", 0},
		{&BuildError{Reason: ScriptFailure, ExitCode: 3}, ScriptFailure, 3},
		{fmt.Errorf("stage: %w", &BuildError{Reason: JobExecutionTimeout}), JobExecutionTimeout, 0},
		{errors.New("engine unreachable"), RunnerSystemFailure, 0},
	}
	for _, tt := range tests {
		r, c := Failure(tt.err)
		if r != tt.reason || c != tt.exitCode {
			t.Errorf("Failure(%v) = %q, %d; want %q, %d", tt.err, r, c, tt.reason, tt.exitCode)
		}
	}
}

func TestMaskedValuesLongestFirstWithoutDuplicates(t *testing.T) {
	vs := Variables{
		{Key: "SHORT", Value: "abc", Masked: true},
		{Key: "PUBLIC", Value: "not-secret"},
		{Key: "LONG", Value: "abcdef", Masked: true},
		{Key: "EMPTY", Value: "", Masked: true},
		{Key: "DUP", Value: "abc", Masked: true},
	}
	if got, want := vs.MaskedValues(), []string{"abcdef", "abc"}; !slices.Equal(got, want) {
		t.Errorf("MaskedValues = %q, want %q", got, want)
	}
}

func TestVariablesExpandAndBool(t *testing.T) {
	vs := Variables{{Key: "NAME", Value: "world"}, {Key: "FLAG", Value: "true"}, {Key: "OFF", Value: "0"}}
	if got := vs.Expand("hello ${NAME} $MISSING!"); got != "hello world !" {
		t.Errorf("Expand = %q", got)
	}
	if !vs.Bool("FLAG") || vs.Bool("OFF") || vs.Bool("MISSING") {
		t.Error("Bool misreads flags")
	}
}
