// Package archtest holds the arrows of docs/architecture.md as data (Rules, Rigs, Forbidden) and a
// checker that holds the module's import graph to them. Its tests run the checker on the real tree
// through `go list`, and on a small made-up graph with a wrong arrow so that the checker is seen to fail.
package archtest

// Rule says which of the module's packages the packages matching From may import. Imports from outside
// the module (the standard library, third-party modules) are not its business.
//
// A pattern is a path relative to the module root: "p" is p alone, "p/..." is p and every package below
// it, "..." is every package. A package follows the rule whose From names it most closely: the longest
// path wins, and "p" wins over "p/...".
type Rule struct {
	From string
	// Allow is what the package's own files may import; a package may always import itself.
	Allow []string
	// TestAllow is what its _test.go files may import on top of Allow and the Rigs.
	TestAllow []string
	// Why is printed with every import this rule refuses.
	Why string
}

// Forbidden may be imported by nobody, test files included.
var Forbidden = []string{"cmd/..."}

// Rigs are the simulators and test helpers. Any package's test files may import them: a real world is
// how this project tests, and these packages exist so that the tests, the demo and the benchmarks share
// one. Rigs outside internal/ still obey their own rule in their own files.
var Rigs = []string{
	"internal/testenv",
	"internal/testimage",
	"internal/testrig",
	"common/gitlab/gitlabsim",
	"common/fleeting/fleetingtest",
	"fleeting-plugins/local",
	"fleeting-plugins/aws/awssim",
	"executors/docker/helper/gittest",
}

// Rules is the arrow table. A package that no rule names is reported, so a new directory gets a row.
var Rules = []Rule{
	{From: "cmd/...", Allow: []string{"..."},
		Why: "cmd wires everything together"},
	{From: "internal/...", Allow: []string{"..."},
		Why: "test rigs, end-to-end tests, the demo and the soak drive the whole program"},

	{From: "manager/...", Allow: []string{"manager/...", "executors", "common/..."},
		Why: "the manager drives executors through their interface and the shared leaves; it never names a concrete executor"},
	{From: "metrics/...", Allow: []string{"metrics/...", "manager", "executors", "common/..."},
		Why: "metrics observe the manager and the executors' interface; only cmd and rigs import the top of the program"},

	{From: "status/...", Allow: []string{"status/...", "manager", "executors", "common/..."},
		Why: "the status page observes the manager and asks the executors' interface for the fleet; only cmd and rigs import the top of the program"},

	{From: "executors", Allow: []string{"common/..."},
		Why: "the Executor interface and its factory sit on the shared leaves only"},
	{From: "executors/docker/...", Allow: []string{"executors/docker/...", "executors", "common/..."},
		Why: "the docker executor runs stages against a Docker API; it knows nothing of autoscaling, the taskscaler or plugins"},
	{From: "executors/docker/helper/gittest", Allow: []string{"internal/testenv"},
		Why: "a test rig for the helper's git code; it only asks testenv whether git is there"},
	{From: "executors/dockerautoscaler/...",
		Allow: []string{"executors/dockerautoscaler/...", "executors", "executors/docker", "taskscaler/...", "common/..."},
		// Its tests hand it plugins as cmd does: the local rig, and static for a stock sshd.
		TestAllow: []string{"fleeting-plugins/static"},
		Why:       "the autoscaler executor is glue below the manager (acquire, connect, run the docker executor, release); cmd hands it the plugins, so it never names one"},

	{From: "taskscaler/...", Allow: []string{"taskscaler/...", "common/fleeting", "common/logging"},
		Why: "the taskscaler works on the fleeting contract with its own option and policy types; it reads no config and names no plugin"},

	{From: "taskscaler/state/dynamostate", Allow: []string{"taskscaler/state"},
		// Its tests time leases with the fake clock and fill snapshots with connect info.
		TestAllow: []string{"taskscaler/clock", "common/fleeting"},
		Why:       "the DynamoDB state store implements the state's Store and Lease for manager HA; it talks to AWS, so it stays a leaf that only the code choosing the store names"},

	{From: "fleeting-plugins/aws/...", Allow: []string{"fleeting-plugins/aws/...", "common/fleeting", "common/logging"},
		TestAllow: []string{"common/fleeting/..."},
		Why:       "a plugin implements the fleeting contract and knows nothing else of fleetrunner"},
	{From: "fleeting-plugins/aws/awssim", Allow: []string{"fleeting-plugins/local", "common/logging"},
		Why: "awssim is an AWS API simulator whose instances are the local plugin's sshd hosts; it implements no contract"},
	{From: "fleeting-plugins/static/...", Allow: []string{"fleeting-plugins/static/...", "common/fleeting", "common/logging"},
		TestAllow: []string{"common/fleeting/..."},
		Why:       "a plugin implements the fleeting contract and knows nothing else of fleetrunner"},
	{From: "fleeting-plugins/local/...", Allow: []string{"fleeting-plugins/local/...", "common/fleeting", "common/logging"},
		TestAllow: []string{"common/fleeting/..."},
		Why:       "a plugin implements the fleeting contract and knows nothing else of fleetrunner"},
	{From: "fleeting-plugins/builtin/...",
		Allow: []string{"fleeting-plugins/builtin/...", "fleeting-plugins/aws", "fleeting-plugins/static", "fleeting-plugins/local", "common/fleeting", "common/logging"},
		Why:   "builtin is the registry of compiled-in plugins that cmd hands to the executor"},

	{From: "common/...", Allow: []string{"common/..."},
		Why: "common holds the shared leaves: never the executors, the manager, metrics, the taskscaler or a plugin"},
	{From: "common/s3cache", Allow: []string{"common/config"},
		Why: "the S3 cache signer holds cloud credentials in the manager and hands out presigned URLs; it reads the config and nothing else of ours"},
	{From: "common/fleeting/...", Allow: []string{"common/fleeting/...", "common/logging"},
		Why: "the fleeting contract and its SSH connector are imported by the taskscaler and the plugins, so they must not bring config or jobs with them"},
	{From: "common/fleeting", Allow: []string{"common/logging"},
		Why: "the fleeting contract is all a plugin and the taskscaler see of fleetrunner"},
	{From: "common/logging", Allow: nil,
		Why: "the fallback logger is imported from every layer, so it imports nothing of ours"},
}
