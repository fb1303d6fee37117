package dockerautoscaler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/docker/docker/client"
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

// Run implements executors.Provider: acquire a slot on an instance, connect to it, run the job's stages
// there with executors/docker, release the slot. The job is on record in the state file throughout
// (recovery.go). An instance that cannot be used before the job's script started is marked unhealthy
// and the job tried on another one, up to MaxAttempts.
func (p *Provider) Run(ctx context.Context, res executors.Reservation, b *executors.Build) error {
	key := p.claim(res)
	log := b.Logger
	if log == nil {
		log = p.log
	}
	received := time.Now()
	p.noteRunner(b.Runner)
	p.recordRunning(key, b, log)
	defer p.release(key, b, log)

	watch := &scriptWatch{JobLog: b.Log}
	build := *b
	build.Log = watch
	for attempt := 1; ; attempt++ {
		err := p.attempt(ctx, key, &build, watch, log, func() {
			// The first slot ends the job's wait; a move to another instance after a failure is not
			// another job waiting.
			if attempt == 1 {
				p.metrics.slotWait.Observe(time.Since(received).Seconds())
			}
		})
		var un *unreachableError
		if !errors.As(err, &un) {
			return err
		}
		if reason, ok := p.notices.reclaimed(un.instance); ok {
			// The instance is draining, and its other jobs may still finish: give the slot back rather
			// than condemn the instance and its connection.
			p.ts.Release(key)
			log.WithFields(logrus.Fields{"instance": un.instance, "reason": reason, "attempt": attempt}).
				Warn("instance being reclaimed before the job's script started; moving the job")
			b.Log.Warnf("Instance %s is being reclaimed by the cloud (%s); moving the job to another instance", un.instance, reason)
		} else {
			p.ts.MarkUnhealthy(un.instance)
			p.pool.Evict(un.instance)
			log.WithError(un.err).WithFields(logrus.Fields{"instance": un.instance, "attempt": attempt}).
				Warn("instance unusable before the job's script started; marked unhealthy")
		}
		if attempt >= MaxAttempts || ctx.Err() != nil {
			return fmt.Errorf("no instance could be reached in %d attempts; last: %w", attempt, un.err)
		}
		if !errors.Is(un.err, errReclaimNotice) {
			b.Log.Warnf("Instance %s cannot be used (%v); moving the job to another instance", un.instance, un.err)
		}
	}
}

// claim returns the key the job holds its slot under: its reservation's, or a fresh one.
func (p *Provider) claim(res executors.Reservation) string {
	if r, ok := res.(*reservation); ok && r.p == p {
		r.consume()
		return r.key
	}
	return uuid.NewString()
}

// attempt runs the job on one instance: acquire a slot, connect, run the stages; acquired is called
// once the slot is held.
func (p *Provider) attempt(ctx context.Context, key string, b *executors.Build, watch *scriptWatch, log logrus.FieldLogger, acquired func()) error {
	b.Log.Infof("Preparing instance...")
	acq, err := p.ts.Acquire(ctx, key)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("%w: no slot within instance_acquire_timeout (%s)", err, p.runner.Autoscaler.GetInstanceAcquireTimeout())
		}
		return err
	}
	acquired()
	id := acq.InstanceID
	log = log.WithFields(logrus.Fields{"instance": id, "slot": acq.Slot})

	// The job's context ends when its caller aborts it, when the taskscaler loses the instance, or
	// when the SSH connection dies: every Docker call through the tunnel is cancelled then.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopAcq := context.AfterFunc(acq.Context(), func() { cancel(context.Cause(acq.Context())) })
	defer stopAcq()
	// An interruption notice for the instance moves the job before its script starts.
	defer p.notices.track(id, watch, cancel)()

	b.Log.Infof("Dialing instance %s...", id)
	lease, cli, disconnect, err := p.connect(ctx, runCtx, cancel, id)
	if err != nil {
		return err
	}
	defer disconnect()
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
	return p.failed(runCtx, id, lease, watch.started.Load(), b, log, err)
}

// release ends the job's hold on its instance: the job goes on record as ended, then its slot is given
// back.
func (p *Provider) release(key string, b *executors.Build, log logrus.FieldLogger) {
	p.recordEnded(b, log)
	p.ts.ForgetJob(key)
	p.ts.Release(key)
}

// connect leases the instance's pooled connection and a Docker client through it whose engine
// answers; when the connection dies, cancel ends the job's context. disconnect closes the client and
// releases the lease.
func (p *Provider) connect(ctx, runCtx context.Context, cancel context.CancelCauseFunc, id string) (lease *connector.Lease, cli *client.Client, disconnect func(), err error) {
	lease, err = p.pool.Get(runCtx, id)
	if err != nil {
		return nil, nil, nil, p.beforeScript(ctx, runCtx, id, fmt.Errorf("connect: %w", err))
	}
	// held, not the named result: a failed ping below returns a nil lease while this still watches.
	held := lease
	go func() {
		select {
		case <-held.Done():
			cancel(fmt.Errorf("instance %s: %w: %w", id, taskscaler.ErrInstanceLost, held.Client().Err()))
		case <-runCtx.Done():
		}
	}()
	cli, closeCli, err := lease.DockerClient()
	if err != nil {
		lease.Release()
		return nil, nil, nil, err
	}
	disconnect = func() {
		closeCli()
		lease.Release()
	}
	if _, err := cli.Ping(runCtx); err != nil {
		disconnect()
		return nil, nil, nil, p.beforeScript(ctx, runCtx, id, fmt.Errorf("reach the Docker Engine: %w", err))
	}
	return lease, cli, disconnect, nil
}

// failed tells what a failed run means. A stage that failed on its own, with the instance still
// answering, is the job's failure. A lost instance lets the job move on if its script had not started
// (unreachableError); after that it fails the job with runner_system_failure.
func (p *Provider) failed(runCtx context.Context, id string, lease *connector.Lease, scriptStarted bool, b *executors.Build, log logrus.FieldLogger, err error) error {
	if runCtx.Err() == nil && alive(lease) {
		return err
	}
	cause := context.Cause(runCtx)
	if cause == nil {
		cause = fmt.Errorf("instance %s: %w: %w", id, taskscaler.ErrInstanceLost, lease.Client().Err())
	}
	if !scriptStarted {
		return &unreachableError{instance: id, err: cause}
	}
	if reason, ok := p.notices.reclaimed(id); ok {
		// A spot interruption is no fault of the job: runner_system_failure lets GitLab's
		// retry: when: runner_system_failure run it again, on another instance.
		log.WithError(cause).WithField("reason", reason).Warn("instance reclaimed while the job's script ran")
		b.Log.Errorf("Instance %s was reclaimed by the cloud (%s) while the job ran; failing the job with runner_system_failure so that it can be retried", id, reason)
		return &job.BuildError{Reason: job.RunnerSystemFailure, Err: fmt.Errorf("instance %s was reclaimed during the job (%s): %w", id, reason, cause)}
	}
	p.ts.MarkUnhealthy(id)
	p.pool.Evict(id)
	log.WithError(cause).Warn("instance lost while the job's script ran")
	b.Log.Errorf("Instance %s was lost while the job ran: %v", id, cause)
	return &job.BuildError{Reason: job.RunnerSystemFailure, Err: fmt.Errorf("instance %s was lost during the job: %w", id, cause)}
}

// unreachableError is an instance that failed before the job's script started: the job may move on.
type unreachableError struct {
	instance string
	err      error
}

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

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
