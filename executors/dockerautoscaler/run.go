package dockerautoscaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting/connector"
	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/taskscaler"
)

// MaxAttempts bounds how many instances one job tries when the ones it gets cannot be reached before
// its script starts.
const MaxAttempts = 3

// probeTimeout bounds the check, after a failed stage, that the instance's connection still answers.
const probeTimeout = 5 * time.Second

// Run implements executors.Provider. The job is recorded in the state file first, so a crash during it
// is reported after a restart; then a slot is acquired, the instance dialed and the stages run there.
// The slot is always released.
func (p *Provider) Run(ctx context.Context, res executors.Reservation, b *executors.Build) error {
	key := uuid.NewString()
	if r, ok := res.(*reservation); ok && r.p == p {
		r.consume()
		key = r.key
	}
	log := b.Logger
	if log == nil {
		log = p.log
	}
	blob, _ := json.Marshal(recoveredBlob{JobID: b.Job.ID, Token: b.Job.Token, URL: p.runner.URL})
	defer func() {
		// The job stays on record, without its slot, until the manager has sent its final state
		// (FinalStateSent): a crash in between still gets it reported after a restart. Recorded before
		// the release so that the state file never lacks it.
		ended, _ := json.Marshal(recoveredBlob{JobID: b.Job.ID, Token: b.Job.Token, URL: p.runner.URL, Ended: true})
		if err := p.ts.RecordJob(reportKey(b.Job.ID), b.Job.ID, ended); err != nil {
			log.WithError(err).Warn("could not record the finished job in the state file; if fleetrunner crashes before its final update, GitLab's timeout ends the job")
		}
		p.ts.ForgetJob(key)
		p.ts.Release(key)
	}()
	p.noteRunner(b.Runner)

	if err := p.ts.RecordJob(key, b.Job.ID, blob); err != nil {
		log.WithError(err).Warn("could not record the job in the state file; if fleetrunner crashes now, GitLab's timeout ends the job")
	}

	watch := &scriptWatch{JobLog: b.Log}
	build := *b
	build.Log = watch
	for attempt := 1; ; attempt++ {
		err := p.attempt(ctx, key, &build, watch, log)
		var un *unreachableError
		if !errors.As(err, &un) {
			return err
		}
		p.ts.MarkUnhealthy(un.instance)
		p.pool.Evict(un.instance)
		log.WithError(un.err).WithFields(logrus.Fields{"instance": un.instance, "attempt": attempt}).
			Warn("instance unusable before the job's script started; marked unhealthy")
		if attempt >= MaxAttempts || ctx.Err() != nil {
			return fmt.Errorf("no instance could be reached in %d attempts; last: %w", attempt, un.err)
		}
		b.Log.Warnf("Instance %s cannot be used (%v); moving the job to another instance", un.instance, un.err)
	}
}

// FinalStateSent implements executors.FinalStateObserver: GitLab has the job's final state, so its
// record can go.
func (p *Provider) FinalStateSent(b *executors.Build) {
	p.ts.ForgetJob(reportKey(b.Job.ID))
}

// reportKey is the state-file key of a job whose slot is released but whose final state may not have
// reached GitLab yet.
func reportKey(jobID int64) string { return fmt.Sprintf("report-%d", jobID) }

// unreachableError is an instance that failed before the job's script started: the job may move on.
type unreachableError struct {
	instance string
	err      error
}

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// attempt runs the job on one acquired instance.
func (p *Provider) attempt(ctx context.Context, key string, b *executors.Build, watch *scriptWatch, log logrus.FieldLogger) error {
	b.Log.Infof("Preparing instance...")
	acq, err := p.ts.Acquire(ctx, key)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("%w: no slot within instance_acquire_timeout (%s)", err, p.runner.Autoscaler.GetInstanceAcquireTimeout())
		}
		return err
	}
	id := acq.InstanceID
	log = log.WithFields(logrus.Fields{"instance": id, "slot": acq.Slot})

	// The job's context ends when its caller aborts it, when the taskscaler loses the instance, or
	// when the SSH connection dies: every Docker call through the tunnel is cancelled then.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopAcq := context.AfterFunc(acq.Context(), func() { cancel(context.Cause(acq.Context())) })
	defer stopAcq()

	b.Log.Infof("Dialing instance %s...", id)
	lease, err := p.pool.Get(runCtx, id)
	if err != nil {
		return p.beforeScript(ctx, runCtx, id, fmt.Errorf("connect: %w", err))
	}
	defer lease.Release()
	go func() {
		select {
		case <-lease.Done():
			cancel(fmt.Errorf("instance %s: %w: %w", id, taskscaler.ErrInstanceLost, lease.Client().Err()))
		case <-runCtx.Done():
		}
	}()

	cli, closeCli, err := lease.DockerClient()
	if err != nil {
		return err
	}
	defer closeCli()
	if _, err := cli.Ping(runCtx); err != nil {
		return p.beforeScript(ctx, runCtx, id, fmt.Errorf("reach the Docker Engine: %w", err))
	}
	b.Log.Infof("Instance %s connected%s", id, p.addresses(runCtx, acq))
	log.Debug("running job on instance")

	opts := p.docker
	opts.EngineName = "instance " + id
	err = docker.RunJob(runCtx, cli, b, opts)
	select {
	case <-lease.Done():
		// The job's cleanup went through this connection and may not have reached the engine.
		p.markLeftovers(id, leftoversLost)
	default:
	}
	if err == nil || ctx.Err() != nil {
		return err
	}
	lost := runCtx.Err() != nil || !alive(lease)
	if !lost {
		return err
	}
	cause := context.Cause(runCtx)
	if cause == nil {
		cause = fmt.Errorf("instance %s: %w: %w", id, taskscaler.ErrInstanceLost, lease.Client().Err())
	}
	if !watch.started.Load() {
		return &unreachableError{instance: id, err: cause}
	}
	p.ts.MarkUnhealthy(id)
	p.pool.Evict(id)
	log.WithError(cause).Warn("instance lost while the job's script ran")
	b.Log.Errorf("Instance %s was lost while the job ran: %v", id, cause)
	return &job.BuildError{Reason: job.RunnerSystemFailure, Err: fmt.Errorf("instance %s was lost during the job: %w", id, cause)}
}

// beforeScript classifies a failure to reach an instance: the job moves on unless its caller ended it.
func (p *Provider) beforeScript(ctx, runCtx context.Context, id string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	if cause := context.Cause(runCtx); runCtx.Err() != nil && cause != nil {
		err = fmt.Errorf("%w (%w)", err, cause)
	}
	return &unreachableError{instance: id, err: err}
}

// alive tells whether the lease's connection still answers, so a stage failing because the instance
// vanished is told from a stage failing on its own.
func alive(l *connector.Lease) bool {
	select {
	case <-l.Done():
		return false
	default:
	}
	reply := make(chan error, 1)
	go func() {
		_, _, err := l.Client().SSH().SendRequest("keepalive@openssh.com", true, nil)
		reply <- err
	}()
	t := time.NewTimer(probeTimeout)
	defer t.Stop()
	select {
	case err := <-reply:
		return err == nil
	case <-l.Done():
		return false
	case <-t.C:
		return false
	}
}

// addresses is the " (internal IP …, external IP …)" suffix asked for by log_internal_ip and
// log_external_ip.
func (p *Provider) addresses(ctx context.Context, acq *taskscaler.Acquisition) string {
	if !p.logInternalIP && !p.logExternalIP {
		return ""
	}
	ci, err := acq.ConnectInfo(ctx)
	if err != nil {
		return ""
	}
	var parts []string
	if p.logInternalIP && ci.InternalAddr != "" {
		parts = append(parts, "internal IP "+hostOf(ci.InternalAddr))
	}
	if p.logExternalIP && ci.ExternalAddr != "" {
		parts = append(parts, "external IP "+hostOf(ci.ExternalAddr))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// scriptWatch passes the job log through and notes when the user's script begins: from then on a lost
// instance fails the job instead of moving it.
type scriptWatch struct {
	executors.JobLog
	started atomic.Bool
}

func (w *scriptWatch) SectionStart(name, header string) {
	if strings.HasPrefix(name, "step_") {
		w.started.Store(true)
	}
	w.JobLog.SectionStart(name, header)
}
