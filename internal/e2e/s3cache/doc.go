// Package e2es3cache checks the distributed cache end to end against moto_server's S3 (path-style,
// on loopback): the real manager runs jobs with the docker-autoscaler executor on the local plugin,
// whose instances share this machine's Docker Engine, and [runners.cache] Type = "s3" points at moto.
// Jobs on different instances share a cache through the bucket, fallback keys and the object layout
// are those of upstream, an archive over MaxUploadedArchiveSize and an S3 outage only warn, and no
// AWS credential shows in a job's environment, its log or the manager's log.
package e2es3cache
