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
	tests := []struct {
		name    string
		ss      config.StateStorage
		token   string
		want    string
		enabled bool
	}{
		{name: "on by default beside config", token: "glrt-abcdefghijkl", want: "/etc/fr/.taskscaler/abcdefgh/state.json", enabled: true},
		{name: "custom dir", ss: config.StateStorage{Dir: "/var/lib/fr"}, token: "xyz", want: "/var/lib/fr/xyz/state.json", enabled: true},
		{name: "explicitly off", ss: config.StateStorage{Enabled: &off}, token: "xyz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, enabled := Path(tt.ss, "/etc/fr", tt.token)
			if got != tt.want || enabled != tt.enabled {
				t.Fatalf("Path = %q, %v; want %q, %v", got, enabled, tt.want, tt.enabled)
			}
		})
	}
}
