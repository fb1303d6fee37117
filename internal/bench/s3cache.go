package bench

import (
	"fmt"
	"strings"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/common/gitlab/gitlabsim"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

func init() {
	Register(Bench{Name: "5 s3 cache", Run: runS3Cache})
}

// runS3Cache times the cache stages of two jobs on the local plugin with [runners.cache] on moto's S3:
// one saves a cache of random (incompressible) bytes, the next restores it, each through URLs the
// manager signed. The figures are the archive_cache and restore_cache sections of the job log and
// their share of the job's time (received → done).
func runS3Cache(t *testing.T, p Profile) []Row {
	sizeMB := 50
	if p.Short {
		sizeMB = 2
	}
	r := newAutoscalerRig(t, 1)
	m := testenv.StartMoto(t)
	const bucket, accessKey, secretKey = "bench-cache", "AKIABENCHEXAMPLE", "bench-secret"
	testrig.MotoBucket(t, m, bucket, accessKey, secretKey)
	pathStyle := true
	r.runner.Cache = &config.CacheConfig{Type: config.CacheTypeS3, S3: &config.CacheS3{
		ServerAddress: strings.TrimPrefix(m.URL, "http://"), Insecure: true, PathStyle: &pathStyle,
		AccessKey: accessKey, SecretKey: secretKey, BucketName: bucket, BucketLocation: testrig.MotoRegion,
	}}
	prov := r.start(t)

	c := job.Cache{Key: "bench", Paths: []string{"cached/"}}
	save := gitlabsim.JobSpec{Name: "save", Image: r.image, Script: []string{"echo " + marker, "mkdir -p cached",
		fmt.Sprintf("head -c %d /dev/urandom > cached/blob", sizeMB<<20)}, Cache: []job.Cache{c}}
	c.Policy = job.CachePolicyPull
	restore := gitlabsim.JobSpec{Name: "restore", Image: r.image, Script: []string{"echo " + marker, "test -s cached/blob"},
		Cache: []job.Cache{c}}

	var rows []Row
	for _, s := range []struct {
		spec    gitlabsim.JobSpec
		section string
		what    string
	}{{save, "archive_cache", "save (zip + presigned PUT)"}, {restore, "restore_cache", "restore (presigned GET + unzip)"}} {
		r.sim.Enqueue(s.spec)
		j := r.mustRun(t, prov)
		var d float64
		for _, sec := range j.sections {
			if sec.name == s.section {
				d = ms(sec.end.Sub(sec.start))
			}
		}
		if d == 0 {
			t.Fatalf("job %s has no %s section", s.spec.Name, s.section)
		}
		total := ms(j.done.Sub(j.received))
		rows = append(rows, Row{
			Name: fmt.Sprintf("S3 cache %s, %d MB on moto", s.what, sizeMB), Value: d, Unit: "ms",
			Goal: "printed", Note: fmt.Sprintf("the job took %.0f ms (received → done)", total),
		}, Row{Name: "  share of that job's time", Value: 100 * d / total, Unit: "%", Goal: "breakdown"})
	}
	return rows
}
