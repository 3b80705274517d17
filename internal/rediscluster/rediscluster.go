// Package rediscluster starts a private Redis Cluster of native redis-server processes
// on loopback ports, for tests (through testcluster) and for people (make cluster-up).
// It creates the cluster itself (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE: no redis-cli
// needed) and waits for real readiness, which is more than cluster_state:ok (see
// WaitHealthy). The redis-server binary (7.0 or later) must be on PATH.
//
// Nodes run without persistence. A master killed without persistence must not come
// back before its replica was promoted: it would return empty and its replicas would
// wipe themselves to match (docs in /work/shared/cluster.md §3.5). Restart is meant
// for a killed master after WaitHealthy saw the failover.
package rediscluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options shape the cluster. The zero value is 3 masters with 1 replica each, a
// 1000 ms node timeout, free ports and 30 s to become ready.
type Options struct {
	// Masters is the number of masters sharing the 16384 slots (default 3). Zero
	// and negative values mean the default, here and below.
	Masters int
	// ReplicasPerMaster is the number of replicas of each master (default 1; with 2,
	// WAIT 1 keeps working while a failed master is away). A cluster without
	// replicas cannot fail over, so there is no way to ask for 0.
	ReplicasPerMaster int
	// NodeTimeout is cluster-node-timeout (default 1000 ms). Failover takes about
	// 2.4 x NodeTimeout on a 2-core box.
	NodeTimeout time.Duration
	// BasePort, if set, puts node i on BasePort+i (and its bus on BasePort+i+10000);
	// Start fails if one is taken. Zero picks free ports.
	BasePort int
	// ReadyTimeout bounds Start's wait for readiness (default 30 s).
	ReadyTimeout time.Duration
	// Args are extra redis-server configuration arguments for every node, for
	// example "--cluster-require-full-coverage", "no".
	Args []string
	// Password, if set, is every node's requirepass and masterauth: clients (Client,
	// and the health checks here) must AUTH with it.
	Password string
	// TLS, if set, makes every node speak TLS only, to clients, replicas and the
	// cluster bus, with these files (NewTestTLS makes some); clients trust its CA.
	TLS *TLSFiles
	// Detached lets the nodes outlive this process (for make cluster-up); stop them
	// with StopDir. Without it the nodes die with this process.
	Detached bool
}

func (o *Options) setDefaults() {
	if o.Masters <= 0 {
		o.Masters = 3
	}
	if o.ReplicasPerMaster <= 0 {
		o.ReplicasPerMaster = 1
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
}

// Cluster is a running Redis Cluster. Its methods are safe for concurrent use.
type Cluster struct {
	opts Options
	dir  string
	bin  string
	args []string    // redis-server arguments shared by every node
	tls  *tls.Config // how clients reach the nodes if they speak TLS (Options.TLS), else nil

	mu    sync.Mutex
	nodes []*node // node i lives in dir/n<port>; the first Masters were created as masters
}

// Start starts Masters*(1+ReplicasPerMaster) redis-server processes with their files
// under dir (one subdirectory per node), creates the cluster and waits until it is
// ready (see WaitHealthy). On error every process it started is stopped and the error
// carries the tail of each node's log.
func Start(dir string, opts Options) (*Cluster, error) {
	opts.setDefaults()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is not on PATH (Debian package redis-server; `make deps` installs it): %w", err)
	}
	n := opts.Masters * (1 + opts.ReplicasPerMaster)
	ports, err := pickPorts(opts.BasePort, n)
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, dir: dir, bin: bin}
	args := []string{"--bind", "127.0.0.1", "--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10),
		"--save", "", "--appendonly", "no",
		// Redis 7 waits 5 s before a diskless full sync to batch replicas; one
		// replica per sync here, so start at once.
		"--repl-diskless-sync-delay", "0",
		"--daemonize", "no"}
	if opts.Password != "" {
		args = append(args, "--requirepass", opts.Password, "--masterauth", opts.Password)
	}
	if t := opts.TLS; t != nil {
		args = append(args, "--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no",
			"--tls-cert-file", t.CertFile, "--tls-key-file", t.KeyFile, "--tls-ca-cert-file", t.CAFile)
		if c.tls, err = t.ClientConfig(); err != nil {
			return nil, fmt.Errorf("rediscluster: TLS: %w", err)
		}
	}
	c.args = slices.Concat(args, opts.Args)
	for _, p := range ports {
		nd, err := c.newNode(p)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, nd)
	}
	if err := c.startAll(); err != nil {
		c.Stop()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.ReadyTimeout)
	defer cancel()
	if err := c.create(ctx); err != nil {
		err = fmt.Errorf("rediscluster: create: %w\n%s", err, c.logTails())
		c.Stop()
		return nil, err
	}
	if err := c.WaitHealthy(time.Until(deadlineOf(ctx))); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// newNode describes the node on port p, in a fresh directory under c.dir.
func (c *Cluster) newNode(p int) (*node, error) {
	d := filepath.Join(c.dir, "n"+strconv.Itoa(p))
	if err := os.RemoveAll(d); err != nil {
		return nil, err
	}
	n := &node{addr: "127.0.0.1:" + strconv.Itoa(p), port: p, dir: d, password: c.opts.Password, tls: c.tls}
	n.args = slices.Concat([]string{"--pidfile", n.pidfile(), "--logfile", n.logfile()}, c.args)
	return n, nil
}

func pickPorts(base, n int) ([]int, error) {
	if base == 0 {
		return freePorts(n, nil)
	}
	var ports []int
	for p := base; p < base+n; p++ {
		for _, q := range []int{p, p + busOffset} {
			if !portFree(q) {
				return nil, fmt.Errorf("rediscluster: port %d is taken (node ports %d-%d and bus ports %d-%d must be free)",
					q, base, base+n-1, base+busOffset, base+n-1+busOffset)
			}
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func (c *Cluster) startAll() error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.start(c.bin, c.opts.Detached)
		}()
	}
	wg.Wait()
	// With free ports, a node that could not start most likely lost its port or bus
	// port to another process after freePorts checked it: move it, twice at most.
	for i := range c.nodes {
		for try := 0; errs[i] != nil && c.opts.BasePort == 0 && try < 2; try++ {
			os.RemoveAll(c.nodes[i].dir)
			var taken []int
			for _, n := range c.nodes {
				taken = append(taken, n.port)
			}
			p, err := freePorts(1, taken)
			if err != nil {
				return err
			}
			n, err := c.newNode(p[0])
			if err != nil {
				return err
			}
			c.nodes[i] = n
			errs[i] = n.start(c.bin, c.opts.Detached)
		}
	}
	return errors.Join(errs...)
}

// Dir is the directory holding the nodes' subdirectories (n<port>/redis.log, nodes.conf).
func (c *Cluster) Dir() string { return c.dir }

// Addrs returns every node's address ("127.0.0.1:port"), masters as created first:
// seeds for a cluster client.
func (c *Cluster) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr
	}
	return addrs
}

// Pid returns the process id of the node at addr, or 0 if it is not running.
func (c *Cluster) Pid(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.addr == addr && n.running() {
			return n.pid()
		}
	}
	return 0
}

// Masters returns the addresses of the running nodes that currently say they are
// masters (ROLE), sorted. It reads the nodes live, so it sees failovers.
func (c *Cluster) Masters() ([]string, error) { return c.withRole("master") }

// Replicas returns the addresses of the running nodes that currently say they are
// replicas (ROLE), sorted.
func (c *Cluster) Replicas() ([]string, error) { return c.withRole("slave") }

func (c *Cluster) withRole(role string) ([]string, error) {
	var addrs []string
	for _, n := range c.running() {
		r, err := roleOf(n)
		if err != nil {
			return nil, err
		}
		if r == role {
			addrs = append(addrs, n.addr)
		}
	}
	slices.Sort(addrs)
	return addrs, nil
}

func roleOf(n *node) (string, error) {
	cl := n.client()
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := cl.Do(ctx, "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return "", fmt.Errorf("rediscluster: ROLE on %s: %v", n.addr, err)
	}
	r, _ := v[0].(string)
	return r, nil
}

// running returns the nodes this process runs and that have not exited.
func (c *Cluster) running() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var up []*node
	for _, n := range c.nodes {
		if n.running() {
			up = append(up, n)
		}
	}
	return up
}

func (c *Cluster) node(addr string) (*node, error) {
	for _, n := range c.nodes {
		if n.addr == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("rediscluster: no node %s in this cluster", addr)
}

// Kill sends SIGKILL to the node at addr and waits until it is gone. Killing a node
// that is not running is not an error.
func (c *Cluster) Kill(addr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.node(addr)
	if err != nil {
		return err
	}
	n.kill()
	return nil
}

// Restart starts a killed node again on its port and directory, and waits until it
// answers PING. It keeps its nodes.conf, so it rejoins the cluster; it has no data
// (no persistence), so restart a killed master only after its replica took over
// (WaitHealthy), and then call WaitHealthy again to see it resynced as a replica.
func (c *Cluster) Restart(addr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.node(addr)
	if err != nil {
		return err
	}
	if n.running() {
		return fmt.Errorf("rediscluster: node %s is running; Kill it first", addr)
	}
	return n.start(c.bin, c.opts.Detached)
}

// Stop kills every node, waits until each is gone and removes their directories. It
// is safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, n := range c.nodes {
		n.kill()
		if err := os.RemoveAll(n.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// logTails returns the last lines of every node's log, for error messages.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", n.addr, n.logfile(), tail(n.logfile(), 8))
	}
	return b.String()
}

// hostPort splits "127.0.0.1:7100".
func hostPort(addr string) (string, int) {
	h, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return h, port
}
