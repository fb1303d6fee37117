package config

import (
	"strings"
	"testing"
)

func TestUnknownKeySuggestsTheClosestKnownKey(t *testing.T) {
	cases := []struct {
		name, content, key, suggest string
	}{
		{"typo at the top", strings.Replace(validDA, "concurrent = 2", "concurent = 2", 1), "concurent", "concurrent"},
		{"typo in another case", strings.Replace(validDA, "concurrent = 2", "Concurent = 2", 1), "Concurent", "concurrent"},
		{"swapped letters", replace(`image = "alpine"`, "image = \"alpine\"\n    imgae = \"typo\""), "runners[0].docker.imgae", "image"},
		{"upstream's camel case for a policy key", replace("[[runners.autoscaler.policy]]", "[[runners.autoscaler.policy]]\n      IdleCount = 3"),
			"runners[0].autoscaler.policy[0].IdleCount", "idle_count"},
		{"dash for underscore", strings.Replace(validDA, "concurrent = 2", "concurrent = 2\ncheck-interval = 3", 1), "check-interval", "check_interval"},
		{"misspelt table, named at its leaves", replace("  [runners.docker]", "  [runners.dokcer]\n    privileged = true\n  [runners.docker]"),
			"runners[0].dokcer.privileged", "docker"},
		{"nothing close", replace("  [runners.docker]", "  colour = \"blue\"\n  [runners.docker]"), "runners[0].colour", ""},
		{"nothing close to a long key", strings.Replace(validDA, "concurrent = 2", "concurrent = 2\nmaximum_parallelism = 4", 1), "maximum_parallelism", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, warns, err := Parse([]byte(c.content))
			if err != nil {
				t.Fatal(err)
			}
			var found *Warning
			for i := range warns {
				if warns[i].Key == c.key {
					found = &warns[i]
				}
			}
			if found == nil {
				t.Fatalf("no warning for %s in %v", c.key, warns)
			}
			if !found.Unknown {
				t.Errorf("warning %q is not marked as an unknown key", found)
			}
			want := "did you mean `" + c.suggest + "`?"
			if c.suggest == "" {
				if strings.Contains(found.Message, "did you mean") {
					t.Errorf("message %q suggests a key, want none", found.Message)
				}
				return
			}
			if !strings.Contains(found.Message, want) {
				t.Errorf("message %q, want it to say %q", found.Message, want)
			}
		})
	}
}

// The decoder matches keys case-insensitively, so a key that differs only in case is read, not warned.
func TestKeyInOtherCaseIsReadNotWarned(t *testing.T) {
	cfg, warns, err := Parse([]byte(strings.Replace(validDA, "concurrent = 2", "Concurrent = 5", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 || cfg.Concurrent != 5 {
		t.Fatalf("concurrent = %d, warnings %v; want 5 and none", cfg.Concurrent, warns)
	}
}

// Keys upstream reads and fleetrunner does not keep their own explanation, not a guess at a near key.
func TestUpstreamKeysKeepTheirMessage(t *testing.T) {
	_, warns, err := Parse([]byte(replace("  [runners.docker]", "  graceful_kill_timeout = \"10m\"\n  [runners.docker]")))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || !strings.Contains(warns[0].Message, "does not implement") || strings.Contains(warns[0].Message, "did you mean") {
		t.Fatalf("warnings %v, want one saying fleetrunner does not implement it", warns)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"image", "image", 0}, {"imgae", "image", 1}, {"concurent", "concurrent", 1},
		{"kitten", "sitting", 3}, {"ca", "abc", 3},
	} {
		if got := editDistance(c.a, c.b); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
