package local

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDPath is Debian's OpenSSH server.
const SSHDPath = "/usr/sbin/sshd"

// sshdReadyTimeout bounds how long a fresh sshd may take to listen.
const sshdReadyTimeout = 10 * time.Second

// SSHDOptions describe one sshd "instance".
type SSHDOptions struct {
	// Dir holds the instance's host key (made if missing), its log sshd.log and home/, its sessions' HOME.
	Dir string
	// Address is the loopback address to listen on, e.g. 127.0.10.2.
	Address string
	// Port 0 picks a free one.
	Port int
	// AuthorizedKeysFile lists the client keys allowed in, for every user.
	AuthorizedKeysFile string
	// MaxSessions is sshd's limit of sessions per connection; 0 means 64.
	MaxSessions int
	// ExtraOptions are more sshd -o settings, e.g. "PasswordAuthentication=yes".
	ExtraOptions []string
	// HideDocker is the Docker Engine socket to keep unreachable until StartDocker, as on a machine
	// that is still installing Docker; empty leaves it reachable. Needs DockerGateAvailable.
	HideDocker string
}

// SSHD is a running OpenSSH sshd, started by StartSSHD or adopted from an earlier process with AdoptSSHD.
type SSHD struct {
	Pid     int
	Address string
	Port    int
	Dir     string
	// HostKey is the public host key in authorized_keys form.
	HostKey string
	// exited is closed when a child we started was reaped; nil for an adopted process.
	exited chan struct{}
	// dockerSocket is the socket hidden from this sshd until StartDocker; empty when never hidden.
	dockerSocket string
}

// Addr is host:port.
func (s *SSHD) Addr() string { return net.JoinHostPort(s.Address, strconv.Itoa(s.Port)) }

func hostKeyPath(dir string) string { return filepath.Join(dir, "hostkey") }

// homeDir is the instance's HOME for its sessions.
func homeDir(dir string) string { return filepath.Join(dir, "home") }

// StartSSHD starts sshd in the foreground (sshd -D -e) in its own process group, so that it outlives this
// process if that is killed, and returns once it accepts TCP connections. ctx bounds the start only.
func StartSSHD(ctx context.Context, opts SSHDOptions) (*SSHD, error) {
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sshd instance dir: %w", err)
	}
	hostKey, err := ensureHostKey(opts.Dir)
	if err != nil {
		return nil, err
	}
	if opts.Port == 0 {
		if opts.Port, err = freePort(opts.Address); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(homeDir(opts.Dir), 0o700); err != nil {
		return nil, fmt.Errorf("sshd instance home: %w", err)
	}
	// sshd refuses to start without its privilege separation directory.
	_ = os.MkdirAll("/run/sshd", 0o755)
	logf, err := os.OpenFile(filepath.Join(opts.Dir, "sshd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sshd log: %w", err)
	}
	defer logf.Close()

	// dial-stdio opens one session per Docker connection; OpenSSH's default of 10 is tight for several
	// jobs sharing one connection.
	maxSessions := 64
	if opts.MaxSessions > 0 {
		maxSessions = opts.MaxSessions
	}
	args := []string{"-D", "-e",
		"-p", strconv.Itoa(opts.Port),
		"-h", hostKeyPath(opts.Dir),
		"-o", "ListenAddress=" + opts.Address,
		"-o", "AuthorizedKeysFile=" + opts.AuthorizedKeysFile,
		"-o", "StrictModes=no",
		"-o", "PidFile=none",
		"-o", "UsePAM=no",
		"-o", "PermitRootLogin=prohibit-password",
		"-o", "AllowStreamLocalForwarding=yes",
		"-o", "MaxSessions=" + strconv.Itoa(maxSessions),
		// A home of the instance's own, like a fresh machine's: the sessions run as the host's user, whose
		// shell start-up files (on a developer machine, pyenv or nvm hooks taking seconds and holding locks
		// that a killed session leaves behind) must not run on every command and Docker connection.
		"-o", "SetEnv=HOME=" + homeDir(opts.Dir),
	}
	for _, o := range opts.ExtraOptions {
		args = append(args, "-o", o)
	}
	cmd := exec.Command(SSHDPath, args...)
	var hidden string
	if opts.HideDocker != "" {
		if cmd, hidden, err = dockerGateCommand(opts.Dir, opts.HideDocker, args); err != nil {
			return nil, err
		}
	}
	// A file, not a pipe: sshd's per-connection children inherit it, and Wait must not wait for them.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", SSHDPath, err)
	}
	s := &SSHD{Pid: cmd.Process.Pid, Address: opts.Address, Port: opts.Port, Dir: opts.Dir, HostKey: hostKey, exited: make(chan struct{}), dockerSocket: hidden}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitListening(ctx); err != nil {
		_ = s.Kill()
		return nil, err
	}
	return s, nil
}

func (s *SSHD) waitListening(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sshdReadyTimeout)
	defer cancel()
	for {
		d := net.Dialer{Timeout: time.Second}
		conn, err := d.DialContext(ctx, "tcp", s.Addr())
		if err == nil {
			_ = conn.Close()
			return nil
		}
		if !s.Alive() {
			return fmt.Errorf("sshd for %s exited at start: %s", s.Addr(), tail(filepath.Join(s.Dir, "sshd.log")))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sshd for %s did not listen: %w (log: %s)", s.Addr(), ctx.Err(), tail(filepath.Join(s.Dir, "sshd.log")))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	b = bytes.TrimSpace(b)
	if len(b) > 500 {
		b = b[len(b)-500:]
	}
	return string(b)
}

// AdoptSSHD takes over an sshd started by an earlier process (a manager that was restarted). It reports
// false when that process is gone. hiddenDocker is the socket it was started to hide (HideDocker), so
// that StartDocker still works; empty when none.
func AdoptSSHD(pid int, dir, address string, port int, hiddenDocker string) (*SSHD, bool) {
	pub, err := os.ReadFile(hostKeyPath(dir) + ".pub")
	if err != nil {
		return nil, false
	}
	s := &SSHD{Pid: pid, Address: address, Port: port, Dir: dir, HostKey: strings.TrimSpace(string(pub))}
	if hiddenDocker != "" {
		if real, err := filepath.EvalSymlinks(hiddenDocker); err == nil {
			s.dockerSocket = real
		}
	}
	return s, s.Alive()
}

// Alive reports whether the sshd process still runs. For an adopted process the command line must still
// name this instance's host key, so a recycled pid is not mistaken for it.
func (s *SSHD) Alive() bool {
	if s.exited != nil {
		select {
		case <-s.exited:
			return false
		default:
			return true
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.Pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", s.Pid))
	return err == nil && bytes.Contains(cmdline, []byte(hostKeyPath(s.Dir)))
}

// Kill kills sshd and every process below it (its per-connection children and their sessions), the way
// an instance that vanished takes everything with it.
func (s *SSHD) Kill() error {
	if !s.Alive() {
		return nil
	}
	procs := s.stopTree()
	for _, p := range procs {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	// Our own child is reaped by its Wait; an adopted one by init. Either way it leaves /proc.
	deadline := time.Now().Add(5 * time.Second)
	for s.Alive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd %d did not exit after SIGKILL", s.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Freeze stops sshd and its children (SIGSTOP): connections stay open but nothing answers, like an
// instance that hangs or drops off the network without a TCP reset.
func (s *SSHD) Freeze() error {
	if !s.Alive() {
		return fmt.Errorf("sshd %d is not running", s.Pid)
	}
	s.stopTree()
	return nil
}

// Thaw resumes a frozen sshd.
func (s *SSHD) Thaw() {
	for _, p := range append(descendants(s.Pid), s.Pid) {
		_ = syscall.Kill(p, syscall.SIGCONT)
	}
}

// stopTree SIGSTOPs the root and then its descendants until no new ones appear (a stopped process cannot
// fork), and returns them all, root last.
func (s *SSHD) stopTree() []int {
	_ = syscall.Kill(s.Pid, syscall.SIGSTOP)
	stopped := map[int]bool{}
	for range 10 {
		fresh := false
		for _, p := range descendants(s.Pid) {
			if !stopped[p] {
				stopped[p] = true
				fresh = true
				_ = syscall.Kill(p, syscall.SIGSTOP)
			}
		}
		if !fresh {
			break
		}
	}
	procs := make([]int, 0, len(stopped)+1)
	for p := range stopped {
		procs = append(procs, p)
	}
	return append(procs, s.Pid)
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may hold anything.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// ensureHostKey makes an ed25519 host key in dir unless there is one, and returns its public half.
func ensureHostKey(dir string) (string, error) {
	path := hostKeyPath(dir)
	if pub, err := os.ReadFile(path + ".pub"); err == nil {
		return strings.TrimSpace(string(pub)), nil
	}
	priv, pub, err := GenerateKey()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, priv, 0o600); err != nil {
		return "", fmt.Errorf("write host key: %w", err)
	}
	if err := os.WriteFile(path+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write host key: %w", err)
	}
	return pub, nil
}

// GenerateKey makes an ed25519 key pair: the private key as OpenSSH PEM and the public key in
// authorized_keys form.
func GenerateKey() (privatePEM []byte, authorizedKey string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generate ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, "", fmt.Errorf("encode ed25519 key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", fmt.Errorf("encode ed25519 key: %w", err)
	}
	return pem.EncodeToMemory(block), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), nil
}
