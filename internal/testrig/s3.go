package testrig

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
)

// MotoRegion is the region the S3 cache tests sign for; moto accepts any.
const MotoRegion = "us-east-1"

// MotoBucket creates bucket on m's S3 (path-style, as a runner's [runners.cache.s3] with a
// ServerAddress reaches it) and returns a client to inspect it. moto checks no credentials; the
// caller's made-up ones are what its runners sign with too.
func MotoBucket(t testing.TB, m *testenv.Moto, bucket, accessKey, secretKey string) *s3.Client {
	t.Helper()
	c := s3.New(s3.Options{
		Region: MotoRegion, BaseEndpoint: aws.String(m.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
	})
	if _, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s on moto: %v", bucket, err)
	}
	return c
}
