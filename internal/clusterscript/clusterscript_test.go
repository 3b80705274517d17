package clusterscript_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/clusterscript"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
)

func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) }

// countRun counts its runs per call id (ARGV[1]) in the hash KEYS[1]: a field above 1
// is a script that ran twice.
var countRun = redis.NewScript(`#!lua
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)`)

// slowIncr counts its runs in KEYS[1], then keeps the server busy for 300 ms: longer
// than the client's read timeout in the test, so the reply is lost after the script ran.
var slowIncr = redis.NewScript(slowIncrSrc)

const slowIncrSrc = `#!lua
redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 300000
return 1`

// newClient returns a cluster client as flashstock builds one (no command retries) and
// a clusterscript.Client on it. go-redis's own redirect budget (MaxRedirects) is left
// at its default on purpose: scripts must not depend on it. The periodic slot-map
// reload is off, so only what clusterscript does can move a call to a new node.
func newClient(t *testing.T, addrs []string, readTimeout time.Duration) (*redis.ClusterClient, *clusterscript.Client) {
	t.Helper()
	rdb := redis.NewClusterClient(engine.NoRetriesCluster(&redis.ClusterOptions{
		Addrs: addrs, ReadTimeout: readTimeout, ClusterStateReloadInterval: time.Hour}))
	t.Cleanup(func() { rdb.Close() })
	return rdb, clusterscript.New(rdb, clusterscript.Options{})
}

// nodeClient is a plain client to one node, closed when the test ends.
func nodeClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { cl.Close() })
	return cl
}

func mustDo(t *testing.T, cl *redis.Client, args ...any) any {
	t.Helper()
	v, err := cl.Do(context.Background(), args...).Result()
	if err != nil {
		t.Fatalf("%s: %v: %v", cl.Options().Addr, args, err)
	}
	return v
}

// runs reads the per-call counts of countRun's hash on one node, bypassing routing
// (ASKING first, so a slot being imported can be read too).
func runs(t *testing.T, addr, key string) map[string]string {
	t.Helper()
	cl := nodeClient(t, addr)
	ctx := context.Background()
	var get *redis.MapStringStringCmd
	_, err := cl.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "ASKING")
		get = p.HGetAll(ctx, key)
		return nil
	})
	if err != nil {
		t.Fatalf("HGETALL %s on %s: %v", key, addr, err)
	}
	return get.Val()
}

func wantRuns(t *testing.T, addr, key string, want map[string]string) {
	t.Helper()
	got := runs(t, addr, key)
	if len(got) != len(want) {
		t.Fatalf("runs on %s: got %v, want %v", addr, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("runs on %s: got %v, want %v", addr, got, want)
		}
	}
}

func mustRun(t *testing.T, sc *clusterscript.Client, key, id string) {
	t.Helper()
	if err := sc.Run(context.Background(), countRun, []string{key}, id).Err(); err != nil {
		t.Fatalf("run %s on %s: %v", id, key, err)
	}
}

// A script whose reply is lost (read timeout while it still runs) runs once and
// answers ErrOutcomeUnknown, which the engine's classification keeps as outcome unknown.
func TestLostReplyRunsOnceAndIsOutcomeUnknown(t *testing.T) {
	c := testcluster.Shared(t)
	rdb, sc := newClient(t, c.Addrs(), 100*time.Millisecond)
	ctx := context.Background()
	key := "{" + t.Name() + "}:runs"

	err := sc.Run(ctx, slowIncr, []string{key}).Err()
	if !errors.Is(err, clusterscript.ErrOutcomeUnknown) || errors.Is(err, clusterscript.ErrNotRun) {
		t.Fatalf("Run past the read timeout: got %v, want ErrOutcomeUnknown", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Run past the read timeout: %v does not carry the net.Error timeout", err)
	}
	if werr := engine.WriteErr("take", err); !errors.Is(werr, engine.ErrOutcomeUnknown) {
		t.Errorf("engine.WriteErr: got %v, want engine.ErrOutcomeUnknown", werr)
	}
	t.Logf("error: %v", err)

	// The run may still be going: wait until the server answers and the count settles.
	if n := settledCount(t, rdb, key); n != 1 {
		t.Fatalf("the script ran %d times, want 1", n)
	}
	if s := sc.Stats(); s.OutcomeUnknown != 1 {
		t.Errorf("stats: %+v, want OutcomeUnknown 1", s)
	}
}

// clusterIDs returns each master's node id.
func nodeID(t *testing.T, addr string) string {
	t.Helper()
	return mustDo(t, nodeClient(t, addr), "CLUSTER", "MYID").(string)
}

func slotOf(t *testing.T, addr, key string) int64 {
	t.Helper()
	return mustDo(t, nodeClient(t, addr), "CLUSTER", "KEYSLOT", key).(int64)
}

// startMigration sets slot migrating from src to dst and moves its keys to dst, as
// redis-cli --cluster reshard does, but stops before handing the slot over.
func startMigration(t *testing.T, src, dst string, slot int64) {
	t.Helper()
	srcID, dstID := nodeID(t, src), nodeID(t, dst)
	s, d := nodeClient(t, src), nodeClient(t, dst)
	mustDo(t, d, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID)
	mustDo(t, s, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID)
	host, port, _ := net.SplitHostPort(dst)
	for {
		keys := mustDo(t, s, "CLUSTER", "GETKEYSINSLOT", slot, 100).([]any)
		if len(keys) == 0 {
			return
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		mustDo(t, s, append(args, keys...)...)
	}
}

// finishMigration hands slot to dst on every master (dst first, as the docs say).
func finishMigration(t *testing.T, masters []string, dst string, slot int64) {
	t.Helper()
	dstID := nodeID(t, dst)
	mustDo(t, nodeClient(t, dst), "CLUSTER", "SETSLOT", slot, "NODE", dstID)
	for _, m := range masters {
		if m != dst {
			mustDo(t, nodeClient(t, m), "CLUSTER", "SETSLOT", slot, "NODE", dstID)
		}
	}
}

// waitOwner waits until every node says slot is served by owner.
func waitOwner(t *testing.T, addrs []string, slot int64, owner string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range addrs {
		cl := nodeClient(t, a)
		for {
			shards, err := cl.ClusterShards(context.Background()).Result()
			if err == nil && ownerOf(shards, slot) == owner {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not see slot %d on %s after 10 s: %v %v", a, slot, owner, shards, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func ownerOf(shards []redis.ClusterShard, slot int64) string {
	for _, s := range shards {
		for _, r := range s.Slots {
			if r.Start <= slot && slot <= r.End {
				for _, n := range s.Nodes {
					if n.Role == "master" {
						return n.IP + ":" + strconv.FormatInt(n.Port, 10)
					}
				}
			}
		}
	}
	return ""
}

// After a slot moved to another master, a client with the old slot map gets MOVED,
// follows it and the script runs once, on the new owner.
func TestMovedAfterReshardIsFollowedAndRunsOnce(t *testing.T) {
	c := testcluster.Shared(t)
	masters := c.Masters()
	src, dst := masters[0], masters[1]
	key := c.TagOn(src, t.Name()) + ":runs"
	_, sc := newClient(t, c.Addrs(), 0)
	mustRun(t, sc, key, "before") // loads the slot map: the slot is src's

	slot := slotOf(t, src, key)
	startMigration(t, src, dst, slot)
	finishMigration(t, masters, dst, slot)
	// Let every node learn the new owner, so that the reload the MOVED triggers cannot
	// read a stale map from a node that has not heard yet.
	waitOwner(t, c.Addrs(), slot, dst)

	mustRun(t, sc, key, "after")
	s := sc.Stats()
	if s.Moved != 1 || s.Asked != 0 {
		t.Errorf("stats: %+v, want one MOVED and no ASK", s)
	}
	wantRuns(t, dst, key, map[string]string{"before": "1", "after": "1"})
	// The slot map was reloaded: the next call goes straight to dst. ReloadState is
	// asynchronous, so give it a moment.
	time.Sleep(300 * time.Millisecond)
	mustRun(t, sc, key, "later")
	if s := sc.Stats(); s.Moved != 1 {
		t.Errorf("stats after a third call: %+v, want still one MOVED (slot map reloaded)", s)
	}
	wantRuns(t, dst, key, map[string]string{"before": "1", "after": "1", "later": "1"})
}

// While a slot migrates and the key has already moved, the old owner answers ASK; the
// script goes to the importing node behind ASKING and runs once there. The importing
// node has never seen the script, so the ASK leads to NOSCRIPT, answered by EVAL behind
// ASKING again.
func TestAskDuringMigrationIsFollowedAndRunsOnce(t *testing.T) {
	c := testcluster.Shared(t)
	masters := c.Masters()
	src, dst := masters[0], masters[2]
	key := c.TagOn(src, t.Name()) + ":runs"
	_, sc := newClient(t, c.Addrs(), 0)
	mustRun(t, sc, key, "before")

	mustDo(t, nodeClient(t, dst), "SCRIPT", "FLUSH")
	slot := slotOf(t, src, key)
	startMigration(t, src, dst, slot)
	t.Cleanup(func() { finishMigration(t, masters, dst, slot) })

	mustRun(t, sc, key, "during")
	s := sc.Stats()
	if s.Asked != 1 || s.Moved != 0 || s.NoScript != 1 {
		t.Errorf("stats: %+v, want one ASK, no MOVED, one NOSCRIPT", s)
	}
	wantRuns(t, dst, key, map[string]string{"before": "1", "during": "1"})
	if n := mustDo(t, nodeClient(t, src), "CLUSTER", "COUNTKEYSINSLOT", slot).(int64); n != 0 {
		t.Errorf("the migrating node %s still has %d keys in slot %d", src, n, slot)
	}
}

// After SCRIPT FLUSH every node answers NOSCRIPT: Run sends EVAL instead and the script
// runs once; so does redis.Script.Run through the Client as a redis.Scripter (the
// engine's path), whose EVALSHA refusal is ErrNotRun carrying NOSCRIPT.
func TestNoScriptAfterFlushRunsOnce(t *testing.T) {
	c := testcluster.Shared(t)
	rdb, sc := newClient(t, c.Addrs(), 0)
	ctx := context.Background()
	m := c.Masters()[0]
	key := c.TagOn(m, t.Name()) + ":runs"
	mustRun(t, sc, key, "1")
	flush := func() {
		t.Helper()
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	before := sc.Stats().NoScript
	mustRun(t, sc, key, "2")
	if got := sc.Stats().NoScript - before; got != 1 {
		t.Errorf("NOSCRIPT answered %d times, want 1", got)
	}

	flush()
	err := sc.EvalSha(ctx, countRun.Hash(), []string{key}, "sha").Err()
	if !errors.Is(err, clusterscript.ErrNotRun) || !redis.HasErrorPrefix(err, "NOSCRIPT") {
		t.Fatalf("EvalSha after SCRIPT FLUSH: got %v, want ErrNotRun with NOSCRIPT", err)
	}
	if werr := engine.WriteErr("take", err); errors.Is(werr, engine.ErrOutcomeUnknown) {
		t.Errorf("engine.WriteErr(%v) = %v: a refusal must not be outcome unknown", err, werr)
	}
	if err := countRun.Run(ctx, sc, []string{key}, "3").Err(); err != nil {
		t.Fatalf("redis.Script.Run through the Client after SCRIPT FLUSH: %v", err)
	}
	wantRuns(t, m, key, map[string]string{"1": "1", "2": "1", "3": "1"})
}

// A script's own error is returned as Redis gave it (the script ran); a call that
// cannot be routed is ErrNotRun; a function unknown to the node is loaded from
// Options.Library and called once.
func TestErrorContract(t *testing.T) {
	c := testcluster.Shared(t)
	rdb, sc := newClient(t, c.Addrs(), 0)
	ctx := context.Background()
	key := "{" + t.Name() + "}:runs"

	boom := redis.NewScript("#!lua\nredis.call('INCR', KEYS[1])\nreturn redis.error_reply('BOOM halfway')")
	err := sc.Run(ctx, boom, []string{key}).Err()
	var re redis.Error
	if !errors.As(err, &re) || !strings.HasPrefix(err.Error(), "BOOM") ||
		errors.Is(err, clusterscript.ErrNotRun) || errors.Is(err, clusterscript.ErrOutcomeUnknown) {
		t.Fatalf("script error: got %v, want the redis.Error BOOM as is", err)
	}
	if n, _ := rdb.Get(ctx, key).Int(); n != 1 {
		t.Errorf("the failing script ran %d times, want 1", n)
	}

	if err := sc.Run(ctx, countRun, nil, "x").Err(); !errors.Is(err, clusterscript.ErrNotRun) {
		t.Errorf("Run without keys: got %v, want ErrNotRun", err)
	}

	err = sc.FCall(ctx, "fs_count", []string{key + "f"}, "a").Err()
	if !errors.Is(err, clusterscript.ErrNotRun) {
		t.Fatalf("FCall of an unknown function without a library: got %v, want ErrNotRun", err)
	}
	lib := "#!lua name=fs_" + strconv.FormatInt(time.Now().UnixNano(), 10) + "\n" +
		"redis.register_function('fs_count', function(keys, args) return redis.call('HINCRBY', keys[1], args[1], 1) end)"
	withLib := clusterscript.New(rdb, clusterscript.Options{Library: lib})
	if err := withLib.FCall(ctx, "fs_count", []string{key + "f"}, "a").Err(); err != nil {
		t.Fatalf("FCall with Options.Library: %v", err)
	}
	if got := rdb.HGet(ctx, key+"f", "a").Val(); got != "1" {
		t.Errorf("function ran %s times, want 1", got)
	}
	// Leave no function behind on the shared cluster.
	_ = rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return m.FunctionFlush(ctx).Err()
	})
}

// replicaOf returns the replica whose master is addr.
func replicaOf(t *testing.T, c *testcluster.Cluster, addr string) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	for _, r := range c.Replicas() {
		info := nodeClient(t, r).Info(context.Background(), "replication").Val()
		if strings.Contains(info, "master_port:"+port+"\r\n") {
			return r
		}
	}
	t.Fatalf("no replica of %s", addr)
	return ""
}

// A master is killed while 6 goroutines run scripts on its slot and 2 on another
// master's. Once its replica is promoted, scripts succeed again within a few seconds,
// through this package alone (no periodic slot-map reload, no dial hook), and no call
// ran twice: every call id is counted at most once, every call answered ErrNotRun is
// absent, and every call that started after the kill and succeeded is there. The
// promoted replica has no script cache, so NOSCRIPT is met and answered. The healthy
// master answers CLUSTERDOWN while the cluster lacks the failed slots
// (cluster-require-full-coverage yes): those calls are retried, not failed.
func TestMasterKillFailoverRunsEachScriptAtMostOnce(t *testing.T) {
	c := testcluster.Start(t, rediscluster.Options{})
	victim := c.Masters()[0]
	heir := replicaOf(t, c, victim)
	key := c.TagOn(victim, "failover") + ":runs"
	healthy := c.Masters()[1]
	other := c.TagOn(healthy, "healthy") + ":runs"
	_, sc := newClient(t, c.Addrs(), 0)
	mustRun(t, sc, key, "warm")
	mustRun(t, sc, other, "warm")

	type result struct {
		key, id    string
		start, end time.Time
		err        error
	}
	var (
		stop    = make(chan struct{})
		results = make(chan result, 1<<16)
		wg      sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := strconv.Itoa(w) + "-" + strconv.Itoa(i)
				k := key
				if w >= 6 {
					k = other
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				r := result{key: k, id: id, start: time.Now()}
				r.err = sc.Run(ctx, countRun, []string{k}, id).Err()
				r.end = time.Now()
				cancel()
				results <- r
				if r.err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}

	time.Sleep(300 * time.Millisecond)
	c.Kill(victim)
	killed := time.Now()
	// Watch the heir for its promotion.
	promotedAt := make(chan time.Time, 1)
	go func() {
		cl := redis.NewClient(&redis.Options{Addr: heir, MaxRetries: -1})
		defer cl.Close()
		for time.Since(killed) < 20*time.Second {
			if v, err := cl.Do(context.Background(), "ROLE").Slice(); err == nil && len(v) > 0 && v[0] == "master" {
				promotedAt <- time.Now()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		close(promotedAt)
	}()

	// Run until a second past the first success that started after the kill.
	var all []result
	var firstOK time.Time
	deadline := killed.Add(20 * time.Second)
	for firstOK.IsZero() || time.Since(firstOK) < time.Second {
		if time.Now().After(deadline) {
			break
		}
		select {
		case r := <-results:
			all = append(all, r)
			if r.err == nil && r.key == key && r.start.After(killed) && (firstOK.IsZero() || r.end.Before(firstOK)) {
				firstOK = r.end
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	close(results)
	for r := range results {
		all = append(all, r)
	}
	promoted, wasPromoted := <-promotedAt
	if !wasPromoted {
		t.Fatalf("%s was not promoted within 20 s of killing %s", heir, victim)
	}
	if firstOK.IsZero() {
		t.Fatalf("no script succeeded within 20 s of killing %s (promoted after %v); stats %+v",
			victim, promoted.Sub(killed).Round(time.Millisecond), sc.Stats())
	}

	got := map[string]map[string]string{key: runs(t, heir, key), other: runs(t, healthy, other)}
	var ok, okAfterKill, unknown, notRun, lostAcked int
	for _, r := range all {
		n := got[r.key][r.id]
		switch {
		case r.err == nil:
			ok++
			if r.start.After(killed) {
				okAfterKill++
				if n != "1" {
					t.Errorf("call %s succeeded after the kill but ran %q times on the new master", r.id, n)
				}
			} else if n == "" {
				lostAcked++ // acknowledged by the old master, not replicated before the kill
			}
		case errors.Is(r.err, clusterscript.ErrNotRun):
			notRun++
			if n != "" {
				t.Errorf("call %s answered ErrNotRun (%v) but ran %s times", r.id, r.err, n)
			}
		case errors.Is(r.err, clusterscript.ErrOutcomeUnknown):
			unknown++
		default:
			t.Errorf("call %s: unexpected error %v", r.id, r.err)
		}
	}
	for k, m := range got {
		for id, n := range m {
			if n != "1" {
				t.Errorf("call %s on %s ran %s times", id, k, n)
			}
		}
	}
	s := sc.Stats()
	if s.NoScript == 0 {
		t.Errorf("stats %+v: the promoted replica answered no NOSCRIPT", s)
	}
	if firstOK.Sub(promoted) > 5*time.Second {
		t.Errorf("first success %v after the promotion, want within 5 s", firstOK.Sub(promoted).Round(time.Millisecond))
	}
	t.Logf("SIGKILL %s: %s promoted after %v; first script success after %v (%v after the promotion)",
		victim, heir, promoted.Sub(killed).Round(time.Millisecond), firstOK.Sub(killed).Round(time.Millisecond),
		firstOK.Sub(promoted).Round(time.Millisecond))
	t.Logf("%d calls: %d ok (%d started after the kill), %d ErrNotRun, %d ErrOutcomeUnknown; "+
		"%d acknowledged before the kill and lost with it (asynchronous replication); ran twice: none",
		len(all), ok, okAfterKill, notRun, unknown, lostAcked)
	t.Logf("stats %+v", s)
}

// While a slot migrates and only some of a script's keys have moved, the old owner
// answers TRYAGAIN (nothing ran); the call backs off and retries, and runs once after
// the other key has moved too and the slot was handed over.
func TestTryAgainDuringMigrationIsRetriedAndRunsOnce(t *testing.T) {
	c := testcluster.Shared(t)
	masters := c.Masters()
	src, dst := masters[1], masters[2]
	tag := c.TagOn(src, t.Name())
	a, b := tag+":a", tag+":b"
	_, sc := newClient(t, c.Addrs(), 0)
	ctx := context.Background()
	both := redis.NewScript("#!lua\nredis.call('INCR', KEYS[1])\nreturn redis.call('INCR', KEYS[2])")
	if err := sc.Run(ctx, both, []string{a, b}).Err(); err != nil {
		t.Fatal(err)
	}

	slot := slotOf(t, src, a)
	s, d := nodeClient(t, src), nodeClient(t, dst)
	mustDo(t, d, "CLUSTER", "SETSLOT", slot, "IMPORTING", nodeID(t, src))
	mustDo(t, s, "CLUSTER", "SETSLOT", slot, "MIGRATING", nodeID(t, dst))
	host, port, _ := net.SplitHostPort(dst)
	mustDo(t, s, "MIGRATE", host, port, a, 0, 5000)
	dstID := nodeID(t, dst)
	var others []*redis.Client
	for _, m := range masters {
		if m != dst {
			others = append(others, nodeClient(t, m))
		}
	}
	moved := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		err := s.Do(ctx, "MIGRATE", host, port, b, 0, 5000).Err()
		for _, cl := range append([]*redis.Client{d}, others...) {
			if err == nil {
				err = cl.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err()
			}
		}
		moved <- err
	}()

	start := time.Now()
	err := sc.Run(ctx, both, []string{a, b}).Err()
	took := time.Since(start)
	if merr := <-moved; merr != nil {
		t.Fatalf("moving the rest of slot %d: %v", slot, merr)
	}
	if err != nil {
		t.Fatalf("Run across a split slot: %v", err)
	}
	st := sc.Stats()
	if st.Refused == 0 {
		t.Errorf("stats %+v: no TRYAGAIN met", st)
	}
	t.Logf("ran after %v, %d TRYAGAIN refusals; stats %+v", took.Round(time.Millisecond), st.Refused, st)
	for _, k := range []string{a, b} {
		if got := nodeClient(t, dst).Get(ctx, k).Val(); got != "2" {
			t.Errorf("%s on %s: got %q, want 2 (two runs in all)", k, dst, got)
		}
	}
}

// RunBatch pipelines calls per master: after SCRIPT FLUSH every call meets NOSCRIPT in
// the pipeline and goes on alone through Run; the next batch runs in the pipelines
// alone. Each call runs once.
func TestRunBatchRunsEachCallOnce(t *testing.T) {
	c := testcluster.Shared(t)
	rdb, sc := newClient(t, c.Addrs(), 0)
	ctx := context.Background()
	masters := c.Masters()
	keyOf := map[string]string{}
	for _, m := range masters {
		keyOf[m] = c.TagOn(m, t.Name()) + ":runs"
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for round, wantNoScript := range []uint64{3, 0} {
		before := sc.Stats()
		var calls []clusterscript.Call
		for i := range 30 {
			key := keyOf[masters[i%len(masters)]]
			calls = append(calls, clusterscript.Call{Script: countRun, Keys: []string{key},
				Args: []any{strconv.Itoa(round) + "-" + strconv.Itoa(i)}})
		}
		for i, cmd := range sc.RunBatch(ctx, calls) {
			if v, err := cmd.Int(); err != nil || v != 1 {
				t.Fatalf("round %d call %d: got %v, %v; want 1", round, i, v, err)
			}
		}
		after := sc.Stats()
		// One NOSCRIPT per master: the first call through Run sends EVAL, which
		// caches the script, so the master's later calls find it.
		if got := after.NoScript - before.NoScript; got != wantNoScript || after.Calls-before.Calls != 30 {
			t.Errorf("round %d: stats before %+v, after %+v: want %d NOSCRIPT and 30 calls", round, before, after, wantNoScript)
		}
	}
	for _, m := range masters {
		got := runs(t, m, keyOf[m])
		if len(got) != 20 {
			t.Errorf("%s: %d calls ran, want 20: %v", m, len(got), got)
		}
		for id, n := range got {
			if n != "1" {
				t.Errorf("%s: call %s ran %s times", m, id, n)
			}
		}
	}
}

// A batch whose replies are lost (three slow scripts on one master, read timeout 100
// ms): every call is ErrOutcomeUnknown and each ran exactly once.
func TestRunBatchLostRepliesAreOutcomeUnknownAndNotResent(t *testing.T) {
	c := testcluster.Shared(t)
	rdb, sc := newClient(t, c.Addrs(), 100*time.Millisecond)
	ctx := context.Background()
	key := "{" + t.Name() + "}:runs"
	if err := sc.Run(ctx, countRun, []string{key + "-warm"}, "x").Err(); err != nil {
		t.Fatal(err)
	}
	// Load slowIncr without running it, so the pipeline's EVALSHA finds it.
	if err := rdb.ScriptLoad(ctx, slowIncrSrc).Err(); err != nil {
		t.Fatal(err)
	}
	calls := []clusterscript.Call{{Script: slowIncr, Keys: []string{key}}, {Script: slowIncr, Keys: []string{key}},
		{Script: slowIncr, Keys: []string{key}}}
	for i, cmd := range sc.RunBatch(ctx, calls) {
		if err := cmd.Err(); !errors.Is(err, clusterscript.ErrOutcomeUnknown) {
			t.Fatalf("call %d: got %v, want ErrOutcomeUnknown", i, err)
		}
	}
	if n := settledCount(t, rdb, key); n != 3 {
		t.Fatalf("3 calls ran %d times in all, want 3", n)
	}
}

// The happy path's cost against go-redis's own ClusterClient (redis.Script.Run):
//
//	go test -run - -bench . -benchtime 3s ./internal/clusterscript/
func BenchmarkScriptRun(b *testing.B) {
	c := testcluster.Shared(b)
	rdb := redis.NewClusterClient(engine.NoRetriesCluster(&redis.ClusterOptions{Addrs: c.Addrs()}))
	defer rdb.Close()
	sc := clusterscript.New(rdb, clusterscript.Options{})
	incr := redis.NewScript("#!lua\nreturn redis.call('INCR', KEYS[1])")
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		run  func(key string) error
	}{
		{"ClusterClient", func(key string) error { return incr.Run(ctx, rdb, []string{key}).Err() }},
		{"clusterscript", func(key string) error { return sc.Run(ctx, incr, []string{key}).Err() }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var n atomic.Int64
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				key := "{bench-" + strconv.FormatInt(n.Add(1), 10) + "}:n"
				for pb.Next() {
					if err := bc.run(key); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestWaitReplicas: with WaitReplicas 1 (one replica per master) Run and RunBatch succeed;
// with WaitReplicas 2, which no master can meet, every call that ran is ErrNotReplicated
// (an ErrOutcomeUnknown), in Run and in RunBatch, and none was sent again.
func TestWaitReplicas(t *testing.T) {
	c := testcluster.Shared(t)
	ctx := context.Background()
	rdb := redis.NewClusterClient(engine.NoRetriesCluster(&redis.ClusterOptions{Addrs: c.Addrs()}))
	t.Cleanup(func() { rdb.Close() })
	one := clusterscript.New(rdb, clusterscript.Options{WaitReplicas: 1, WaitTimeout: time.Second})
	two := clusterscript.New(rdb, clusterscript.Options{WaitReplicas: 2, WaitTimeout: 20 * time.Millisecond})
	masters := c.Masters()
	key := func(i int) string { return c.TagOn(masters[i%len(masters)], t.Name()) + ":runs" }
	if err := one.Run(ctx, countRun, []string{key(0)}, "one").Err(); err != nil {
		t.Fatalf("WAIT 1: %v", err)
	}
	err := two.Run(ctx, countRun, []string{key(0)}, "two").Err()
	if !errors.Is(err, clusterscript.ErrNotReplicated) || !errors.Is(err, clusterscript.ErrOutcomeUnknown) {
		t.Fatalf("WAIT 2 with one replica: got %v, want ErrNotReplicated (ErrOutcomeUnknown)", err)
	}
	var calls []clusterscript.Call
	for i := range 6 {
		calls = append(calls, clusterscript.Call{Script: countRun, Keys: []string{key(i)}, Args: []any{"batch-" + strconv.Itoa(i)}})
	}
	for i, cmd := range one.RunBatch(ctx, calls) {
		if err := cmd.Err(); err != nil {
			t.Fatalf("batch with WAIT 1, call %d: %v", i, err)
		}
	}
	for i := range calls {
		calls[i].Args = []any{"batch2-" + strconv.Itoa(i)}
	}
	for i, cmd := range two.RunBatch(ctx, calls) {
		if err := cmd.Err(); !errors.Is(err, clusterscript.ErrNotReplicated) {
			t.Fatalf("batch with WAIT 2, call %d: got %v, want ErrNotReplicated", i, err)
		}
	}
	for i, m := range masters {
		for id, n := range runs(t, m, key(i)) {
			if n != "1" {
				t.Errorf("%s: call %s ran %s times", m, id, n)
			}
		}
	}
	if got := runs(t, masters[0], key(0)); got["two"] != "1" || got["batch2-0"] != "1" {
		t.Errorf("calls without enough replicas did not run once: %v", got)
	}
}

// settledCount reads the integer at key until two reads 500 ms apart agree (scripts whose
// replies were lost may still be running), failing the test after 10 s.
func settledCount(t *testing.T, rdb *redis.ClusterClient, key string) int {
	t.Helper()
	n := 0
	deadline := time.Now().Add(10 * time.Second)
	for prev := -1; n != prev; {
		prev = n
		if time.Now().After(deadline) {
			t.Fatal("run count did not settle")
		}
		time.Sleep(500 * time.Millisecond)
		if v, err := rdb.Get(context.Background(), key).Int(); err == nil {
			n = v
		}
	}
	return n
}
