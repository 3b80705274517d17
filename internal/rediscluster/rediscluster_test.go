package rediscluster_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/rediscluster"
)

func mustStart(tb testing.TB, dir string, opts rediscluster.Options) *rediscluster.Cluster {
	tb.Helper()
	start := time.Now()
	c, err := rediscluster.Start(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("cluster of %d nodes ready in %v", len(c.Addrs()), time.Since(start).Round(time.Millisecond))
	tb.Cleanup(func() { c.Stop() })
	return c
}

func mustRoles(tb testing.TB, c *rediscluster.Cluster) (masters, replicas []string) {
	tb.Helper()
	masters, err := c.Masters()
	if err != nil {
		tb.Fatal(err)
	}
	replicas, err = c.Replicas()
	if err != nil {
		tb.Fatal(err)
	}
	return masters, replicas
}

// nodeGet reads key on one node directly, bypassing cluster routing.
func nodeGet(tb testing.TB, addr, key string) string {
	tb.Helper()
	cl := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer cl.Close()
	v, err := cl.Get(context.Background(), key).Result()
	if err != nil {
		tb.Fatalf("GET %s on %s: %v", key, addr, err)
	}
	return v
}

// alive reports whether pid is a redis-server that has not exited. An exited child
// not yet reaped (a zombie, state Z) has stopped running.
func alive(pid int) bool {
	proc := "/proc/" + strconv.Itoa(pid)
	comm, err := os.ReadFile(proc + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "redis-server" {
		return false
	}
	stat, err := os.ReadFile(proc + "/stat")
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z")
}

func TestStartServesEveryMasterAndStopLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	c := mustStart(t, dir, rediscluster.Options{})

	masters, replicas := mustRoles(t, c)
	if len(masters) != 3 || len(replicas) != 3 {
		t.Fatalf("got masters %v and replicas %v, want 3 and 3", masters, replicas)
	}
	rdb := c.Client()
	defer rdb.Close()
	ctx := context.Background()
	for _, m := range masters {
		tag, err := c.TagOn(m, "start")
		if err != nil {
			t.Fatal(err)
		}
		key := tag + ":k"
		if err := rdb.Set(ctx, key, m, 0).Err(); err != nil {
			t.Fatalf("SET %s through the cluster client: %v", key, err)
		}
		if got := nodeGet(t, m, key); got != m {
			t.Errorf("GET %s on master %s: got %q, want %q", key, m, got, m)
		}
	}

	var pids []int
	for _, a := range c.Addrs() {
		pid := c.Pid(a)
		if !alive(pid) {
			t.Fatalf("node %s: pid %d is not a running redis-server", a, pid)
		}
		pids = append(pids, pid)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still runs after Stop", pid)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Stop left %d entries in %s, want none", len(ents), dir)
	}
}

// replicaOf returns the running replica whose master is addr.
func replicaOf(t *testing.T, replicas []string, addr string) string {
	t.Helper()
	for _, r := range replicas {
		cl := redis.NewClient(&redis.Options{Addr: r, MaxRetries: -1})
		info, err := cl.Info(context.Background(), "replication").Result()
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "master_port:"+strings.TrimPrefix(addr, "127.0.0.1:")+"\r\n") {
			return r
		}
	}
	t.Fatalf("no replica of %s among %v", addr, replicas)
	return ""
}

func TestKillMasterPromotesReplicaAndClientWritesAgain(t *testing.T) {
	const nodeTimeout = time.Second
	c := mustStart(t, t.TempDir(), rediscluster.Options{NodeTimeout: nodeTimeout})
	masters, replicas := mustRoles(t, c)
	victim := masters[0]
	heir := replicaOf(t, replicas, victim)
	tag, err := c.TagOn(victim, "failover")
	if err != nil {
		t.Fatal(err)
	}
	key := tag + ":k"

	rdb := c.Client()
	defer rdb.Close()
	// The same settings without the periodic backstop: only ReloadOnDialError can
	// bring this one to the promoted replica within the deadline below.
	hookOnly := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: c.Addrs(), MaxRetries: -1, ClusterStateReloadInterval: time.Hour})
	rediscluster.ReloadOnDialError(hookOnly)
	defer hookOnly.Close()
	ctx := context.Background()
	for _, cl := range []*redis.ClusterClient{rdb, hookOnly} {
		if err := cl.Set(ctx, key, "before", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	// Write through each client until a write succeeds. The deadline is a bound for
	// liveness, far above a failover (~2.5 s) and far below the hour hookOnly would
	// need without its hook.
	type result struct {
		took     time.Duration
		failures int
		err      error
	}
	results := make([]chan result, 2)
	for i, cl := range []*redis.ClusterClient{rdb, hookOnly} {
		results[i] = make(chan result, 1)
		go func() {
			var r result
			deadline := killed.Add(30 * time.Second)
			for {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				r.err = cl.Set(cctx, key, "after", 0).Err()
				cancel()
				if r.err == nil || time.Now().After(deadline) {
					r.took = time.Since(killed)
					results[i] <- r
					return
				}
				r.failures++
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	var writable result
	for i, name := range []string{"Client()", "hook-only client"} {
		r := <-results[i]
		if r.err != nil {
			t.Fatalf("%s: no write to %s (slot of killed master %s) within 30 s: %d failures, last: %v",
				name, key, victim, r.failures, r.err)
		}
		t.Logf("%s: first write to the failed slot %v after SIGKILL (%d failed attempts before)",
			name, r.took.Round(time.Millisecond), r.failures)
		if i == 0 {
			writable = r
		}
	}

	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("node-timeout %v: Client() writable %v after SIGKILL; WaitHealthy done at %v",
		nodeTimeout, writable.took.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))

	masters, _ = mustRoles(t, c)
	if !contains(masters, heir) || contains(masters, victim) {
		t.Fatalf("masters after failover: got %v, want %s in place of %s", masters, heir, victim)
	}
	if got := nodeGet(t, heir, key); got != "after" {
		t.Errorf("GET %s on promoted %s: got %q, want %q", key, heir, got, "after")
	}

	// The killed master comes back as a replica of its heir.
	if err := c.Restart(victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted %s healthy %v after SIGKILL", victim, time.Since(killed).Round(time.Millisecond))
	_, replicas = mustRoles(t, c)
	if !contains(replicas, victim) {
		t.Fatalf("replicas after restart: got %v, want %s among them", replicas, victim)
	}
	if err := rdb.Set(ctx, key, "again", 0).Err(); err != nil {
		t.Fatalf("SET after the old master rejoined: %v", err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// make cluster-down's path: a detached cluster stopped from its directory alone.
func TestStopDirStopsDetachedCluster(t *testing.T) {
	dir := t.TempDir()
	c := mustStart(t, dir, rediscluster.Options{Detached: true, Masters: 3, ReplicasPerMaster: 1})
	var pids []int
	for _, a := range c.Addrs() {
		pids = append(pids, c.Pid(a))
	}
	if err := rediscluster.StopDir(dir); err != nil {
		t.Fatal(err)
	}
	for i, pid := range pids {
		if alive(pid) {
			t.Errorf("node %s: pid %d still runs after StopDir", c.Addrs()[i], pid)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("StopDir left %d entries in %s, want none", len(ents), dir)
	}
}

// StopDir must leave alone a pidfile's pid that is not that node's redis-server.
func TestStopDirIgnoresForeignPid(t *testing.T) {
	dir := t.TempDir()
	nodeDir := dir + "/n7100"
	if err := os.MkdirAll(nodeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Our own pid: alive, not a redis-server, not running in nodeDir.
	self := os.Getpid()
	if err := os.WriteFile(nodeDir+"/redis.pid", []byte(strconv.Itoa(self)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rediscluster.StopDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(self, 0); err != nil {
		t.Fatalf("signal 0 to ourselves: %v", err)
	}
	if _, err := os.Stat(nodeDir); !os.IsNotExist(err) {
		t.Errorf("node dir: got %v, want it removed", err)
	}
}

// redisUnder returns the pids of live redis-servers whose working directory is under dir.
func redisUnder(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && strings.HasPrefix(cwd, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestStartThatTimesOutReportsLogsAndLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	c, err := rediscluster.Start(dir, rediscluster.Options{ReadyTimeout: time.Millisecond})
	if err == nil {
		c.Stop()
		t.Fatal("Start with a 1 ms ready timeout: got a cluster, want an error")
	}
	t.Logf("error, first line: %s", strings.SplitN(err.Error(), "\n", 2)[0])
	if !strings.Contains(err.Error(), "redis.log") || !strings.Contains(err.Error(), "Ready to accept connections") {
		t.Errorf("error does not carry the nodes' log tails:\n%v", err)
	}
	if pids := redisUnder(t, dir); len(pids) != 0 {
		t.Errorf("redis-servers %v still run under %s", pids, dir)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed Start left %d entries in %s, want none", len(ents), dir)
	}
}

// TestTLSCluster: a cluster started with TLS speaks TLS only, to clients and between
// its nodes (the replicas sync, the cluster forms): a plain client cannot talk to it, a
// client trusting its CA writes to every master, and the replicas get the writes.
func TestTLSCluster(t *testing.T) {
	files, err := rediscluster.NewTestTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := mustStart(t, t.TempDir(), rediscluster.Options{TLS: &files, Password: "tls-pw"})
	ctx := context.Background()
	plain := redis.NewClient(&redis.Options{Addr: c.Addrs()[0], Password: "tls-pw", MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: time.Second})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Fatal("a plain-text client reached a TLS node")
	}
	rdb := c.Client()
	defer rdb.Close()
	for i := range 30 { // keys over every master
		key := "{t" + strconv.Itoa(i) + "}k"
		if err := rdb.Set(ctx, key, "v", 0).Err(); err != nil {
			t.Fatalf("SET %s over TLS: %v", key, err)
		}
	}
	masters, replicas := mustRoles(t, c)
	if len(masters) != 3 || len(replicas) != 3 {
		t.Fatalf("roles over TLS: %v %v, want 3 masters and 3 replicas", masters, replicas)
	}
	tlsCfg, err := files.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	keys := 0
	for deadline := time.Now().Add(10 * time.Second); keys < 30; time.Sleep(50 * time.Millisecond) {
		keys = 0
		for _, r := range replicas { // the writes reached the replicas, over TLS too
			cl := redis.NewClient(&redis.Options{Addr: r, Password: "tls-pw", TLSConfig: tlsCfg, MaxRetries: -1})
			n, err := cl.DBSize(ctx).Result()
			cl.Close()
			if err != nil {
				t.Fatalf("DBSIZE on replica %s: %v", r, err)
			}
			keys += int(n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas hold %d of the 30 keys", keys)
		}
	}
}
