// Package testcluster starts private Redis Clusters (3 masters, 3 replicas, native
// redis-server processes on free loopback ports) for tests, stopped when the test
// ends. Starting one takes about 2 s, so a test package that only reads and writes
// can share one cluster across its tests:
//
//	func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) }
//
//	func TestX(t *testing.T) {
//		c := testcluster.Shared(t)
//		rdb := c.Client() // closed when the test ends
//		key := "{" + t.Name() + "}:stock" // isolate by hash tag, never FLUSHALL
//	}
//
// Tests that kill nodes start their own cluster with Start.
package testcluster

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/rediscluster"
)

// Cluster is a Redis Cluster seen from one test: failures end the test.
type Cluster struct {
	tb testing.TB
	*rediscluster.Cluster
	shared bool
}

// Start starts a cluster owned by tb (options as in rediscluster.Options; the zero
// value is 3+3 nodes, node timeout 1 s) and stops it when the test ends.
func Start(tb testing.TB, opts rediscluster.Options) *Cluster {
	tb.Helper()
	rc, err := rediscluster.Start(tb.TempDir(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rc.Stop() })
	return &Cluster{tb: tb, Cluster: rc}
}

// Client returns a cluster client built by rediscluster.NewClient (no retries,
// slot map reloaded on dial errors), closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	rdb := c.Cluster.Client()
	c.tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// Kill sends SIGKILL to one node. Not allowed on the shared cluster.
func (c *Cluster) Kill(addr string) {
	c.tb.Helper()
	c.mustOwn("Kill")
	if err := c.Cluster.Kill(addr); err != nil {
		c.tb.Fatal(err)
	}
}

// Restart starts a killed node again (see rediscluster.Cluster.Restart). Not allowed
// on the shared cluster.
func (c *Cluster) Restart(addr string) {
	c.tb.Helper()
	c.mustOwn("Restart")
	if err := c.Cluster.Restart(addr); err != nil {
		c.tb.Fatal(err)
	}
}

// WaitHealthy waits until the running nodes form a healthy cluster (see
// rediscluster.Cluster.WaitHealthy), failing the test after timeout.
func (c *Cluster) WaitHealthy(timeout time.Duration) {
	c.tb.Helper()
	if err := c.Cluster.WaitHealthy(timeout); err != nil {
		c.tb.Fatal(err)
	}
}

// Masters returns the current masters' addresses.
func (c *Cluster) Masters() []string {
	c.tb.Helper()
	m, err := c.Cluster.Masters()
	if err != nil {
		c.tb.Fatal(err)
	}
	return m
}

// Replicas returns the current replicas' addresses.
func (c *Cluster) Replicas() []string {
	c.tb.Helper()
	r, err := c.Cluster.Replicas()
	if err != nil {
		c.tb.Fatal(err)
	}
	return r
}

// TagOn returns a hash tag whose slot the master at addr serves.
func (c *Cluster) TagOn(addr, prefix string) string {
	c.tb.Helper()
	tag, err := c.Cluster.TagOn(addr, prefix)
	if err != nil {
		c.tb.Fatal(err)
	}
	return tag
}

func (c *Cluster) mustOwn(op string) {
	if c.shared {
		c.tb.Fatalf("testcluster: %s on the shared cluster would break the package's other tests; use testcluster.Start", op)
	}
}

var shared struct {
	sync.Mutex
	inMain  bool
	cluster *rediscluster.Cluster
	dir     string
	err     error
}

// Main runs the package's tests (m.Run) and then stops the shared cluster, if a test
// started one; it returns the exit code for os.Exit. Shared requires it.
func Main(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.cluster != nil {
		if err := shared.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testcluster: stop the shared cluster:", err)
		}
		os.RemoveAll(shared.dir)
	}
	return code
}

// Shared returns the package's shared cluster (3+3 nodes, default options), started by
// the first test that asks and stopped by Main after the last test. Tests must leave
// its topology alone (Kill and Restart fail the test) and isolate their keys by hash
// tag. If starting it failed, every test that asks fails with that error.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		tb.Fatal("testcluster.Shared needs func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) } to stop the cluster")
	}
	if shared.cluster == nil && shared.err == nil {
		shared.dir, shared.err = os.MkdirTemp("", "testcluster-")
		if shared.err == nil {
			shared.cluster, shared.err = rediscluster.Start(shared.dir, rediscluster.Options{})
			if shared.err != nil {
				os.RemoveAll(shared.dir)
			}
		}
	}
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return &Cluster{tb: tb, Cluster: shared.cluster, shared: true}
}
