// Package s3cache signs the URLs through which a job's helper container downloads and uploads its
// cache in S3 ([runners.cache] Type = "s3"). It runs in the manager: the credentials stay in this
// process, and the instance gets only short-lived presigned URLs, which it uses with plain HTTP.
package s3cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
)

// Expiry is how long a presigned URL is valid. URLs are signed right before the stage that uses them
// and S3 checks the expiry when a request starts, so this only has to cover archiving a large cache
// before its upload begins.
const Expiry = time.Hour

// ObjectName is where a cache key's archive lives in the bucket, in upstream's layout (gitlab-runner
// cache/cache.go, generateObjectName): <Path>/runner/<short token>/project/<project id>/<key>, and
// without the runner segment when Shared. A key that is empty or climbs out of the project's prefix
// ("../") is refused.
func ObjectName(c *config.CacheConfig, shortToken string, projectID int64, key string) (string, error) {
	if key == "" {
		return "", errors.New("empty cache key")
	}
	runner := ""
	if !c.Shared {
		runner = path.Join("runner", shortToken)
	}
	base := path.Join(c.Path, runner, "project", strconv.FormatInt(projectID, 10))
	full := path.Join(base, key)
	if !strings.HasPrefix(full, base+"/") {
		return "", fmt.Errorf("cache key %q leads outside the project's cache; remove ../ from the key", key)
	}
	// The bucket's root has no leading slash: "/runner/..." would be a different object.
	return strings.TrimPrefix(full, "/"), nil
}

// Request is a presigned request: its URL carries the signature, and Header the signed headers that
// must be sent with it (for uploads, the server-side encryption settings).
type Request struct {
	URL    string
	Header http.Header
}

// Signer presigns GET and PUT requests for one bucket.
type Signer struct {
	presign  *s3.PresignClient
	bucket   string
	sse      types.ServerSideEncryption
	sseKeyID string
	expiry   time.Duration
}

// New makes a Signer for s. With AuthenticationType iam the credentials come from the AWS SDK's
// default chain and are resolved when the first URL is signed.
func New(ctx context.Context, s *config.CacheS3) (*Signer, error) {
	if s.BucketName == "" {
		return nil, errors.New("no BucketName in [runners.cache.s3]")
	}
	var cfg aws.Config
	if s.GetAuthenticationType() == config.S3AuthIAM {
		var err error
		if cfg, err = awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(s.GetBucketLocation())); err != nil {
			return nil, fmt.Errorf("load the AWS SDK's default configuration for the S3 cache (AuthenticationType iam): %w", err)
		}
	} else {
		if s.AccessKey == "" || s.SecretKey == "" {
			return nil, errors.New("AuthenticationType access-key needs AccessKey and SecretKey in [runners.cache.s3]")
		}
		cfg = aws.Config{
			Region:      s.GetBucketLocation(),
			Credentials: credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, s.SessionToken),
		}
	}
	endpoint := s.GetEndpoint()
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = s.GetPathStyle()
		// A presigned upload cannot carry a checksum of a body that does not exist yet.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		if endpoint != "" {
			// Dual-stack and accelerated endpoints are AWS's; the SDK refuses them with a custom one.
			o.BaseEndpoint = aws.String(endpoint)
			return
		}
		o.UseAccelerate = s.Accelerate
		if s.GetDualStack() {
			o.EndpointOptions.UseDualStackEndpoint = aws.DualStackEndpointStateEnabled
		}
	})
	return &Signer{
		presign:  s3.NewPresignClient(client),
		bucket:   s.BucketName,
		sse:      types.ServerSideEncryption(s.GetServerSideEncryption()),
		sseKeyID: s.ServerSideEncryptionKeyID,
		expiry:   Expiry,
	}, nil
}

// GetURL presigns a download of object.
func (s *Signer) GetURL(ctx context.Context, object string) (string, error) {
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(object)},
		s3.WithPresignExpires(s.expiry))
	if err != nil {
		return "", fmt.Errorf("sign the download of %s from bucket %s: %w", object, s.bucket, err)
	}
	return req.URL, nil
}

// PutRequest presigns an upload of object, with the server-side encryption settings.
func (s *Signer) PutRequest(ctx context.Context, object string) (Request, error) {
	in := &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(object), ServerSideEncryption: s.sse}
	if s.sseKeyID != "" && s.sse != "" && s.sse != types.ServerSideEncryptionAes256 {
		in.SSEKMSKeyId = aws.String(s.sseKeyID)
	}
	req, err := s.presign.PresignPutObject(ctx, in, s3.WithPresignExpires(s.expiry))
	if err != nil {
		return Request{}, fmt.Errorf("sign the upload of %s to bucket %s: %w", object, s.bucket, err)
	}
	h := http.Header{}
	for k, v := range req.SignedHeader {
		// net/http sets Host itself, from the URL.
		if !strings.EqualFold(k, "Host") {
			h[k] = v
		}
	}
	return Request{URL: req.URL, Header: h}, nil
}

// signerKey is what a Signer is made from, resolved; a config reload that changes none of it keeps the
// Signer, and with it the SDK's cached credentials.
type signerKey struct {
	endpoint, region, auth, accessKey, secretKey, sessionToken, bucket, sse, sseKeyID string
	pathStyle, dualStack, accelerate                                                  bool
}

var (
	signersMu sync.Mutex
	signers   = map[signerKey]*Signer{}
)

// For returns the Signer for s, made once per distinct setting.
func For(ctx context.Context, s *config.CacheS3) (*Signer, error) {
	k := signerKey{
		endpoint: s.GetEndpoint(), region: s.GetBucketLocation(), auth: s.GetAuthenticationType(),
		accessKey: s.AccessKey, secretKey: s.SecretKey, sessionToken: s.SessionToken, bucket: s.BucketName,
		sse: s.GetServerSideEncryption(), sseKeyID: s.ServerSideEncryptionKeyID,
		pathStyle: s.GetPathStyle(), dualStack: s.GetDualStack(), accelerate: s.Accelerate,
	}
	signersMu.Lock()
	defer signersMu.Unlock()
	if sg, ok := signers[k]; ok {
		return sg, nil
	}
	sg, err := New(ctx, s)
	if err != nil {
		return nil, err
	}
	signers[k] = sg
	return sg, nil
}
