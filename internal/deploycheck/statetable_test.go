package deploycheck_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state/dynamostate"
)

var stateTablePath = filepath.Join("..", "..", "deploy", "aws", "fleetrunner-state-table.yaml")

// stateTemplate is what the checks read of the template. yaml.v3 drops CloudFormation's short tags, so
// !GetAtt Table.Arn reads as "Table.Arn".
type stateTemplate struct {
	Resources struct {
		Table struct {
			Type       string `yaml:"Type"`
			Properties struct {
				AttributeDefinitions []struct {
					AttributeName string `yaml:"AttributeName"`
					AttributeType string `yaml:"AttributeType"`
				} `yaml:"AttributeDefinitions"`
				KeySchema []struct {
					AttributeName string `yaml:"AttributeName"`
					KeyType       string `yaml:"KeyType"`
				} `yaml:"KeySchema"`
				BillingMode                      string `yaml:"BillingMode"`
				PointInTimeRecoverySpecification struct {
					PointInTimeRecoveryEnabled bool `yaml:"PointInTimeRecoveryEnabled"`
				} `yaml:"PointInTimeRecoverySpecification"`
				SSESpecification struct {
					SSEEnabled bool `yaml:"SSEEnabled"`
				} `yaml:"SSESpecification"`
			} `yaml:"Properties"`
		} `yaml:"Table"`
		StatePolicy struct {
			Type       string `yaml:"Type"`
			Properties struct {
				PolicyDocument struct {
					Statement []struct {
						Effect   string   `yaml:"Effect"`
						Action   []string `yaml:"Action"`
						Resource string   `yaml:"Resource"`
					} `yaml:"Statement"`
				} `yaml:"PolicyDocument"`
			} `yaml:"Properties"`
		} `yaml:"StatePolicy"`
	} `yaml:"Resources"`
	Outputs map[string]any `yaml:"Outputs"`
}

// TestStateTableTemplate: the kit's table is the one taskscaler/state/dynamostate reads and writes (a
// string partition key of its name), on demand, with point-in-time recovery and encryption; its policy
// grants exactly the actions the package calls, on that table only; and cfn-lint passes it.
func TestStateTableTemplate(t *testing.T) {
	b, err := os.ReadFile(stateTablePath)
	if err != nil {
		t.Fatal(err)
	}
	var tpl stateTemplate
	if err := yaml.Unmarshal(b, &tpl); err != nil {
		t.Fatalf("%s: %v", stateTablePath, err)
	}
	table := tpl.Resources.Table
	if table.Type != "AWS::DynamoDB::Table" {
		t.Fatalf("Resources.Table is %q, want AWS::DynamoDB::Table", table.Type)
	}
	p := table.Properties
	if len(p.KeySchema) != 1 || p.KeySchema[0].AttributeName != dynamostate.KeyAttribute || p.KeySchema[0].KeyType != "HASH" {
		t.Errorf("KeySchema %+v, want %s as the only (HASH) key", p.KeySchema, dynamostate.KeyAttribute)
	}
	if len(p.AttributeDefinitions) != 1 || p.AttributeDefinitions[0].AttributeName != dynamostate.KeyAttribute || p.AttributeDefinitions[0].AttributeType != "S" {
		t.Errorf("AttributeDefinitions %+v, want %s of type S only", p.AttributeDefinitions, dynamostate.KeyAttribute)
	}
	if p.BillingMode != "PAY_PER_REQUEST" || !p.PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled || !p.SSESpecification.SSEEnabled {
		t.Errorf("table: billing %q, point-in-time recovery %v, encryption %v; want PAY_PER_REQUEST, both on",
			p.BillingMode, p.PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled, p.SSESpecification.SSEEnabled)
	}

	policy := tpl.Resources.StatePolicy
	if policy.Type != "AWS::IAM::ManagedPolicy" {
		t.Fatalf("Resources.StatePolicy is %q, want AWS::IAM::ManagedPolicy", policy.Type)
	}
	var granted []string
	for _, st := range policy.Properties.PolicyDocument.Statement {
		if st.Effect != "Allow" || st.Resource != "Table.Arn" {
			t.Errorf("statement %+v: want Allow on !GetAtt Table.Arn only", st)
		}
		granted = append(granted, st.Action...)
	}
	slices.Sort(granted)
	want := slices.Sorted(slices.Values(dynamostate.IAMActions))
	if !slices.Equal(granted, want) {
		t.Errorf("the policy grants %v; dynamostate calls %v", granted, want)
	}
	for _, out := range []string{"TableName", "StatePolicyArn"} {
		if _, ok := tpl.Outputs[out]; !ok {
			t.Errorf("no output %s", out)
		}
	}

	cfnLint := testenv.RequireCommand(t, "cfn-lint", "pip install cfn-lint")
	if out, err := exec.CommandContext(t.Context(), cfnLint, stateTablePath).CombinedOutput(); err != nil {
		t.Errorf("cfn-lint %s: %v\n%s", stateTablePath, err, out)
	}
}

// TestStateTableDeploysOnMoto deploys the template with CloudFormation on moto (through the AWS CLI, as
// docs/ha.md does) and runs a lease and a state round trip on the table it made. moto's CloudFormation
// ignores PointInTimeRecoverySpecification and SSESpecification; TestStateTableTemplate checks those.
func TestStateTableDeploysOnMoto(t *testing.T) {
	awsCLI := testenv.RequireCommand(t, "aws", "install the AWS CLI (pip install awscli)")
	m := testenv.StartMoto(t)
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "AKIAFLEETRUNNERTEST",
		"AWS_SECRET_ACCESS_KEY":       "fleetrunner-test-secret",
		"AWS_REGION":                  "us-east-1",
		"AWS_DEFAULT_REGION":          "us-east-1",
		"AWS_ENDPOINT_URL":            m.URL,
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
	// The CLI takes an empty AWS_PROFILE for a profile named "": unset, restored by t.Setenv's cleanup.
	for _, k := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	cli := func(args ...string) []byte {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), awsCLI, append(args, "--output", "json")...).Output()
		if err != nil {
			var stderr []byte
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				stderr = ee.Stderr
			}
			t.Fatalf("aws %v: %v\n%s", args, err, stderr)
		}
		return out
	}
	cli("iam", "create-role", "--role-name", "fleetrunner-manager", "--assume-role-policy-document",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)
	cli("cloudformation", "create-stack", "--stack-name", "fleetrunner-state", "--template-body", "file://"+stateTablePath,
		"--capabilities", "CAPABILITY_IAM", "--parameters", "ParameterKey=ManagerRoleName,ParameterValue=fleetrunner-manager")
	// moto creates a stack's resources within the call; the status says whether that went through.
	var stacks struct {
		Stacks []struct {
			StackStatus string
			Outputs     []struct{ OutputKey, OutputValue string }
		}
	}
	if err := json.Unmarshal(cli("cloudformation", "describe-stacks", "--stack-name", "fleetrunner-state"), &stacks); err != nil {
		t.Fatal(err)
	}
	if len(stacks.Stacks) != 1 || stacks.Stacks[0].StackStatus != "CREATE_COMPLETE" {
		t.Fatalf("stack: %+v, want CREATE_COMPLETE", stacks.Stacks)
	}
	outputs := map[string]string{}
	for _, o := range stacks.Stacks[0].Outputs {
		outputs[o.OutputKey] = o.OutputValue
	}
	var attached struct {
		AttachedPolicies []struct{ PolicyArn string }
	}
	if err := json.Unmarshal(cli("iam", "list-attached-role-policies", "--role-name", "fleetrunner-manager"), &attached); err != nil {
		t.Fatal(err)
	}
	if len(attached.AttachedPolicies) != 1 || attached.AttachedPolicies[0].PolicyArn != outputs["StatePolicyArn"] {
		t.Errorf("the manager role has %+v attached, want the StatePolicyArn output %s", attached.AttachedPolicies, outputs["StatePolicyArn"])
	}

	tbl, err := dynamostate.New(t.Context(), dynamostate.Config{Table: outputs["TableName"], Region: outputs["Region"], Endpoint: m.URL})
	if err != nil {
		t.Fatal(err)
	}
	me := state.Holder{SystemID: "s_0123456789ab", Host: "manager", PID: 1}
	lease := tbl.Lease(state.Key(state.Runner{ID: 1, URL: "https://gitlab.example.com"}), me, 15*time.Second)
	if tok, err := lease.Acquire(t.Context()); err != nil || tok != 1 {
		t.Fatalf("Acquire on the kit's table = %d, %v; want token 1", tok, err)
	}
	want := &state.Snapshot{Instances: []state.Instance{{ID: "i-0123456789abcdef0", State: "ready"}}}
	store := lease.Store(t.Context())
	if err := store.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := store.Load()
	if err != nil || len(got.Instances) != 1 || got.Instances[0].ID != want.Instances[0].ID {
		t.Fatalf("Load from the kit's table = %+v, %v", got, err)
	}
}
