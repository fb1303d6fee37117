// Package deploycheck holds the tests of the files under deploy/: the Grafana dashboard
// (deploy/grafana) and the Prometheus alerting rules (deploy/prometheus) may only name metrics the
// binary exports, and the rules must pass promtool; the CloudFormation kit (deploy/aws) may only name
// what it declares, builds its group from its instance type, spot and warm pool parameters, and grants
// the manager the policy in deploy/aws/iam-policy.json; the kit's state table
// (deploy/aws/fleetrunner-state-table.yaml) must be the table taskscaler/state/dynamostate uses, grant
// exactly the actions it calls, pass cfn-lint, and deploy on moto to a table the package works with.
package deploycheck
