package rediscluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// busOffset is how far above its client port a node listens for the cluster bus.
const busOffset = 10000

// node is one redis-server process of the cluster.
type node struct {
	addr string
	port int
	dir  string
	args []string // everything but --port and --dir
	// password is the node's requirepass ("" none).
	password string
	// tls, if set, is how a client reaches the node, which then speaks TLS only.
	tls *tls.Config

	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been reaped
}

func (n *node) pidfile() string { return filepath.Join(n.dir, "redis.pid") }
func (n *node) logfile() string { return filepath.Join(n.dir, "redis.log") }

// running reports whether this process started the node and it has not exited.
func (n *node) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// start runs redis-server and waits until it answers PING or exits. With detached,
// the process gets its own session and outlives this one (make cluster-up); without,
// the kernel kills it if this process dies (a test binary killed by its timeout
// must not leave nodes behind).
func (n *node) start(bin string, detached bool) error {
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return fmt.Errorf("node %s: %w", n.addr, err)
	}
	port := []string{"--port", strconv.Itoa(n.port)}
	if n.tls != nil {
		port = []string{"--port", "0", "--tls-port", strconv.Itoa(n.port)}
	}
	args := append(append(port, "--dir", n.dir), n.args...)
	cmd := exec.Command(bin, args...)
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node %s: start redis-server: %w", n.addr, err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(n.exited)

	c := n.client()
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("node %s: redis-server exited at start:\n%s", n.addr, tail(n.logfile(), 10))
		default:
		}
		if time.Now().After(deadline) {
			n.kill()
			return fmt.Errorf("node %s: no answer to PING in 10s: %w\n%s", n.addr, err, tail(n.logfile(), 10))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits until the process is reaped. Safe to call on a node
// that is not running.
func (n *node) kill() {
	if !n.running() {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
}

func (n *node) pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// client is a plain client to this node alone, for administration and health checks.
func (n *node) client() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: n.addr, Password: n.password, TLSConfig: n.tls, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, PoolSize: 2,
	})
}

// freePorts returns n loopback ports that are free together with their bus ports
// (port+10000), distinct from each other and from avoid (and their bus ports).
// Another process may still take one before redis-server binds it: Start then moves
// that node to new ports.
func freePorts(n int, avoid []int) ([]int, error) {
	taken := map[int]bool{}
	for _, p := range avoid {
		taken[p], taken[p+busOffset] = true, true
	}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, errors.New("rediscluster: no free loopback port pair (port, port+10000) found")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("rediscluster: find a free port: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+busOffset > 65535 || taken[p] || taken[p+busOffset] || !portFree(p+busOffset) {
			l.Close()
			continue
		}
		l.Close()
		taken[p], taken[p+busOffset] = true, true
		ports = append(ports, p)
	}
	return ports, nil
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// tail returns the last n lines of a file, indented, or a note saying why not.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "    (no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// StopDir stops a cluster started with Options.Detached in dir, from any process: for
// each node directory it reads redis.pid and signals that pid only if it is still a
// redis-server whose working directory is that node directory (a recycled pid is left
// alone). SIGTERM, up to 5 s, then SIGKILL; then it removes the node directories.
// Directories without a running node are removed too.
func StopDir(dir string) error {
	nodeDirs, err := filepath.Glob(filepath.Join(dir, "n[0-9]*"))
	if err != nil {
		return err
	}
	pids := map[string]int{}
	for _, d := range nodeDirs {
		if pid := ourPid(d); pid != 0 {
			pids[d] = pid
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	var errs []error
	deadline := time.Now().Add(5 * time.Second)
	for d, pid := range pids {
		for ourPid(d) == pid && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if ourPid(d) == pid {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			for i := 0; ourPid(d) == pid && i < 100; i++ {
				time.Sleep(20 * time.Millisecond)
			}
			if ourPid(d) == pid {
				errs = append(errs, fmt.Errorf("rediscluster: pid %d (%s) survived SIGKILL", pid, d))
				continue
			}
		}
	}
	for _, d := range nodeDirs {
		if _, alive := pids[d]; alive && ourPid(d) != 0 {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ourPid returns the pid in nodeDir/redis.pid if that process is a live redis-server
// running in nodeDir, else 0.
func ourPid(nodeDir string) int {
	b, err := os.ReadFile(filepath.Join(nodeDir, "redis.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	proc := "/proc/" + strconv.Itoa(pid)
	comm, err := os.ReadFile(proc + "/comm")
	if err != nil || !bytes.Equal(bytes.TrimSpace(comm), []byte("redis-server")) {
		return 0
	}
	if stat, err := os.ReadFile(proc + "/stat"); err == nil && isZombie(stat) {
		return 0
	}
	cwd, err := os.Readlink(proc + "/cwd")
	if err != nil {
		return 0
	}
	want, err := filepath.Abs(nodeDir)
	if err != nil {
		return 0
	}
	if w, err := filepath.EvalSymlinks(want); err == nil {
		want = w
	}
	if cwd != want {
		return 0
	}
	return pid
}

// isZombie reads the state field of /proc/PID/stat ("pid (comm) S ...").
func isZombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
