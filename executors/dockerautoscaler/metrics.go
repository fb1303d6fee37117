package dockerautoscaler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// Collectors exports the taskscaler's slots, instances and counters under upstream's fleeting metric
// names, the instance lifecycle and slot wait histograms, and the plugin's API calls when it counts
// them (metrics.CollectorProvider). The manager adds the runner labels.
func (p *Provider) Collectors() []prometheus.Collector {
	cs := []prometheus.Collector{&statsCollector{
		stats:       p.ts.Stats,
		maxTasks:    p.runner.Autoscaler.GetCapacityPerInstance(),
		maxUseCount: p.runner.Autoscaler.MaxUseCount,
		maxSize:     p.info.MaxSize,
	}}
	cs = append(cs, p.metrics.collectors()...)
	if c, ok := p.group.(fleeting.APICallCounter); ok {
		cs = append(cs, apiCallsCollector{c})
	}
	if _, ok := p.group.(fleeting.OutdatedReporter); ok {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetrunner_outdated_instances",
			Help: "Instances the plugin last reported as launched from an older configuration (launch template version): a roll-out is done when it reaches 0.",
		}, func() float64 { return float64(p.rollout.outdated.Load()) }))
	}
	return cs
}

// slotWaitBuckets: a job takes an idle slot in well under a second, waits for a new instance for
// tens of seconds to minutes, and gives up at instance_acquire_timeout (15 minutes by default).
var slotWaitBuckets = []float64{0.1, 0.5, 1, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800}

// fleetMetrics are the provider's histograms: the taskscaler observes the instance lifecycle into them
// (taskscaler.Options.Observe) and Run the jobs' wait for a slot.
type fleetMetrics struct {
	lifecycle map[taskscaler.Measure]prometheus.Histogram
	slotWait  prometheus.Histogram
}

func newFleetMetrics(b Buckets) *fleetMetrics {
	h := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	}
	return &fleetMetrics{
		lifecycle: map[taskscaler.Measure]prometheus.Histogram{
			taskscaler.MeasureCreation: h("fleeting_provisioner_instance_creation_time_seconds",
				"Time from the plugin accepting a new instance to the instance appearing in the group.", b.Creation),
			taskscaler.MeasureIsRunning: h("fleeting_provisioner_instance_is_running_time_seconds",
				"Time from an instance appearing in the group to the plugin reporting it running.", b.IsRunning),
			taskscaler.MeasureReadiness: h("fleeting_taskscaler_task_instance_readiness_time_seconds",
				"Time from an instance running to its slots being ready (connection, Docker Engine, instance_ready_command).", b.Readiness),
			taskscaler.MeasureDeletion: h("fleeting_provisioner_instance_deletion_time_seconds",
				"Time from asking the plugin to remove an instance to the instance leaving the group.", b.Deletion),
			taskscaler.MeasureLife: h("fleeting_provisioner_instance_life_duration_seconds",
				"Time from an instance appearing in the group to its leaving it.", b.LifeDuration),
		},
		slotWait: h("fleetrunner_job_slot_wait_seconds",
			"Time from a job being received to its slot on an instance being acquired.", slotWaitBuckets),
	}
}

// observe implements taskscaler.Options.Observe.
func (m *fleetMetrics) observe(k taskscaler.Measure, d time.Duration) {
	if h, ok := m.lifecycle[k]; ok {
		h.Observe(d.Seconds())
	}
}

func (m *fleetMetrics) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{m.slotWait}
	for _, h := range m.lifecycle {
		cs = append(cs, h)
	}
	return cs
}

var descAPICalls = prometheus.NewDesc("fleetrunner_cloud_api_requests_total",
	"Calls of the fleeting plugin to its cloud's API, attempts counted one by one; outcome is success, error or throttled.",
	[]string{"service", "operation", "outcome"}, nil)

// apiCallsCollector exports a plugin's own API call counts (fleeting.APICallCounter).
type apiCallsCollector struct{ calls fleeting.APICallCounter }

func (apiCallsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descAPICalls }

func (c apiCallsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.calls.APICalls() {
		ch <- prometheus.MustNewConstMetric(descAPICalls, prometheus.CounterValue, float64(n.Count), n.Service, n.Operation, n.Outcome)
	}
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
	descInstanceSeconds = prometheus.NewDesc("fleetrunner_instance_seconds_total",
		"Instance time by state (booting, idle, busy, draining, removing), summed over instances: what the fleet costs, and how much of it idles.",
		[]string{"state"}, nil)
	descScale = prometheus.NewDesc("fleetrunner_scale_operations_total",
		"Instances the taskscaler asked the plugin to add (increase) or remove (decrease), and how many the plugin accepted.",
		[]string{"operation", "result"}, nil)
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
		descMaxInstances, descOperations, descFailures, descReadiness, descInstanceSeconds, descScale} {
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
	counter(descOperations, k.DrainRequested, "drained")

	counter(descFailures, k.ReadyFailures, "ready_command")
	counter(descFailures, k.IncreaseFailures, "increase")
	counter(descFailures, k.DecreaseFailures, "decrease")
	counter(descFailures, k.UpdateFailures, "update")
	counter(descFailures, k.HealthCheckFailures, "health_check")

	ch <- prometheus.MustNewConstMetric(descReadiness, prometheus.CounterValue, k.ReadyDuration.Seconds())

	seconds := func(d time.Duration, state string) {
		ch <- prometheus.MustNewConstMetric(descInstanceSeconds, prometheus.CounterValue, d.Seconds(), state)
	}
	it := k.InstanceTime
	seconds(it.Booting, "booting")
	seconds(it.Idle, "idle")
	seconds(it.Busy, "busy")
	seconds(it.Draining, "draining")
	seconds(it.Removing, "removing")

	counter(descScale, k.IncreaseAsked, "increase", "requested")
	counter(descScale, k.InstancesRequested, "increase", "accepted")
	counter(descScale, k.DecreaseAsked, "decrease", "requested")
	counter(descScale, k.DecreaseAccepted, "decrease", "accepted")
}
