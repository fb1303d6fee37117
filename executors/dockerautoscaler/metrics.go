package dockerautoscaler

import (
	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// Collectors exports the taskscaler's slots, instances and counters under upstream's fleeting metric
// names (metrics.CollectorProvider). The manager adds the runner labels.
func (p *Provider) Collectors() []prometheus.Collector {
	return []prometheus.Collector{&statsCollector{
		stats:       p.ts.Stats,
		maxTasks:    p.runner.Autoscaler.GetCapacityPerInstance(),
		maxUseCount: p.runner.Autoscaler.MaxUseCount,
		maxSize:     p.info.MaxSize,
	}}
}

var (
	descTasks = prometheus.NewDesc("fleeting_taskscaler_tasks",
		"Job slots by state.", []string{"state"}, nil)
	descInstances = prometheus.NewDesc("fleeting_provisioner_instances",
		"Instances by state.", []string{"state"}, nil)
	descDesired = prometheus.NewDesc("fleeting_taskscaler_desired_instances",
		"Instances the last scaling pass aimed for.", nil, nil)
	descMaxTasks = prometheus.NewDesc("fleeting_taskscaler_max_tasks_per_instance",
		"capacity_per_instance.", nil, nil)
	descMaxUse = prometheus.NewDesc("fleeting_taskscaler_max_use_count_per_instance",
		"max_use_count (0: unlimited).", nil, nil)
	descMaxInstances = prometheus.NewDesc("fleeting_provisioner_max_instances",
		"Largest group size the plugin allows.", nil, nil)
	descOperations = prometheus.NewDesc("fleeting_provisioner_instance_operations_total",
		"Instance lifecycle events.", []string{"operation"}, nil)
	descFailures = prometheus.NewDesc("fleeting_taskscaler_failures_total",
		"Failed scaling and instance operations, by kind.", []string{"kind"}, nil)
	descReadiness = prometheus.NewDesc("fleeting_taskscaler_task_instance_readiness_seconds_total",
		"Sum of creation-to-ready times of ready instances (divide by the ready operations).", nil, nil)
)

// statsCollector reads one Stats snapshot per scrape, so all values of a scrape agree.
type statsCollector struct {
	stats       func() taskscaler.Stats
	maxTasks    int
	maxUseCount int
	maxSize     int
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTasks, descInstances, descDesired, descMaxTasks, descMaxUse,
		descMaxInstances, descOperations, descFailures, descReadiness} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descTasks, s.Slots.Idle, "idle")
	gauge(descTasks, s.Slots.Reserved, "reserved")
	gauge(descTasks, s.Slots.Acquired, "acquired")
	gauge(descTasks, s.Slots.Pending, "pending")
	gauge(descTasks, s.Slots.Unavailable, "unavailable")

	gauge(descInstances, s.Instances.Requested, "requested")
	gauge(descInstances, s.Instances.Creating, "creating")
	gauge(descInstances, s.Instances.Readying, "readying")
	gauge(descInstances, s.Instances.Ready, "running")
	gauge(descInstances, s.Instances.Draining, "draining")
	gauge(descInstances, s.Instances.Removing, "deleting")

	gauge(descDesired, s.Desired)
	gauge(descMaxTasks, c.maxTasks)
	gauge(descMaxUse, c.maxUseCount)
	gauge(descMaxInstances, c.maxSize)

	k := s.Counters
	counter(descOperations, k.InstancesRequested, "requested")
	counter(descOperations, k.InstancesCreated, "created")
	counter(descOperations, k.InstancesReady, "ready")
	counter(descOperations, k.InstancesRemoved, "removed")
	counter(descOperations, k.InstancesAdopted, "adopted")
	counter(descOperations, k.UnknownRemoved, "unknown_removed")
	counter(descOperations, k.UnexpectedRemovals, "unexpectedly_removed")
	counter(descOperations, k.UnhealthyRemoved, "unhealthy_removed")
	counter(descOperations, k.MarkedUnhealthy, "marked_unhealthy")

	counter(descFailures, k.ReadyFailures, "ready_command")
	counter(descFailures, k.IncreaseFailures, "increase")
	counter(descFailures, k.DecreaseFailures, "decrease")
	counter(descFailures, k.UpdateFailures, "update")
	counter(descFailures, k.HealthCheckFailures, "health_check")

	ch <- prometheus.MustNewConstMetric(descReadiness, prometheus.CounterValue, k.ReadyDuration.Seconds())
}
