package gitlab

import (
	"maps"
	"runtime"

	"gitlab.com/fleetrunner/fleetrunner/common/version"
)

// VersionInfo is the runner `info` object (spec §1.5). GitLab compares Features with a job's needs,
// so it must only claim what fleetrunner implements.
type VersionInfo struct {
	Name         string            `json:"name,omitempty"`
	Version      string            `json:"version,omitempty"`
	Revision     string            `json:"revision,omitempty"`
	Platform     string            `json:"platform,omitempty"`
	Architecture string            `json:"architecture,omitempty"`
	Executor     string            `json:"executor,omitempty"`
	Shell        string            `json:"shell,omitempty"`
	Features     map[string]bool   `json:"features"`
	Config       map[string]string `json:"config,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// networkFeatures are implemented by this client and common/trace, whatever the executor.
var networkFeatures = []string{"trace_reset", "trace_checksum", "trace_size", "cancelable", "cancel_gracefully"}

// NewVersionInfo builds the info object for an executor: its own features plus the network-level ones.
// two_phase_job_commit is never claimed: the manager accepts a job by running it, not by a PUT.
func NewVersionInfo(executor, shell string, executorFeatures map[string]bool) VersionInfo {
	f := make(map[string]bool, len(executorFeatures)+len(networkFeatures))
	maps.Copy(f, executorFeatures)
	for _, n := range networkFeatures {
		f[n] = true
	}
	delete(f, "two_phase_job_commit")
	return VersionInfo{
		Name:         "fleetrunner",
		Version:      version.Version,
		Revision:     version.Rev(),
		Platform:     runtime.GOOS,
		Architecture: runtime.GOARCH,
		Executor:     executor,
		Shell:        shell,
		Features:     f,
	}
}

// infoJSON never sends a null features map (GitLab expects the key).
func (c *Client) infoJSON() VersionInfo {
	i := c.info
	if i.Features == nil {
		i.Features = map[string]bool{}
	}
	return i
}
