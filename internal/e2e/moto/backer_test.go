package e2emoto_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/internal/testenv"
	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// loopback is where every instance of the rig must live: an address beyond it would be a real host
// (moto's defaults are 172.31.x, 10.x and 54.x), and the tests send no traffic beyond loopback.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// errNotLoopback breaks the backer when an instance's address is outside loopback.
var errNotLoopback = errors.New("outside " + loopback.String())

// backerPoll is how often the backer lists moto's instances.
const backerPoll = 200 * time.Millisecond

// boot is how an instance of the rig comes up once moto says it is running (at once, in moto).
type boot struct {
	// SSHD is running → sshd listens on port 22 of the instance's private address.
	SSHD time.Duration
	// Docker is sshd listening → the Docker socket answers through it; 0 shows it at once.
	Docker time.Duration
}

// backer gives moto's instances a body: for each running instance it starts a real OpenSSH sshd on the
// instance's private address, port 22, after the boot delays, in front of the local Docker Engine, and
// kills it when the instance terminates or leaves the listing. It fails (see check) on an instance
// address outside 127.0.0.0/8, before anything dials it.
type backer struct {
	ec2            *ec2.Client
	dir            string
	authorizedKeys string
	boot           boot
	// dockerSocket is the socket hidden until the Docker stage ends; empty when never hidden.
	dockerSocket string

	// ctx ends when the test ends, the backer is closed or it broke (then its cause is the breakage).
	ctx  context.Context
	end  context.CancelCauseFunc
	done chan struct{}

	mu sync.Mutex
	// launched is every instance moto listed, when first seen.
	launched map[string]time.Time
	// backing holds the instances whose sshd is starting or running.
	backing map[string]*backed
	// sshds is every sshd started, for the final check that none outlived its instance.
	sshds []*local.SSHD
	err   error
}

type backed struct {
	addr string
	stop context.CancelFunc
	done chan struct{}
}

// errClosed ends a backer that did its job.
var errClosed = errors.New("backer closed")

// startBacker watches moto's instances until the test ends. dockerSocket, when not empty, is hidden
// from each sshd for b.Docker after it started (local.SSHDOptions.HideDocker).
func startBacker(t *testing.T, client *ec2.Client, authorizedKeys string, b boot, dockerSocket string) *backer {
	bk := &backer{
		ec2: client, dir: t.TempDir(), authorizedKeys: authorizedKeys, boot: b, dockerSocket: dockerSocket,
		done:     make(chan struct{}),
		launched: map[string]time.Time{}, backing: map[string]*backed{},
	}
	bk.ctx, bk.end = context.WithCancelCause(t.Context())
	go bk.run()
	// Registered after TempDir, so it runs first: no sshd outlives its directory.
	t.Cleanup(func() { bk.close(t) })
	return bk
}

func (bk *backer) run() {
	defer close(bk.done)
	tick := time.NewTicker(backerPoll)
	defer tick.Stop()
	for {
		if err := bk.poll(); err != nil && bk.ctx.Err() == nil {
			bk.fail(err)
		}
		select {
		case <-bk.ctx.Done():
			bk.mu.Lock()
			ids := make([]string, 0, len(bk.backing))
			for id := range bk.backing {
				ids = append(ids, id)
			}
			bk.mu.Unlock()
			for _, id := range ids {
				bk.unback(id)
			}
			return
		case <-tick.C:
		}
	}
}

// poll lists the instances, stops the sshd of every instance that is no longer running and then starts
// one for every new running instance, so that an address moto hands out again is free by then.
func (bk *backer) poll() error {
	running := map[string]string{}
	p := ec2.NewDescribeInstancesPaginator(bk.ec2, &ec2.DescribeInstancesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(bk.ctx)
		if err != nil {
			return fmt.Errorf("DescribeInstances: %w", err)
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				id, addr := awssdk.ToString(in.InstanceId), awssdk.ToString(in.PrivateIpAddress)
				bk.mu.Lock()
				if _, ok := bk.launched[id]; !ok {
					bk.launched[id] = time.Now()
				}
				bk.mu.Unlock()
				if addr == "" {
					continue
				}
				if a, err := netip.ParseAddr(addr); err != nil || !loopback.Contains(a) {
					return fmt.Errorf("moto gave instance %s the private address %q, %w: refusing to back it (is the group launched into the loopback subnet?)", id, addr, errNotLoopback)
				}
				if in.State != nil && in.State.Name == ec2types.InstanceStateNameRunning {
					running[id] = addr
				}
			}
		}
	}
	bk.mu.Lock()
	var gone []string
	for id := range bk.backing {
		if _, ok := running[id]; !ok {
			gone = append(gone, id)
		}
	}
	bk.mu.Unlock()
	for _, id := range gone {
		bk.unback(id)
	}
	bk.mu.Lock()
	defer bk.mu.Unlock()
	for id, addr := range running {
		if _, ok := bk.backing[id]; ok {
			continue
		}
		ctx, stop := context.WithCancel(bk.ctx)
		b := &backed{addr: addr, stop: stop, done: make(chan struct{})}
		bk.backing[id] = b
		go bk.back(ctx, id, b)
	}
	return nil
}

// back boots one instance: sshd after the boot delay, Docker after its own, until ctx ends.
func (bk *backer) back(ctx context.Context, id string, b *backed) {
	defer close(b.done)
	select {
	case <-time.After(bk.boot.SSHD):
	case <-ctx.Done():
		return
	}
	s, err := local.StartSSHD(ctx, local.SSHDOptions{
		Dir: filepath.Join(bk.dir, id), Address: b.addr, Port: 22,
		AuthorizedKeysFile: bk.authorizedKeys, HideDocker: bk.dockerSocket,
	})
	if err != nil {
		if ctx.Err() == nil {
			bk.fail(fmt.Errorf("instance %s: %w", id, err))
		}
		return
	}
	bk.mu.Lock()
	bk.sshds = append(bk.sshds, s)
	bk.mu.Unlock()
	if bk.dockerSocket != "" {
		select {
		case <-time.After(bk.boot.Docker):
			if err := s.StartDocker(); err != nil {
				bk.fail(fmt.Errorf("instance %s: %w", id, err))
			}
		case <-ctx.Done():
		}
	}
	<-ctx.Done()
	if err := s.Kill(); err != nil {
		bk.fail(fmt.Errorf("instance %s: %w", id, err))
	}
}

// unback kills an instance's sshd (or cancels its boot) and waits until it is gone.
func (bk *backer) unback(id string) {
	bk.mu.Lock()
	b := bk.backing[id]
	delete(bk.backing, id)
	bk.mu.Unlock()
	if b != nil {
		b.stop()
		<-b.done
	}
}

// fail records the first breakage and stops the backer, so that the test's waits end at once.
func (bk *backer) fail(err error) {
	bk.mu.Lock()
	if bk.err == nil {
		bk.err = err
	}
	bk.mu.Unlock()
	bk.end(err)
}

// broken returns what broke the backer, or nil.
func (bk *backer) broken() error {
	bk.mu.Lock()
	defer bk.mu.Unlock()
	return bk.err
}

// check fails the test when the backer broke.
func (bk *backer) check(t *testing.T) {
	t.Helper()
	if err := bk.broken(); err != nil {
		t.Fatalf("instance backer: %v", err)
	}
}

// launchedIDs is every instance moto listed so far.
func (bk *backer) launchedIDs() []string {
	bk.mu.Lock()
	defer bk.mu.Unlock()
	ids := make([]string, 0, len(bk.launched))
	for id := range bk.launched {
		ids = append(ids, id)
	}
	return ids
}

// alive lists the addresses of the sshds still running.
func (bk *backer) alive() []string {
	bk.mu.Lock()
	defer bk.mu.Unlock()
	var up []string
	for _, s := range bk.sshds {
		if s.Alive() {
			up = append(up, s.Addr())
		}
	}
	return up
}

// started counts the sshds started so far.
func (bk *backer) started() int {
	bk.mu.Lock()
	defer bk.mu.Unlock()
	return len(bk.sshds)
}

// close stops watching, kills every sshd left and checks that none survived.
func (bk *backer) close(t *testing.T) {
	bk.end(errClosed)
	<-bk.done
	if up := bk.alive(); len(up) > 0 {
		t.Errorf("sshd still running after the backer stopped: %v", up)
	}
}

// TestBackerRefusesNonLoopback: an instance outside the loopback VPC (moto's default subnet hands out
// 172.31.x.x) breaks the backer, which starts no sshd for it and so never dials that address.
func TestBackerRefusesNonLoopback(t *testing.T) {
	moto := testenv.StartMoto(t)
	client := ec2.NewFromConfig(sdkConfig(moto.URL))
	out, err := client.RunInstances(t.Context(), &ec2.RunInstancesInput{
		ImageId: awssdk.String(motoAMI), MinCount: awssdk.Int32(1), MaxCount: awssdk.Int32(1),
	})
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	addr := awssdk.ToString(out.Instances[0].PrivateIpAddress)
	if a, err := netip.ParseAddr(addr); err != nil || loopback.Contains(a) {
		t.Fatalf("moto's default subnet gave the address %q; want one outside %s for this test", addr, loopback)
	}
	bk := startBacker(t, client, filepath.Join(t.TempDir(), "authorized_keys"), boot{}, "")
	testrig.WaitFor(t, 10*time.Second, "the backer to refuse the instance", func() bool { return bk.broken() != nil })
	if err := bk.broken(); !errors.Is(err, errNotLoopback) || !strings.Contains(err.Error(), addr) {
		t.Errorf("the backer broke with %q; want a refusal naming the address %s", err, addr)
	}
	if n := bk.started(); n != 0 {
		t.Errorf("the backer started %d sshds; want none once an address is refused", n)
	}
}
