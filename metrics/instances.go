package metrics

import (
	"cmp"
	"encoding/json"
	"io"
	"slices"

	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// Instance is one autoscaled instance as /debug/autoscaler/instances shows it.
type Instance = executors.AutoscaledInstance

// InstanceLister is implemented by executor providers that run jobs on autoscaled instances (the
// docker-autoscaler). Their instances are served on /debug/autoscaler/instances while the provider
// runs.
type InstanceLister = executors.InstanceLister

// RunnerInstances is one runner's instances in /debug/autoscaler/instances. The runner is named by
// its short token, as the metric labels name it; the token itself is never shown.
type RunnerInstances struct {
	Runner     string     `json:"runner"`
	RunnerName string     `json:"runner_name"`
	SystemID   string     `json:"system_id"`
	Instances  []Instance `json:"instances"`
}

type lister struct {
	runner manager.RunnerInfo
	list   InstanceLister
}

// addLister remembers p when it lists instances.
func (m *Metrics) addLister(r manager.RunnerInfo, p executors.Provider) {
	il, ok := p.(InstanceLister)
	if !ok {
		return
	}
	m.mu.Lock()
	m.listers[p] = lister{runner: r, list: il}
	m.mu.Unlock()
}

func (m *Metrics) removeLister(p executors.Provider) {
	m.mu.Lock()
	delete(m.listers, p)
	m.mu.Unlock()
}

// writeInstances writes every listing provider's instances as a JSON array, ordered by runner.
func (m *Metrics) writeInstances(w io.Writer) error {
	m.mu.Lock()
	listers := make([]lister, 0, len(m.listers))
	for _, l := range m.listers {
		listers = append(listers, l)
	}
	m.mu.Unlock()
	slices.SortFunc(listers, func(a, b lister) int {
		return cmp.Or(cmp.Compare(a.runner.Runner, b.runner.Runner), cmp.Compare(a.runner.Name, b.runner.Name))
	})
	out := make([]RunnerInstances, 0, len(listers))
	for _, l := range listers {
		instances := l.list.AutoscalerInstances()
		if instances == nil {
			instances = []Instance{}
		}
		out = append(out, RunnerInstances{
			Runner: l.runner.Runner, RunnerName: l.runner.Name, SystemID: l.runner.SystemID, Instances: instances,
		})
	}
	return json.NewEncoder(w).Encode(out)
}
