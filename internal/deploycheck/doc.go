// Package deploycheck holds the tests of the monitoring files under deploy/: the Grafana dashboard
// (deploy/grafana) and the Prometheus alerting rules (deploy/prometheus) may only name metrics the
// binary exports, and the rules must pass promtool.
package deploycheck
