// Package metrics exports fleetrunner's Prometheus metrics under upstream gitlab-runner's names
// (gitlab_runner_*, spec upstream-runner.md §7) and serves them, with the debug endpoints, on
// listen_address. It learns what the manager does as its manager.Observer, so the manager itself
// knows nothing of Prometheus.
package metrics

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/version"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// CollectorProvider is implemented by executor providers that export metrics of their own (the
// docker-autoscaler's taskscaler and fleeting counts). Their collectors are registered when the
// provider starts, with the const labels runner, runner_name and system_id added, so the collectors
// must not carry those labels themselves.
type CollectorProvider interface {
	Collectors() []prometheus.Collector
}

// Label names shared by the runner metrics.
const (
	labelRunner     = "runner"
	labelRunnerName = "runner_name"
	labelSystemID   = "system_id"
)

// Buckets of the duration histograms, in seconds: jobs run for minutes to hours, and wait in GitLab's
// queue for seconds to an hour.
var (
	jobDurationBuckets   = []float64{30, 60, 300, 600, 1800, 3600, 7200, 10800, 18000, 36000}
	queueDurationBuckets = []float64{1, 3, 10, 30, 60, 120, 300, 900, 1800, 3600}
)

// Metrics holds fleetrunner's registry and implements manager.Observer. It is safe for concurrent use.
type Metrics struct {
	log logrus.FieldLogger
	reg *prometheus.Registry

	concurrent         prometheus.Gauge
	limit              *prometheus.GaugeVec
	jobsTotal          *prometheus.CounterVec
	failedJobs         *prometheus.CounterVec
	jobDuration        *prometheus.HistogramVec
	queueDuration      *prometheus.HistogramVec
	queuingExceeded    *prometheus.CounterVec
	requestConcurrency *prometheus.GaugeVec
	standby            *prometheus.GaugeVec
	leaseSince         *prometheus.GaugeVec
	apiStatuses        *prometheus.CounterVec
	errors             *prometheus.CounterVec
	processingFailures *prometheus.CounterVec

	serving atomic.Bool

	mu   sync.Mutex
	jobs map[*runningJob]struct{}
	// providers holds the registerer each provider's collectors went to, to take them out again.
	providers map[executors.Provider]providerCollectors
	// listers are the running providers that list their instances (InstanceLister).
	listers map[executors.Provider]lister
}

type providerCollectors struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector
}

var _ manager.Observer = (*Metrics)(nil)

// New builds the registry with the runner metrics, the Go and process collectors and
// gitlab_runner_version_info. log receives problems registering executor collectors.
func New(log logrus.FieldLogger) *Metrics {
	m := &Metrics{
		log:       log,
		reg:       prometheus.NewRegistry(),
		jobs:      map[*runningJob]struct{}{},
		providers: map[executors.Provider]providerCollectors{},
		listers:   map[executors.Provider]lister{},
	}
	runner := []string{labelRunner, labelSystemID}
	m.concurrent = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gitlab_runner_concurrent", Help: "The current value of concurrent setting",
	})
	m.limit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gitlab_runner_limit", Help: "The current value of limit setting",
	}, []string{labelRunner, labelRunnerName, labelSystemID})
	m.jobsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitlab_runner_jobs_total", Help: "Total number of handled jobs",
	}, runner)
	m.failedJobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitlab_runner_failed_jobs_total", Help: "Total number of failed jobs",
	}, []string{"failure_reason", labelRunner, labelSystemID})
	m.jobDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "gitlab_runner_job_duration_seconds", Help: "Histogram of job durations",
		Buckets: jobDurationBuckets,
	}, runner)
	m.queueDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "gitlab_runner_job_queue_duration_seconds", Help: "Histogram of how long jobs waited in GitLab's queue",
		Buckets: queueDurationBuckets,
	}, runner)
	// Counts the jobs whose queue time passed the threshold of the [runners.monitoring]
	// job_queuing_durations entry in force when they were received; the manager decides that
	// (manager.JobInfo.QueuingExceeded). Without that table the counter stays at 0, as upstream's does.
	m.queuingExceeded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitlab_runner_acceptable_job_queuing_duration_exceeded_total",
		Help: "Counts how often jobs exceed the configured queuing time threshold",
	}, runner)
	m.requestConcurrency = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gitlab_runner_request_concurrency", Help: "The current number of concurrent requests for a new job",
	}, runner)
	m.standby = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetrunner_runner_standby",
		Help: "1 while another manager manages the runner's fleet and this one waits to take it over (state_storage backend dynamodb), else 0",
	}, runner)
	m.leaseSince = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "fleetrunner_runner_lease_acquired_timestamp_seconds",
		Help: "When the manager that manages the runner's fleet under its lease took it, this one or, on standby, the other (Unix time; the lease's age is time() minus this)",
	}, runner)
	m.apiStatuses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitlab_runner_api_request_statuses_total", Help: "The total number of API requests, partitioned by runner, endpoint and status",
	}, []string{labelRunner, "endpoint", "status"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitlab_runner_errors_total", Help: "The number of caught errors",
	}, []string{"level"})
	m.processingFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gitlab_runner_worker_processing_failures_total", Help: "The number of failures while processing a job request",
	}, []string{"failure_type", labelRunner, labelRunnerName, labelSystemID})
	versionInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gitlab_runner_version_info", Help: "A metric with a constant '1' value labeled by different build stats fields",
		ConstLabels: prometheus.Labels{
			"name": "fleetrunner", "version": version.Version, "revision": version.Rev(),
			"go_version": runtime.Version(), "os": runtime.GOOS, "architecture": runtime.GOARCH,
		},
	})
	versionInfo.Set(1)
	// Both levels exist from the start, so rate() works before the first warning.
	for _, l := range countedLevels {
		m.errors.WithLabelValues(l.String())
	}

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versionInfo, m.concurrent, m.limit, m.jobsTotal, m.failedJobs, m.jobDuration, m.queueDuration, m.queuingExceeded,
		m.requestConcurrency, m.standby, m.leaseSince, m.apiStatuses, m.errors, m.processingFailures,
		jobsCollector{m},
	)
	return m
}

// Registry is the registry /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Serving implements manager.Observer; /-/health answers 200 while it is true.
func (m *Metrics) Serving(on bool) { m.serving.Store(on) }

// Configured implements manager.Observer.
func (m *Metrics) Configured(concurrent int, runners []manager.RunnerInfo) {
	m.concurrent.Set(float64(concurrent))
	// Runners that left the configuration leave the metric too.
	m.limit.Reset()
	for _, r := range runners {
		m.limit.WithLabelValues(r.Runner, r.Name, r.SystemID).Set(float64(r.Limit))
		// Created at 0 for every runner, so that increase() and alerts see the series.
		m.queuingExceeded.WithLabelValues(r.Runner, r.SystemID)
	}
}

// ProviderStarted implements manager.Observer: a CollectorProvider's collectors are registered with
// the runner's labels, and an InstanceLister's instances are served on /debug/autoscaler/instances. A
// collector that cannot be registered is logged and left out.
func (m *Metrics) ProviderStarted(r manager.RunnerInfo, p executors.Provider) {
	m.addLister(r, p)
	cp, ok := p.(CollectorProvider)
	if !ok {
		return
	}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{
		labelRunner: r.Runner, labelRunnerName: r.Name, labelSystemID: r.SystemID,
	}, m.reg)
	var done []prometheus.Collector
	for _, c := range cp.Collectors() {
		if err := reg.Register(c); err != nil {
			m.log.WithField("runner", r.Runner).WithError(err).Warn("an executor metric is not exported: its collector cannot be registered")
			continue
		}
		done = append(done, c)
	}
	m.mu.Lock()
	m.providers[p] = providerCollectors{reg: reg, collectors: done}
	m.mu.Unlock()
}

// ProviderStopped implements manager.Observer: the provider's collectors and instances are taken out.
func (m *Metrics) ProviderStopped(_ manager.RunnerInfo, p executors.Provider) {
	m.removeLister(p)
	m.mu.Lock()
	pc, ok := m.providers[p]
	delete(m.providers, p)
	m.mu.Unlock()
	if !ok {
		return
	}
	for _, c := range pc.collectors {
		pc.reg.Unregister(c)
	}
}

// RequestStarted implements manager.Observer.
func (m *Metrics) RequestStarted(r manager.RunnerInfo) {
	m.requestConcurrency.WithLabelValues(r.Runner, r.SystemID).Inc()
}

// RunnerPaused implements manager.Observer. Nothing is exported for it: alerts read the job request
// statuses in gitlab_runner_api_request_statuses_total, which say the same without a new series.
func (m *Metrics) RunnerPaused(manager.RunnerInfo, time.Time) {}

// RunnerLease implements manager.Observer.
func (m *Metrics) RunnerLease(r manager.RunnerInfo, l manager.LeaseInfo) {
	v := 0.0
	if l.Standby {
		v = 1
	}
	m.standby.WithLabelValues(r.Runner, r.SystemID).Set(v)
	if !l.Since.IsZero() {
		m.leaseSince.WithLabelValues(r.Runner, r.SystemID).Set(float64(l.Since.UnixNano()) / 1e9)
	}
}

// RequestEnded implements manager.Observer.
func (m *Metrics) RequestEnded(r manager.RunnerInfo, _ int) {
	m.requestConcurrency.WithLabelValues(r.Runner, r.SystemID).Dec()
}

// APIResponse implements manager.Observer. Only answers are counted by status; a request that got
// none (a transport error) is not an API status.
func (m *Metrics) APIResponse(r manager.RunnerInfo, endpoint string, status int) {
	m.apiStatuses.WithLabelValues(r.Runner, endpoint, strconv.Itoa(status)).Inc()
}

// ProcessingFailure implements manager.Observer.
func (m *Metrics) ProcessingFailure(r manager.RunnerInfo, failureType string) {
	m.processingFailures.WithLabelValues(failureType, r.Runner, r.Name, r.SystemID).Inc()
}

// JobStarted implements manager.Observer.
func (m *Metrics) JobStarted(j manager.JobInfo) manager.JobObserver {
	m.queueDuration.WithLabelValues(j.Runner.Runner, j.Runner.SystemID).Observe(j.QueueDuration.Seconds())
	if j.QueuingExceeded {
		m.queuingExceeded.WithLabelValues(j.Runner.Runner, j.Runner.SystemID).Inc()
	}
	rj := &runningJob{m: m, info: j, started: time.Now()}
	m.mu.Lock()
	m.jobs[rj] = struct{}{}
	m.mu.Unlock()
	return rj
}
