package testrig

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler/state/dynamostate"
)

// StateTableName is the DynamoDB state table StateTable creates.
const StateTableName = "fleetrunner-state"

// StateTable starts moto for the test and creates the managers' state table on its DynamoDB, as
// deploy/aws/fleetrunner-state-table.yaml does; it returns moto's endpoint. moto checks no
// credentials, but the managers' SDK needs some: made-up ones go into the environment, so the test
// cannot run in parallel.
func StateTable(t *testing.T) (endpoint string) {
	t.Helper()
	m := testenv.StartMoto(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	client := dynamodb.New(dynamodb.Options{Region: MotoRegion, BaseEndpoint: aws.String(m.URL),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")})
	if _, err := client.CreateTable(t.Context(), &dynamodb.CreateTableInput{
		TableName:            aws.String(StateTableName),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(dynamostate.KeyAttribute), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(dynamostate.KeyAttribute), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	}); err != nil {
		t.Fatalf("create the state table on moto: %v", err)
	}
	return m.URL
}
