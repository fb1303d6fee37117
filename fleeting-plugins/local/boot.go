package local

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// BootModel is how a simulated machine boots, stage by stage, as an EC2 instance does: the cloud reports
// it running some seconds after launch, its sshd answers later (EC2: 10–40 s after `running`), and its
// Docker Engine later still (user data installing or starting Docker). Each stage varies by up to ±Jitter
// of its length. The zero value boots at once, the fast path for unit tests.
type BootModel struct {
	// Running is launch → the cloud reports the instance running.
	Running time.Duration
	// SSHD is running → sshd accepts connections.
	SSHD time.Duration
	// Docker is sshd listening → the Docker Engine socket answers. Hiding the socket needs root (a
	// private mount namespace per instance); see DockerGateAvailable.
	Docker time.Duration
	// Jitter is the fraction (0–1) by which each stage may be shorter or longer.
	Jitter float64
}

// EC2Boot looks like an EC2 instance from a stock AMI, shortened so that tests and demos stay quick:
// running after 3 s, sshd 4 s later, Docker 2 s after that, each ±30%.
var EC2Boot = BootModel{Running: 3 * time.Second, SSHD: 4 * time.Second, Docker: 2 * time.Second, Jitter: 0.3}

// Validate rejects negative stages and a jitter outside 0–1.
func (b BootModel) Validate() error {
	var errs []error
	for _, st := range []struct {
		name string
		d    time.Duration
	}{{"running", b.Running}, {"sshd", b.SSHD}, {"docker", b.Docker}} {
		if st.d < 0 {
			errs = append(errs, fmt.Errorf("boot stage %s: %s must not be negative", st.name, st.d))
		}
	}
	if b.Jitter < 0 || b.Jitter > 1 {
		errs = append(errs, fmt.Errorf("boot jitter %g must be between 0 and 1", b.Jitter))
	}
	return errors.Join(errs...)
}

// Sample draws one boot's stage lengths; r may be nil (then the global source is used).
func (b BootModel) Sample(r *rand.Rand) BootModel {
	j := func(d time.Duration) time.Duration {
		if d <= 0 || b.Jitter <= 0 {
			return d
		}
		f := rand.Float64()
		if r != nil {
			f = r.Float64()
		}
		return time.Duration(float64(d) * (1 + b.Jitter*(2*f-1)))
	}
	return BootModel{Running: j(b.Running), SSHD: j(b.SSHD), Docker: j(b.Docker)}
}

// DockerGateAvailable says whether an instance's Docker socket can be hidden until its Docker stage ends
// (root, with unshare and nsenter from util-linux); without it Docker answers as soon as sshd does.
func DockerGateAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("hiding the Docker socket until the instance's Docker stage ends needs root (a mount namespace per instance)")
	}
	for _, tool := range []string{"unshare", "nsenter", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("hiding the Docker socket needs %s (util-linux): %w", tool, err)
		}
	}
	return nil
}

// dockerGateCommand wraps sshd's command line so that it runs in a private mount namespace where socket
// is covered by an empty file: connecting to it is refused, as on a machine whose Docker is not up yet,
// for sessions and forwarded sockets alike. The pid stays sshd's (unshare and sh exec).
func dockerGateCommand(dir, socket string, sshdArgs []string) (*exec.Cmd, string, error) {
	if err := DockerGateAvailable(); err != nil {
		return nil, "", err
	}
	real, err := filepath.EvalSymlinks(socket)
	if err != nil {
		return nil, "", fmt.Errorf("docker socket %s: %w", socket, err)
	}
	cover := dockerCover(dir)
	if err := os.WriteFile(cover, nil, 0o600); err != nil {
		return nil, "", fmt.Errorf("docker gate: %w", err)
	}
	args := append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c",
		`mount --bind "$1" "$2" && shift 2 && exec "$@"`, "sh", cover, real, SSHDPath}, sshdArgs...)
	return exec.Command("unshare", args...), real, nil
}

// dockerCover is the empty file bound over an instance's Docker socket while its Docker is not up.
func dockerCover(dir string) string { return filepath.Join(dir, "docker-not-ready") }

// StopDocker covers the instance's Docker socket again, as when dockerd dies on a running machine: sshd
// answers and Docker refuses, for new connections and forwards. It needs the socket to have been hidden
// at start (DockerGateAvailable); it does nothing when Docker is stopped already.
func (s *SSHD) StopDocker() error {
	if s.dockerSocket == "" {
		return fmt.Errorf("sshd %s was started without a Docker gate (needs root and util-linux), so its Docker cannot be stopped", s.Addr())
	}
	covered, err := mountedIn(s.Pid, s.dockerSocket)
	if err != nil || covered {
		return err
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(s.Pid), "-m", "--", "mount", "--bind", dockerCover(s.Dir), s.dockerSocket).CombinedOutput()
	if err != nil {
		return fmt.Errorf("stop docker on %s: mount over %s: %w: %s", s.Addr(), s.dockerSocket, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// StartDocker ends the instance's Docker stage: its socket becomes reachable for every session and
// forward, open connections included, as when dockerd starts on a booted machine. It does nothing when
// the socket was never hidden or is shown already.
func (s *SSHD) StartDocker() error {
	if s.dockerSocket == "" || !s.Alive() {
		return nil
	}
	covered, err := mountedIn(s.Pid, s.dockerSocket)
	if err != nil || !covered {
		return err
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(s.Pid), "-m", "--", "umount", s.dockerSocket).CombinedOutput()
	if err != nil {
		return fmt.Errorf("start docker on %s: umount %s: %w: %s", s.Addr(), s.dockerSocket, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// DockerStarted reports whether the instance's Docker socket is reachable (always, when it was never
// hidden).
func (s *SSHD) DockerStarted() bool {
	if s.dockerSocket == "" {
		return true
	}
	covered, err := mountedIn(s.Pid, s.dockerSocket)
	return err == nil && !covered
}

// mountedIn reports whether path is a mount point in pid's mount namespace.
func mountedIn(pid int, path string) (bool, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return false, fmt.Errorf("mounts of sshd %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Field 5 is the mount point (octal escapes for spaces; our paths have none).
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == path {
			return true, nil
		}
	}
	return false, sc.Err()
}
