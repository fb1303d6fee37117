package gitlabsim

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
)

func upload(t *testing.T, s *Server, id int64, token, query, field string, data []byte) result {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile(field, "artifacts.zip")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(data)
	_ = mw.Close()
	req, err := http.NewRequestWithContext(t.Context(), "POST", s.URL()+"/api/v4/jobs/"+itoa(id)+"/artifacts"+query, &body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("JOB-TOKEN", token)
	// Redirects are the runner's business; see them here.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return result{code: resp.StatusCode, header: resp.Header, body: out.Bytes()}
}

func TestArtifacts(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	build := s.Enqueue(JobSpec{Name: "build", Script: []string{"true"}})
	bj := takeJob(t, s, token, allFeatures)
	zip := []byte("PK\x03\x04 fake zip")

	tests := []struct {
		name, token, query, field string
		want                      int
	}{
		{"bad token", "glcbt-nope", "", "file", http.StatusForbidden},
		{"bad format", bj.Token, "?artifact_format=tar", "file", http.StatusBadRequest},
		{"bad type", bj.Token, "?artifact_type=nonsense", "file", http.StatusBadRequest},
		{"no file part", bj.Token, "", "other", http.StatusBadRequest},
		{"archive", bj.Token, "?artifact_type=archive&artifact_format=zip&expire_in=1+week", "file", http.StatusCreated},
		{"second archive", bj.Token, "?artifact_type=archive", "file", http.StatusBadRequest},
		{"report", bj.Token, "?artifact_type=junit&artifact_format=gzip", "file", http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := upload(t, s, build, tt.token, tt.query, tt.field, zip)
			if r.code != tt.want {
				t.Fatalf("upload = %d (%s), want %d", r.code, r.body, tt.want)
			}
			if r.code == http.StatusCreated && (string(r.body) != "201" || r.header.Get("Content-Type") != "application/json") {
				t.Fatalf("201 body %q type %q", r.body, r.header.Get("Content-Type"))
			}
		})
	}
	snap, _ := s.Job(build)
	if len(snap.Artifacts) != 2 || snap.Artifacts[0].ExpireIn != "1 week" || snap.Artifacts[0].Filename != "artifacts.zip" ||
		!bytes.Equal(snap.Artifacts[0].Data, zip) || snap.Artifacts[1].Type != "junit" || snap.Artifacts[1].Format != "gzip" {
		t.Fatalf("stored artifacts %+v", snap.Artifacts)
	}
	putJob(t, s, build, map[string]any{"token": bj.Token, "state": "success"})

	test := s.Enqueue(JobSpec{Name: "test", Script: []string{"true"}, Dependencies: []string{"build"}})
	tj := takeJob(t, s, token, allFeatures)
	if len(tj.Dependencies) != 1 || tj.Dependencies[0].ID != build || tj.Dependencies[0].Token != tj.Token ||
		tj.Dependencies[0].ArtifactsFile == nil || tj.Dependencies[0].ArtifactsFile.Size != int64(len(zip)) {
		t.Fatalf("dependencies %+v", tj.Dependencies)
	}
	path := "/api/v4/jobs/" + itoa(build) + "/artifacts"
	s.Enqueue(JobSpec{Name: "other project", Repo: "elsewhere", Script: []string{"true"}})
	oj := takeJob(t, s, token, allFeatures)
	for _, tt := range []struct {
		name, path string
		hdr        []string
		want       int
	}{
		{"no token", path, nil, http.StatusUnauthorized},
		{"finished job's token", path, []string{"JOB-TOKEN", bj.Token}, http.StatusForbidden},
		{"other project's job", path, []string{"JOB-TOKEN", oj.Token}, http.StatusForbidden},
		{"running dependent job", path + "?direct_download=false", []string{"JOB-TOKEN", tj.Dependencies[0].Token}, http.StatusOK},
		{"job without archive", "/api/v4/jobs/" + itoa(test) + "/artifacts", []string{"JOB-TOKEN", tj.Token}, http.StatusNotFound},
		{"unknown job", "/api/v4/jobs/99999/artifacts", []string{"JOB-TOKEN", tj.Token}, http.StatusNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, s, "GET", tt.path, nil, tt.hdr...)
			if r.code != tt.want {
				t.Fatalf("download = %d (%s), want %d", r.code, r.body, tt.want)
			}
			if r.code == http.StatusOK && !bytes.Equal(r.body, zip) {
				t.Fatalf("downloaded %q", r.body)
			}
		})
	}
}

func TestArtifactFaults(t *testing.T) {
	s := newSim(t, Options{})
	_, token := s.CreateRunner(RunnerOptions{})
	id := s.Enqueue(JobSpec{Name: "a", Script: []string{"true"}, Artifacts: []job.Artifact{{Paths: []string{"x"}}}})
	j := takeJob(t, s, token, allFeatures)
	s.SetFaults(Faults{Artifacts413: 1, ArtifactsRedirect307: 1})
	if r := upload(t, s, id, j.Token, "", "file", []byte("z")); r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("first upload = %d, want 413", r.code)
	}
	r := upload(t, s, id, j.Token, "?artifact_format=zip", "file", []byte("z"))
	if r.code != http.StatusTemporaryRedirect || r.header.Get("Location") == "" {
		t.Fatalf("second upload = %d Location %q, want 307", r.code, r.header.Get("Location"))
	}
	if r := upload(t, s, id, j.Token, "?artifact_format=zip", "file", []byte("z")); r.code != http.StatusCreated {
		t.Fatalf("third upload = %d, want 201", r.code)
	}
}
