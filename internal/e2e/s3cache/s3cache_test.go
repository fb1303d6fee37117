package e2es3cache

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

const (
	bucket    = "fleetrunner-cache"
	jobWithin = 3 * time.Minute
)

// world is moto with the cache bucket, the Docker Engine with the job image, and the credentials the
// runners sign with: made-up ones that a scan can find anywhere they leak.
type world struct {
	moto              *testenv.Moto
	s3                *s3.Client
	image             string
	accessKey, secret string
}

func newWorld(t *testing.T) *world {
	testenv.RequireSSHD(t)
	_, image := testrig.Engine(t)
	m := testenv.StartMoto(t)
	w := &world{moto: m, image: image, accessKey: "AKIAFLEETRUNNER" + strings.ToUpper(randomHex(3)), secret: "s3cret" + randomHex(16)}
	w.s3 = testrig.MotoBucket(t, m, bucket, w.accessKey, w.secret)
	return w
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// objects lists the bucket's keys under prefix.
func (w *world) objects(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := w.s3.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("list the bucket: %v", err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// cache is the [runners.cache] part of a runner's config.
type cache struct {
	path    string
	shared  bool
	maxSize int64
}

// runner is one [[runners]] entry of the real manager, with its own gitlabsim, on the local plugin:
// one slot per instance and one job per instance, so that every job runs on a fresh instance.
type runner struct {
	sim   *gitlabsim.Server
	token string
	log   *testrig.SyncBuffer
}

func (w *world) startRunner(t *testing.T, c cache) *runner {
	t.Helper()
	sim, token := testrig.Sim(t, "s3cache "+t.Name())
	cli, _ := testrig.Engine(t)
	t.Cleanup(func() { testrig.RemoveJobLeftovers(t, cli, token, false) })
	dir := t.TempDir()
	text := fmt.Sprintf(`concurrent = 2
check_interval = 1
shutdown_timeout = 30

[[runners]]
  name = "s3cache-e2e"
  url = %q
  token = %q
  executor = "docker-autoscaler"
  [runners.docker]
    image = %q
    pull_policy = ["if-not-present"]
    network_mode = "host"
  [runners.cache]
    Type = "s3"
    Path = %q
    Shared = %v
    MaxUploadedArchiveSize = %d
    [runners.cache.s3]
      ServerAddress = %q
      Insecure = true
      PathStyle = true
      AccessKey = %q
      SecretKey = %q
      BucketName = %q
      BucketLocation = %q
      AuthenticationType = "access-key"
  [runners.autoscaler]
    plugin = "local"
    capacity_per_instance = 1
    max_use_count = 1
    max_instances = 2
    update_interval = "1s"
    update_interval_when_expecting = "200ms"
    deletion_retry_interval = "1s"
    [runners.autoscaler.plugin_config]
      max_size = 2
      boot_delay = "0s"
      sshd_delay = "0s"
      docker_delay = "0s"
      base_address = %q
      docker_socket = %q
    [runners.autoscaler.connector_config]
      keepalive = "1s"
      timeout = "10s"
    [runners.autoscaler.state_storage]
      dir = %q
    [[runners.autoscaler.policy]]
      idle_count = 0
      idle_time = "1s"
`, sim.URL(), token, w.image, c.path, c.shared, c.maxSize, strings.TrimPrefix(w.moto.URL, "http://"),
		w.accessKey, w.secret, bucket, testrig.MotoRegion, fmt.Sprintf("127.%d.%d.1", 150+mrand.IntN(50), mrand.IntN(256)),
		testenv.DockerSocket(), filepath.Join(dir, "state"))
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &testrig.SyncBuffer{}
	l := logrus.New()
	l.SetOutput(log)
	l.SetLevel(logrus.DebugLevel)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", log.String())
		}
	})
	plugins := fleeting.Registry{"local": func() fleeting.InstanceGroup { return &local.InstanceGroup{} }}
	testrig.StartManager(t, l, path, "s_s3cache", dockerautoscaler.Name, dockerautoscaler.New(plugins))
	return &runner{sim: sim, token: token, log: log}
}

// run enqueues spec and waits for its end; a job that does not succeed fails the test.
func (r *runner) run(t *testing.T, spec gitlabsim.JobSpec) gitlabsim.JobSnapshot {
	t.Helper()
	snap := testrig.Finished(t, r.sim, r.sim.Enqueue(spec), jobWithin)
	if snap.Status != gitlabsim.StatusSuccess {
		t.Fatalf("job %s: %s %s; trace:\n%s", spec.Name, snap.Status, snap.FailureReason, snap.Trace)
	}
	return snap
}

var (
	connectedRE = regexp.MustCompile(`Instance (\S+) connected`)
	sumRE       = regexp.MustCompile(`([0-9a-f]{64})  cached/blob`)
	projectRE   = regexp.MustCompile(`project=(\d+)`)
)

// match is the first submatch of re in trace; the test fails without one.
func match(t *testing.T, re *regexp.Regexp, trace []byte) string {
	t.Helper()
	m := re.FindSubmatch(trace)
	if m == nil {
		t.Fatalf("trace has no %s:\n%s", re, trace)
	}
	return string(m[1])
}

// noCredentials fails the test if the runner's access key or secret key is in any of texts.
func (w *world) noCredentials(t *testing.T, texts map[string]string) {
	t.Helper()
	for name, text := range texts {
		for _, secret := range []string{w.accessKey, w.secret} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds an AWS credential (%.8s…)", name, secret)
			}
		}
	}
}

// writer is a job that makes a 1 MiB random file, prints its digest and the project ID, and pushes it
// to the cache under key.
func (w *world) writer(name, key string, size int) gitlabsim.JobSpec {
	return gitlabsim.JobSpec{Name: name, Image: w.image,
		Script: []string{"mkdir -p cached", fmt.Sprintf("head -c %d /dev/urandom > cached/blob", size), "sha256sum cached/blob",
			"echo project=$CI_PROJECT_ID"},
		Cache: []job.Cache{{Key: key, Paths: []string{"cached/"}, Policy: job.CachePolicyPush}}}
}

// reader is a job that pulls key (then fallbacks), prints the restored file's digest and its whole
// environment.
func (w *world) reader(name, key string, fallbacks ...string) gitlabsim.JobSpec {
	return gitlabsim.JobSpec{Name: name, Image: w.image,
		Script: []string{"sha256sum cached/blob", "env"},
		Cache:  []job.Cache{{Key: key, FallbackKeys: fallbacks, Paths: []string{"cached/"}, Policy: job.CachePolicyPull}}}
}

func TestS3Cache(t *testing.T) {
	w := newWorld(t)

	t.Run("shared through S3 across instances, fallback key", func(t *testing.T) {
		r := w.startRunner(t, cache{})
		write := r.run(t, w.writer("write", "deps", 1<<20))
		read := r.run(t, w.reader("read", "deps"))
		fallback := r.run(t, w.reader("fallback", "missing-$CI_JOB_NAME", "nothing-here", "deps"))

		want := match(t, sumRE, write.Trace)
		for _, snap := range []gitlabsim.JobSnapshot{read, fallback} {
			if got := match(t, sumRE, snap.Trace); got != want {
				t.Errorf("job %s restored a file with SHA-256 %s, want %s (written by job write)", snap.Name, got, want)
			}
		}
		on := []string{match(t, connectedRE, write.Trace), match(t, connectedRE, read.Trace)}
		if on[0] == on[1] {
			t.Errorf("both jobs ran on instance %s; the check needs two", on[0])
		}
		for _, re := range []string{`No cache at http://\S+/project/\d+/missing-fallback\n`, `No cache at http://\S+/project/\d+/nothing-here\n`,
			`Downloaded cache from http://\S+/project/\d+/deps;`, `Successfully extracted cache`} {
			if !regexp.MustCompile(re).Match(fallback.Trace) {
				t.Errorf("fallback job's trace lacks %s:\n%s", re, fallback.Trace)
			}
		}
		if strings.Contains(string(fallback.Trace), "Failed") {
			t.Errorf("fallback job's trace has a failure:\n%s", fallback.Trace)
		}

		project := match(t, projectRE, write.Trace)
		wantKey := fmt.Sprintf("runner/%s/project/%s/deps", config.ShortToken(r.token), project)
		if got := w.objects(t, "runner/"+config.ShortToken(r.token)+"/"); !slices.Equal(got, []string{wantKey}) {
			t.Errorf("bucket holds %v under the runner's prefix, want [%s]", got, wantKey)
		}
		if !strings.Contains(string(read.Trace), "CI_JOB_ID=") {
			t.Fatalf("read job printed no environment:\n%s", read.Trace)
		}
		w.noCredentials(t, map[string]string{"write's trace": string(write.Trace), "read's trace and env": string(read.Trace),
			"fallback's trace and env": string(fallback.Trace), "the manager's log": r.log.String()})
	})

	t.Run("Shared and runner-scoped prefixes", func(t *testing.T) {
		scoped := w.startRunner(t, cache{path: "ci"})
		shared := w.startRunner(t, cache{path: "ci", shared: true})
		a := scoped.run(t, w.writer("scoped", "k", 1024))
		b := shared.run(t, w.writer("shared", "k", 1024))
		want := []string{
			fmt.Sprintf("ci/project/%s/k", match(t, projectRE, b.Trace)),
			fmt.Sprintf("ci/runner/%s/project/%s/k", config.ShortToken(scoped.token), match(t, projectRE, a.Trace)),
		}
		if got := w.objects(t, "ci/"); !slices.Equal(got, want) {
			t.Errorf("bucket holds %v under ci/, want %v", got, want)
		}
	})

	t.Run("archive over MaxUploadedArchiveSize is skipped", func(t *testing.T) {
		r := w.startRunner(t, cache{path: "limited", maxSize: 64 << 10})
		snap := r.run(t, w.writer("big", "big", 256<<10))
		if !strings.Contains(string(snap.Trace), "over MaxUploadedArchiveSize (65536 bytes); not uploading it") {
			t.Errorf("no line saying the archive was skipped:\n%s", snap.Trace)
		}
		if got := w.objects(t, "limited/"); len(got) != 0 {
			t.Errorf("bucket holds %v, want nothing under limited/", got)
		}
	})

	// Last: it stops moto.
	t.Run("S3 stopped mid-run only warns", func(t *testing.T) {
		r := w.startRunner(t, cache{path: "outage"})
		r.run(t, w.writer("prime", "k", 1024))
		// The job's script asks the test to stop S3, between its restore and its save.
		stop := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
			w.moto.Stop()
			_, _ = rw.Write([]byte("stopped\n"))
		}))
		t.Cleanup(stop.Close)
		spec := w.reader("outage", "k")
		spec.Script = append(spec.Script, "wget -q -O- "+stop.URL)
		spec.Cache[0].Policy = job.CachePolicyPullPush
		during := r.run(t, spec)
		next := w.reader("after", "k")
		next.Script = []string{"test -f cached/blob || echo no cache restored", "env"}
		after := r.run(t, next)

		for _, c := range []struct {
			snap  gitlabsim.JobSnapshot
			lines []string
		}{
			{during, []string{"Successfully extracted cache", "stopped", "WARNING: Failed to save cache"}},
			{after, []string{"WARNING: Failed to restore cache", "connection refused", "no cache restored", "CI_JOB_ID="}},
		} {
			for _, line := range c.lines {
				if !strings.Contains(string(c.snap.Trace), line) {
					t.Errorf("job %s's trace lacks %q:\n%s", c.snap.Name, line, c.snap.Trace)
				}
			}
		}
		w.noCredentials(t, map[string]string{"the outage job's trace": string(during.Trace), "the next job's trace": string(after.Trace),
			"the manager's log": r.log.String()})
	})
}
