package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestSaveRoundTrip(t *testing.T) {
	cfg, _, err := Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Runners[0]
	r.ID = 4711
	r.TokenObtainedAt = time.Date(2024, 5, 14, 9, 21, 33, 0, time.UTC)
	r.TokenExpiresAt = time.Date(2025, 5, 14, 9, 21, 33, 0, time.UTC)
	r.Docker.PullPolicy = StringOrSlice{"if-not-present", "always"}
	interval := 90 * time.Minute
	r.UnhealthyInterval = &interval
	off := false
	r.Autoscaler.StateStorage.Enabled = &off
	r.Autoscaler.ConnectorConfig.Timeout = 10 * time.Minute

	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "config.toml")
	if err := Save(path, cfg); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", info.Mode().Perm())
	}
	got, warns, err := Load(path)
	if err != nil || len(warns) != 0 {
		t.Fatalf("err=%v warnings=%v", err, warns)
	}
	if !reflect.DeepEqual(cfg, got) {
		t.Fatalf("round trip changed the config:\n saved %+v\nloaded %+v", cfg.Runners[0], got.Runners[0])
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestSaveReplacesWithMode0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Save(path, &Config{Concurrent: 3}); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", info.Mode().Perm())
	}
	cfg, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Concurrent != 3 || len(cfg.Runners) != 0 {
		t.Fatalf("reloaded %+v", cfg)
	}
}

// Every corpus file survives Load, Save, Load: same values, same plugin JSON, and a second Save
// writes the same bytes.
func TestCorpusSaveRoundTrip(t *testing.T) {
	for _, f := range corpusFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			first, _, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := Save(path, first); err != nil {
				t.Fatal(err)
			}
			saved1, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			second, _, err := Load(path)
			if err != nil {
				t.Fatalf("saved file does not load: %v\n%s", err, saved1)
			}
			if err := Save(path, second); err != nil {
				t.Fatal(err)
			}
			saved2, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(saved1, saved2) {
				t.Errorf("second Save differs:\n%s\n---\n%s", saved1, saved2)
			}
			for i, r := range first.Runners {
				if r.Autoscaler == nil {
					continue
				}
				a, _ := r.Autoscaler.PluginConfig.JSON()
				b, _ := second.Runners[i].Autoscaler.PluginConfig.JSON()
				if !bytes.Equal(a, b) {
					t.Errorf("runners[%d] plugin JSON changed:\n%s\n%s", i, a, b)
				}
				// TOML inline arrays of tables come back as arrays of tables: same JSON, other Go type.
				r.Autoscaler.PluginConfig, second.Runners[i].Autoscaler.PluginConfig = nil, nil
			}
			// An empty table or array written by the user is not written back: compare values.
			if a, b := semantic(t, first), semantic(t, second); !reflect.DeepEqual(a, b) {
				t.Errorf("values changed:\n%v\n%v", a, b)
			}
		})
	}
}

// semantic is v as generic JSON values without empty tables, arrays and nulls.
func semantic(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var g any
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	var prune func(any) any
	prune = func(x any) any {
		switch y := x.(type) {
		case map[string]any:
			for k, v := range y {
				if v = prune(v); v == nil {
					delete(y, k)
				} else {
					y[k] = v
				}
			}
			if len(y) == 0 {
				return nil
			}
		case []any:
			if len(y) == 0 {
				return nil
			}
			for i := range y {
				y[i] = prune(y[i])
			}
		}
		return x
	}
	return prune(g)
}
