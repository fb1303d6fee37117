package state

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

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
	const url = "https://gitlab.example.com"
	tests := []struct {
		name   string
		dir    string
		runner Runner
		want   string
	}{
		{name: "runner id, default dir beside config", dir: "/etc/fr/.taskscaler", runner: runner(7, url, "r", "abcdefgh"),
			want: "/etc/fr/.taskscaler/runner-7-" + digest(url)[:8] + "/state.json"},
		{name: "custom dir", dir: "/var/lib/fr", runner: runner(7, url, "r", "xyz"),
			want: "/var/lib/fr/runner-7-" + digest(url)[:8] + "/state.json"},
		{name: "no id: url and name", dir: "/etc/fr/.taskscaler", runner: runner(0, url, "r", "abcdefgh"),
			want: "/etc/fr/.taskscaler/runner-" + digest(url + "\nr")[:16] + "/state.json"},
		{name: "no id, no name: short token", dir: "/etc/fr/.taskscaler", runner: runner(0, url, "", "abcdefgh"),
			want: "/etc/fr/.taskscaler/abcdefgh/state.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Path(tt.dir, tt.runner); got != tt.want {
				t.Fatalf("Path = %q; want %q", got, tt.want)
			}
		})
	}
}

func runner(id int64, url, name, shortToken string) Runner {
	return Runner{ID: id, URL: url, Name: name, ShortToken: shortToken}
}

// TestPathSurvivesTokenRotation: a rotated token keeps the state file where it was, so the taskscaler
// adopts its instances instead of starting over.
func TestPathSurvivesTokenRotation(t *testing.T) {
	for _, id := range []int64{0, 42} {
		before := runner(id, "https://gitlab.example.com/", "autoscaled", "firsttok")
		after := before
		after.ShortToken = "secondto"
		p1, p2 := Path("/etc/fr/.taskscaler", before), Path("/etc/fr/.taskscaler", after)
		if p1 != p2 {
			t.Errorf("id %d: state path moved with the token: %s -> %s", id, p1, p2)
		}
		// Another GitLab may number its runners the same way; their state must not mix.
		other := before
		other.URL = "https://gitlab.other.example"
		if p3 := Path("/etc/fr/.taskscaler", other); p3 == p1 {
			t.Errorf("id %d: runners of two GitLab instances share %s", id, p1)
		}
	}
}

func TestMigrateLegacy(t *testing.T) {
	r := runner(42, "https://gitlab.example.com", "autoscaled", "abcdefgh")
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
			dir := filepath.Join(t.TempDir(), ".taskscaler")
			legacyPath := filepath.Join(dir, "abcdefgh", "state.json")
			stablePath := Path(dir, r)
			if tt.legacy {
				write(legacyPath, "legacy")
			}
			if tt.stable {
				write(stablePath, "stable")
			}
			moved, err := MigrateLegacy(dir, r)
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
}
