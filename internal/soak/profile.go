package soak

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Environment variables that steer a soak run.
const (
	// ProfileEnv picks the profile: "long" (what `make soak` runs) or, unset or "short", the short one
	// that `go test ./...` runs.
	ProfileEnv = "FLEETRUNNER_SOAK"
	// SeedEnv replays the fault and workload schedule of an earlier run (its seed is printed).
	SeedEnv = "FLEETRUNNER_SOAK_SEED"
)

// Profile bounds a soak run in time and count.
type Profile struct {
	Name string
	// Crashes is how many times the manager is killed with SIGKILL and started again.
	Crashes int
	// Jobs are queued over the whole run, spread evenly over the manager processes' lives.
	Jobs int
	// Each manager process serves for a time drawn between PhaseMin and PhaseMax (plus Outage for the
	// one that lives through GitLab's outage) before it is killed, or, for the last, before the drain.
	PhaseMin, PhaseMax time.Duration
	// Outage is how long GitLab is unreachable, once in the run.
	Outage time.Duration
	// Bound is the most the whole run may take, set-up included; a run past it fails.
	Bound time.Duration
}

// Short runs in `go test ./...` (CI): under four minutes on two cores.
var Short = Profile{Name: "short", Crashes: 3, Jobs: 30, PhaseMin: 12 * time.Second, PhaseMax: 20 * time.Second,
	Outage: 10 * time.Second, Bound: 6 * time.Minute}

// Long is `make soak`: 20 crashes, a few hundred jobs and a minute without GitLab, under 20 minutes.
var Long = Profile{Name: "long", Crashes: 20, Jobs: 300, PhaseMin: 20 * time.Second, PhaseMax: 36 * time.Second,
	Outage: time.Minute, Bound: 20 * time.Minute}

// ProfileFromEnv is the profile ProfileEnv names.
func ProfileFromEnv() (Profile, error) {
	switch v := os.Getenv(ProfileEnv); v {
	case "", Short.Name:
		return Short, nil
	case Long.Name:
		return Long, nil
	default:
		return Profile{}, fmt.Errorf("%s=%q: want %q or %q", ProfileEnv, v, Short.Name, Long.Name)
	}
}

// SeedFromEnv is SeedEnv's seed, or one from the clock when it is unset.
func SeedFromEnv() (uint64, error) {
	v := os.Getenv(SeedEnv)
	if v == "" {
		return uint64(time.Now().UnixNano()), nil
	}
	seed, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want an unsigned integer: %w", SeedEnv, v, err)
	}
	return seed, nil
}
