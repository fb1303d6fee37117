package state

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

func TestFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	f := NewFile(path)
	if s, err := f.Load(); err != nil || s != nil {
		t.Fatalf("Load of a missing file = %v, %v; want nil, nil", s, err)
	}
	at := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	in := &Snapshot{
		SavedAt: at,
		Instances: []Instance{{
			ID: "i-1", State: "ready", UseCount: 3, CreatedAt: at, ReadyAt: at, IdleSince: at,
			ConnectInfo: &fleeting.ConnectInfo{ID: "i-1", InternalAddr: "127.0.1.4:22",
				ConnectorConfig: fleeting.ConnectorConfig{Username: "ci", Password: "hunter2", Key: []byte("PRIVATE KEY")}},
			Data: map[string][]byte{"hostkey": {1, 2, 3}},
		}},
		Jobs: []Job{{Key: "w1", JobID: 42, InstanceID: "i-1", Data: []byte("blob"), Since: at}},
	}
	if err := f.Save(in); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "hunter2") || strings.Contains(string(raw), "UFJJVkFURSBLRVk") {
		t.Errorf("credentials written to the state file:\n%s", raw)
	}
	if in.Instances[0].ConnectInfo.Password != "hunter2" {
		t.Error("Save modified the caller's snapshot")
	}
	out, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := *in
	want.Version = Version
	want.Instances = []Instance{in.Instances[0]}
	ci := *in.Instances[0].ConnectInfo
	ci.Password, ci.Key = "", nil
	want.Instances[0].ConnectInfo = &ci
	if !reflect.DeepEqual(out, &want) {
		t.Fatalf("Load = %+v\nwant %+v", out, &want)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestFileCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFile(path).Load(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load = %v, want a corrupt-file error", err)
	}
}

func TestPath(t *testing.T) {
	off := false
	const url = "https://gitlab.example.com"
	tests := []struct {
		name    string
		ss      config.StateStorage
		runner  config.RunnerConfig
		want    string
		enabled bool
	}{
		{name: "runner id, default dir beside config", runner: runner(7, url, "r", "glrt-abcdefghijkl"),
			want: "/etc/fr/.taskscaler/runner-7-" + digest(url)[:8] + "/state.json", enabled: true},
		{name: "custom dir", ss: config.StateStorage{Dir: "/var/lib/fr"}, runner: runner(7, url, "r", "xyz"),
			want: "/var/lib/fr/runner-7-" + digest(url)[:8] + "/state.json", enabled: true},
		{name: "no id: url and name", runner: runner(0, url, "r", "glrt-abcdefghijkl"),
			want: "/etc/fr/.taskscaler/runner-" + digest(url + "\nr")[:16] + "/state.json", enabled: true},
		{name: "no id, no name: short token", runner: runner(0, url, "", "glrt-abcdefghijkl"),
			want: "/etc/fr/.taskscaler/abcdefgh/state.json", enabled: true},
		{name: "explicitly off", ss: config.StateStorage{Enabled: &off}, runner: runner(7, url, "r", "xyz")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, enabled := Path(tt.ss, "/etc/fr", &tt.runner)
			if got != tt.want || enabled != tt.enabled {
				t.Fatalf("Path = %q, %v; want %q, %v", got, enabled, tt.want, tt.enabled)
			}
		})
	}
}

func runner(id int64, url, name, token string) config.RunnerConfig {
	return config.RunnerConfig{Name: name, RunnerCredentials: config.RunnerCredentials{ID: id, URL: url, Token: token}}
}

// TestPathSurvivesTokenRotation: a rotated token (new token, obtained and expiry times) keeps the state
// file where it was, so the taskscaler adopts its instances instead of starting over.
func TestPathSurvivesTokenRotation(t *testing.T) {
	for _, id := range []int64{0, 42} {
		before := runner(id, "https://gitlab.example.com/", "autoscaled", "glrt-firsttoken0001")
		before.TokenExpiresAt = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		after := before
		after.Token = "glrt-secondtoken0002"
		after.TokenObtainedAt = time.Date(2024, 12, 20, 0, 0, 0, 0, time.UTC)
		after.TokenExpiresAt = time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)
		p1, _ := Path(config.StateStorage{}, "/etc/fr", &before)
		p2, _ := Path(config.StateStorage{}, "/etc/fr", &after)
		if p1 != p2 {
			t.Errorf("id %d: state path moved with the token: %s -> %s", id, p1, p2)
		}
		// Another GitLab may number its runners the same way; their state must not mix.
		other := before
		other.URL = "https://gitlab.other.example"
		if p3, _ := Path(config.StateStorage{}, "/etc/fr", &other); p3 == p1 {
			t.Errorf("id %d: runners of two GitLab instances share %s", id, p1)
		}
	}
}

func TestMigrateLegacy(t *testing.T) {
	r := runner(42, "https://gitlab.example.com", "autoscaled", "glrt-abcdefghijkl")
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		name      string
		legacy    bool // a state directory named after the short token exists
		stable    bool // the stable one exists
		wantMoved bool
		wantErr   string
		want      string // content of the stable state file afterwards; "" = absent
	}{
		{name: "legacy only: moved", legacy: true, wantMoved: true, want: "legacy"},
		{name: "nothing to move", want: ""},
		{name: "already stable", stable: true, want: "stable"},
		{name: "both: stable wins, legacy named", legacy: true, stable: true, wantErr: "abcdefgh", want: "stable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			configDir := t.TempDir()
			legacyPath := filepath.Join(configDir, ".taskscaler", "abcdefgh", "state.json")
			stablePath, _ := Path(config.StateStorage{}, configDir, &r)
			if tt.legacy {
				write(legacyPath, "legacy")
			}
			if tt.stable {
				write(stablePath, "stable")
			}
			moved, err := MigrateLegacy(config.StateStorage{}, configDir, &r)
			if moved != tt.wantMoved || (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("MigrateLegacy = %v, %v; want %v, error containing %q", moved, err, tt.wantMoved, tt.wantErr)
			}
			if tt.want == "" {
				if _, err := os.Stat(stablePath); !os.IsNotExist(err) {
					t.Errorf("stable state file: %v; want none", err)
				}
				return
			}
			if got := read(stablePath); got != tt.want {
				t.Errorf("stable state file holds %q; want %q", got, tt.want)
			}
			if _, err := os.Stat(legacyPath); tt.wantMoved && !os.IsNotExist(err) {
				t.Errorf("legacy state file still there after the move: %v", err)
			}
		})
	}
	off := false
	if moved, err := MigrateLegacy(config.StateStorage{Enabled: &off}, t.TempDir(), &r); moved || err != nil {
		t.Errorf("with state storage off: %v, %v; want nothing done", moved, err)
	}
}
