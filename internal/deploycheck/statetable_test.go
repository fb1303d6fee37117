package deploycheck_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
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
