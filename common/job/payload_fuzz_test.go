package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// fullPayload has every key of a POST /jobs/request answer (spec gitlab-api.md §2.1), with the
// alternative spellings Decode accepts.
const fullPayload = `{"id": 4711, "token": "glcbt-64_ExAmPlE", "allow_git_fetch": true,
 "job_info": {"id": 4711, "name": "unit-tests", "stage": "test", "project_id": 42, "project_name": "widget",
   "time_in_queue_seconds": 1.8, "project_full_path": "acme/widget", "project_jobs_running_on_instance_runners_count": "+Inf"},
 "git_info": {"repo_url": "https://gitlab-ci-token:glcbt-64_ExAmPlE@gitlab.example.test/acme/widget.git",
   "repo_object_format": "sha1", "ref": "main", "ref_type": "branch", "sha": "3f1c2e9d", "before_sha": "00000000",
   "refspecs": ["+refs/pipelines/900:refs/pipelines/900"], "depth": 20, "protected": true},
 "runner_info": {"timeout": 3600, "runner_session_url": null},
 "variables": [{"key": "CI_JOB_TOKEN", "value": "glcbt-64_ExAmPlE", "public": false, "masked": true},
   {"key": "KEY_FILE", "value": "-----BEGIN KEY-----\n", "public": false, "masked": false, "file": true},
   {"key": "LITERAL", "value": "keep $THIS", "public": false, "masked": false, "raw": true}],
 "steps": [{"name": "script", "script": ["make deps", "make test"], "timeout": 3600, "when": "on_success", "allow_failure": false},
   {"name": "after_script", "script": "make clean", "timeout": 60, "when": "always", "allow_failure": true},
   {"name": "release", "script": null}],
 "hooks": [{"name": "pre_get_sources_script", "script": ["git config --global fetch.prune true"]}],
 "image": {"name": "golang:1.22", "entrypoint": [""], "ports": [{"number": 8080, "protocol": "http", "name": "web"}],
   "pull_policy": ["if-not-present"], "executor_opts": {"docker": {"platform": "linux/amd64", "user": 1000}}},
 "services": [{"name": "postgres:16", "alias": "db", "command": ["postgres"], "executor_opts": {"docker": {"user": "postgres"}},
   "variables": [{"key": "POSTGRES_PASSWORD", "value": "pw", "public": false, "masked": false}]}],
 "artifacts": [{"name": "build", "untracked": false, "paths": ["bin/"], "exclude": ["bin/*.tmp"], "when": "on_success",
   "expire_in": "1 week", "artifact_type": "archive", "artifact_format": "zip"}],
 "cache": [{"key": "go-mod", "untracked": true, "policy": "pull-push", "paths": [".gocache/"], "when": "on_success",
   "fallback_keys": ["go-mod-default"]}],
 "credentials": [{"type": "registry", "url": "registry.example.test", "username": "gitlab-ci-token", "password": "glcbt-64_ExAmPlE"}],
 "dependencies": [{"id": 4700, "name": "build", "token": "glcbt-64_ExAmPlE", "artifacts_file": {"filename": "artifacts.zip", "size": 1048576}}],
 "features": {"trace_sections": true, "failure_reasons": ["script_failure"], "token_mask_prefixes": ["custom_"]},
 "run": "[{\"name\":\"step\"}]"}`

// FuzzDecode feeds job payloads to Decode and asserts:
//   - a rejected payload still returns a job, and the error names that job's ID;
//   - an accepted payload encodes to JSON that Decode accepts, and decoding that encoding changes
//     nothing: encode(decode(encode(decode(x)))) == encode(decode(x)).
func FuzzDecode(f *testing.F) {
	f.Add([]byte(fullPayload))
	f.Add([]byte(`{"id": 42, "token": "glcbt-abc", "unknown_top": {"x": 1}, "artifacts": null, "cache": null, "dependencies": null}`))
	f.Add([]byte(`{"id": 9, "token": "glcbt-t", "runner_info": {"timeout": "soon"}}`))
	f.Add([]byte(`{"id": 10, "token": "glcbt-t", "image": {"executor_opts": {"docker": {"user": [1]}}}}`))
	f.Add([]byte(`{"id": 11, "token": `))
	f.Add([]byte(`{"id": 12, "image": {"executor_opts": {"docker": {"user": -1.5e3}}}, "steps": [{"script": " x "}]}`))
	f.Add([]byte(`{"id": 13, "job_info": {"id": 0}, "variables": [], "services": [], "image": {"variables": [], "entrypoint": []}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))

	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := Decode(data)
		if j == nil {
			t.Fatalf("Decode returned no job (error %v)", err)
		}
		if err != nil {
			if want := fmt.Sprintf("job %d", j.ID); !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %s", err, want)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("Decode accepted invalid JSON %q", data)
		}
		enc1, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("decoded job does not encode: %v", err)
		}
		j2, err := Decode(enc1)
		if err != nil {
			t.Fatalf("Decode rejects its own job's encoding: %v\n%s", err, enc1)
		}
		enc2, err := json.Marshal(j2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc1, enc2) {
			t.Fatalf("decode(encode(job)) differs from job:\n%s\n%s", enc1, enc2)
		}
		if j2.ID != j.ID || j2.JobInfo.ID != j.JobInfo.ID || j.ID != 0 && j.JobInfo.ID == 0 {
			t.Fatalf("IDs %d/%d became %d/%d", j.ID, j.JobInfo.ID, j2.ID, j2.JobInfo.ID)
		}
	})
}
