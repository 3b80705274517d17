package suite

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/latency"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/loadgen"
)

// The cluster target (`flashstock bench -target cluster`): the carts of
// engine.BenchmarkPartitionCarts on one redis-server and on a private local 3+3 Redis
// Cluster, from one run, with per-node figures for the capacity projection in
// docs/OPERATIONS.md.
const (
	ClusterTarget = "cluster"
	// The cases' targets: one redis-server with one partition, and the cluster with
	// ClusterPartitions partitions without and with WAIT 1.
	TargetSingleNode   = "single-node"
	TargetCluster      = "cluster"
	TargetClusterWait1 = "cluster-wait1"
	// The workloads: two-line carts of one group (one partition), and two-line carts
	// whose lines live in two partitions (the cross-partition protocol).
	SinglePartition = "single-partition"
	CrossPartition  = "cross-partition"
	// ClusterPartitions is the engine's partition count on the cluster.
	ClusterPartitions = 12
	// cartGroups is how many groups (carts) the workloads spread over.
	cartGroups = 12
	// ClusterDuration is each case's length when neither -duration nor -buyers is given.
	ClusterDuration = 5 * time.Second
)

// The names of the cluster target's ratios in the report.
const (
	RatioClusterToSingleNode      = "cluster single-partition carts/s ÷ single-node (target ≥ 0.8)"
	RatioClusterWait1ToSingleNode = "cluster-wait1 single-partition carts/s ÷ single-node"
	RatioCrossToSingle            = "cluster cross-partition carts/s ÷ single-partition (target ≥ 0.35)"
	RatioCrossToSingleWait1       = "cluster-wait1 cross-partition carts/s ÷ single-partition"
)

// cartCase is one measured case of the cluster target.
type cartCase struct {
	target, scenario string
	wait             int
}

// runCluster runs the cluster target's five cases into rep: single-node (on
// f.RedisURL, or a private redis-server) and the four cluster cases on one private 3+3
// cluster, whose data is flushed after each case (or on f.ClusterAddrs, never
// flushed); with f.Rounds > 1, that many rounds of the five, interleaved, so that every
// ratio compares figures taken seconds apart (the ratios then compare medians). Every server it started is stopped and its files
// removed when it returns, whether it succeeded, failed or ctx was cancelled.
func runCluster(ctx context.Context, f Options, rep *loadgen.Report) error {
	say := func(format string, args ...any) {
		if f.Log != nil {
			fmt.Fprintf(f.Log, "bench: "+format+"\n", args...)
		}
	}
	load0 := loadAverage()

	// One redis-server, one partition: today's layout.
	rdb, stop, err := redisClient(f.RedisURL, f.Concurrency)
	if err != nil {
		return err
	}
	defer stop()
	addr := rdb.Options().Addr
	say("single node: redis-server %s on %s", redisVersion(), addr)
	single := []nodeRef{{addr: addr, role: "master", partitions: 1, c: rdb}}

	// A private 3+3 cluster, or the one given.
	addrs, private := splitAddrs(f.ClusterAddrs), f.ClusterAddrs == ""
	if private {
		dir, err := os.MkdirTemp("", "flashstock-bench-cluster-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		t0 := time.Now()
		rc, err := rediscluster.Start(dir, rediscluster.Options{})
		if err != nil {
			return err
		}
		defer rc.Stop()
		addrs = rc.Addrs()
		say("cluster: 3 masters + 3 replicas (redis-server %s, node timeout 1 s, no persistence) ready in %.1fs: %s",
			redisVersion(), time.Since(t0).Seconds(), strings.Join(addrs, ","))
	}
	if private {
		f.ClusterAuth = rediscluster.ClientOptions{} // the private cluster asks for none
	}
	nodes, err := clusterNodeClients(ctx, addrs, f.ClusterAuth)
	defer func() {
		for _, c := range nodes {
			c.Close()
		}
	}()
	if err != nil {
		return err
	}
	if !private {
		say("cluster: %d nodes of %s (not flushed: each case's SKUs stay)", len(nodes), f.ClusterAddrs)
	}

	rounds := max(f.Rounds, 1)
	for round := 1; round <= rounds; round++ {
		for _, cc := range []cartCase{
			{TargetSingleNode, SinglePartition, 0},
			{TargetCluster, SinglePartition, 0},
			{TargetClusterWait1, SinglePartition, 1},
			{TargetCluster, CrossPartition, 0},
			{TargetClusterWait1, CrossPartition, 1},
		} {
			var r *loadgen.Result
			if cc.target == TargetSingleNode {
				inv := engine.NewRedis(rdb, engine.Options{})
				r, err = runCarts(ctx, f, cc, inv, single)
				inv.Close()
			} else {
				r, err = clusterCase(ctx, f, cc, addrs, nodes, private)
			}
			if err != nil {
				return err
			}
			if rounds > 1 {
				r.Model += fmt.Sprintf(", round %d/%d", round, rounds)
			}
			rep.Results = append(rep.Results, r)
			say("%s", summary(r))
		}
	}
	addClusterRatios(rep)
	rep.Notes = append(rep.Notes, fmt.Sprintf(
		"cluster target: the driver, the engine and every redis-server (six for the cluster) share this machine's %s; load average (1 min) %s before, %s after: other work on the machine skews these figures; per-node CPU is the basis of the projection to more masters (docs/OPERATIONS.md)",
		machine(), load0, loadAverage()))
	return nil
}

// clusterCase runs one case on the cluster with a fresh cluster client and engine (the
// engine's at-most-once script client must see every node client its cluster client
// creates), then, if flush, flushes every master: no case pays for the last one's
// orders.
func clusterCase(ctx context.Context, f Options, cc cartCase, addrs []string, nodes map[string]*redis.Client, flush bool) (*loadgen.Result, error) {
	crdb := rediscluster.NewClientWith(addrs, f.ClusterAuth)
	defer crdb.Close()
	inv := engine.NewRedis(crdb, engine.Options{Partitions: ClusterPartitions, WaitReplicas: cc.wait})
	refs, err := clusterNodes(ctx, crdb, inv, nodes)
	var r *loadgen.Result
	if err == nil {
		r, err = runCarts(ctx, f, cc, inv, refs)
	}
	inv.Close()
	if err != nil || !flush {
		return r, err
	}
	for _, ref := range refs {
		if ref.role == "master" {
			if err := ref.c.FlushAll(ctx).Err(); err != nil {
				return nil, fmt.Errorf("flush %s: %w", ref.addr, err)
			}
		}
	}
	return r, nil
}

// splitAddrs splits a comma-separated list of addresses (nil for "").
func splitAddrs(list string) []string {
	var out []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// clusterNodeClients returns a plain client (for INFO, ROLE and FLUSHALL) to every node
// CLUSTER SHARDS lists and does not call failed, by address. (Redis 7.0 calls a healthy
// replica "loading" there while its replication offset reads 0.)
func clusterNodeClients(ctx context.Context, seeds []string, auth rediscluster.ClientOptions) (map[string]*redis.Client, error) {
	crdb := rediscluster.NewClientWith(seeds, auth)
	defer crdb.Close()
	shards, err := crdb.ClusterShards(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster %s: CLUSTER SHARDS: %w", strings.Join(seeds, ","), err)
	}
	nodes := map[string]*redis.Client{}
	for _, s := range shards {
		for _, n := range s.Nodes {
			if n.Health == "failed" {
				continue
			}
			a := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			nodes[a] = redis.NewClient(&redis.Options{Addr: a, Username: auth.Username, Password: auth.Password,
				TLSConfig: auth.TLS, MaxRetries: -1, PoolSize: 2})
		}
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("cluster %s: every node failed", strings.Join(seeds, ","))
	}
	return nodes, nil
}

// loadAverage is the machine's 1-minute load average, as /proc/loadavg says ("?" if it
// cannot be read).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func summary(r *loadgen.Result) string {
	return fmt.Sprintf("%s %s: %.0f carts/s, p50 %.2f ms, p99 %.2f ms, %d errors, %d outcome-unknown retries, oversell %d",
		r.Target, r.Scenario, r.SuccessesPerSecond, r.Latency.P50, r.Latency.P99, r.Failed(), r.Nodes.OutcomeUnknownRetries, r.Oversell)
}

// nodeRef is one node of the Redis under test, with a plain client for INFO.
type nodeRef struct {
	addr, role string
	partitions int
	c          *redis.Client
}

// clusterNodes lists the cluster's nodes, masters first, each master with the number of
// inv's partitions its slots hold.
func clusterNodes(ctx context.Context, crdb *redis.ClusterClient, inv *engine.Redis, clients map[string]*redis.Client) ([]nodeRef, error) {
	shards, err := crdb.ClusterShards(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("CLUSTER SHARDS: %w", err)
	}
	perMaster := map[string]int{}
	for p := range inv.Partitions() {
		slot, err := crdb.ClusterKeySlot(ctx, inv.PartitionKeys(p).Outbox()).Result()
		if err != nil {
			return nil, fmt.Errorf("CLUSTER KEYSLOT: %w", err)
		}
		for _, s := range shards {
			if !slices.ContainsFunc(s.Slots, func(r redis.SlotRange) bool { return r.Start <= slot && slot <= r.End }) {
				continue
			}
			for _, n := range s.Nodes {
				if n.Role == "master" {
					perMaster[net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))]++
				}
			}
		}
	}
	var masters, replicas []nodeRef
	for _, a := range slices.Sorted(maps.Keys(clients)) {
		role, err := clients[a].Do(ctx, "ROLE").Slice()
		if err != nil || len(role) == 0 {
			return nil, fmt.Errorf("ROLE on %s: %v", a, err)
		}
		if role[0] == "master" {
			masters = append(masters, nodeRef{addr: a, role: "master", partitions: perMaster[a], c: clients[a]})
		} else {
			replicas = append(replicas, nodeRef{addr: a, role: "replica", c: clients[a]})
		}
	}
	return append(masters, replicas...), nil
}

// nodeStats is what INFO says a node has done since it started.
type nodeStats struct {
	scripts, waits int64
	cpu            float64
}

func readStats(ctx context.Context, refs []nodeRef) ([]nodeStats, error) {
	out := make([]nodeStats, len(refs))
	for i, n := range refs {
		info, err := n.c.Info(ctx, "cpu", "commandstats").Result()
		if err != nil {
			return nil, fmt.Errorf("INFO on %s: %w", n.addr, err)
		}
		out[i] = parseStats(info)
	}
	return out, nil
}

// parseStats reads script and WAIT calls from INFO commandstats and the CPU from INFO cpu.
func parseStats(info string) nodeStats {
	var s nodeStats
	for _, line := range strings.Split(info, "\n") {
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch name {
		case "used_cpu_user", "used_cpu_sys":
			v, _ := strconv.ParseFloat(value, 64)
			s.cpu += v
		case "cmdstat_eval", "cmdstat_evalsha", "cmdstat_eval_ro", "cmdstat_evalsha_ro", "cmdstat_wait":
			calls, _, _ := strings.Cut(strings.TrimPrefix(value, "calls="), ",")
			n, _ := strconv.ParseInt(calls, 10, 64)
			if name == "cmdstat_wait" {
				s.waits += n
			} else {
				s.scripts += n
			}
		}
	}
	return s
}

// runCarts creates the case's SKUs (MaxUnits each, so that stock never runs out), has
// f.Concurrency buyers check out carts for f.Duration or f.Buyers carts (closed model,
// each checkout with its own idempotency key, an unknown outcome sent again with the
// same key up to 10 times as a client must) and checks every unit afterwards.
func runCarts(ctx context.Context, f Options, cc cartCase, inv *engine.Redis, refs []nodeRef) (*loadgen.Result, error) {
	runID := strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	carts, skus, err := prepareCarts(ctx, inv, runID, cartGroups, cc.scenario == CrossPartition)
	if err != nil {
		return nil, fmt.Errorf("%s %s: prepare: %w", cc.target, cc.scenario, err)
	}
	conc := max(f.Concurrency, 1)
	buyers := int64(f.Buyers)
	if buyers <= 0 {
		buyers = 1 << 62
	}
	users := int64(max(f.Users, 1))
	before, err := readStats(ctx, refs)
	if err != nil {
		return nil, err
	}
	self0, _ := loadgen.CPUTime(-1)

	type worker struct {
		lat            []int64
		ok             int64
		refused, errs  map[string]int64
		samples        map[string]string
		retries, units int64
	}
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		workers = make([]worker, conc)
		start   = time.Now()
	)
	for w := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			w.refused, w.errs, w.samples = map[string]int64{}, map[string]int64{}, map[string]string{}
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= buyers || (f.Duration > 0 && time.Since(start) >= f.Duration) {
					return
				}
				lines := carts[i%int64(len(carts))]
				req := engine.CheckoutRequest{UserID: "bench-" + strconv.FormatInt(i%users, 10), Lines: lines,
					IdempotencyKey: runID + "-" + strconv.FormatInt(i, 36)}
				t0 := time.Now()
				_, err := inv.Checkout(ctx, req)
				for tries := 0; errors.Is(err, engine.ErrOutcomeUnknown) && tries < 10 && ctx.Err() == nil; tries++ {
					w.retries++
					_, err = inv.Checkout(ctx, req)
				}
				if ctx.Err() != nil {
					return
				}
				w.lat = append(w.lat, int64(time.Since(t0)))
				var se *engine.StockError
				switch {
				case err == nil:
					w.ok++
					for _, l := range lines {
						w.units += l.Quantity
					}
				case errors.As(err, &se):
					w.refused["out_of_stock"]++
				default:
					class := errorClass(err)
					w.errs[class]++
					if _, ok := w.samples[class]; !ok {
						w.samples[class] = err.Error()
					}
				}
			}
		}(&workers[w])
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	self1, _ := loadgen.CPUTime(-1)
	after, err := readStats(ctx, refs)
	if err != nil {
		return nil, err
	}

	r := &loadgen.Result{Target: cc.target, Scenario: cc.scenario, Model: fmt.Sprintf("closed c=%d", conc),
		Buyers: f.Buyers, Concurrency: conc, Seconds: elapsed.Seconds(),
		Refusals: map[string]int64{}, Errors: map[string]int64{}, ErrorSamples: map[string]string{}}
	nf := &loadgen.NodesFigures{Partitions: inv.Partitions(), WaitReplicas: cc.wait,
		DriverCPUSeconds: (self1 - self0).Seconds()}
	var lat []int64
	var acked int64
	for _, w := range workers {
		lat = append(lat, w.lat...)
		r.Successes += w.ok
		acked += w.units
		nf.OutcomeUnknownRetries += w.retries
		for k, v := range w.refused {
			r.Refusals[k] += v
		}
		for k, v := range w.errs {
			r.Errors[k] += v
		}
		for k, v := range w.samples {
			r.ErrorSamples[k] = v
		}
	}
	r.Attempts = int64(len(lat))
	r.AttemptsPerSecond = float64(r.Attempts) / elapsed.Seconds()
	r.SuccessesPerSecond = float64(r.Successes) / elapsed.Seconds()
	l := latency.Of(lat)
	r.Latency = loadgen.Latency{P50: l.P50, P95: l.P95, P99: l.P99, Max: l.Max}
	r.UnitsSold = acked

	// Per node: what each did meanwhile.
	var redisCPU, mastersCPU, busiest float64
	for i, n := range refs {
		d := loadgen.NodeFigures{Addr: n.addr, Role: n.role, Partitions: n.partitions,
			ScriptCalls: after[i].scripts - before[i].scripts, WaitCalls: after[i].waits - before[i].waits,
			CPUSeconds: after[i].cpu - before[i].cpu}
		nf.Nodes = append(nf.Nodes, d)
		redisCPU += d.CPUSeconds
		if n.role == "master" {
			mastersCPU += d.CPUSeconds
			if d.CPUSeconds > busiest {
				busiest, nf.BusiestMaster = d.CPUSeconds, n.addr
			}
		}
	}
	if busiest > 0 {
		nf.CartsPerBusiestMasterCPUSecond = float64(r.Successes) / busiest
		nf.CartsPerMasterCPUSecond = float64(r.Successes) / mastersCPU
	}
	r.SetCPU(self1-self0, 0, time.Duration(redisCPU*float64(time.Second)))

	// Every unit: available + reserved + sold is what each SKU was created with.
	levels, err := inv.Lookup(ctx, skus)
	if err != nil {
		return nil, fmt.Errorf("%s %s: levels after: %w", cc.target, cc.scenario, err)
	}
	var taken int64
	for _, sku := range skus {
		lv, ok := levels[sku]
		if !ok {
			return nil, fmt.Errorf("%s %s: sku %s has no levels after the run", cc.target, cc.scenario, sku)
		}
		r.StockBefore += engine.MaxUnits
		r.StockAfter += lv.Available
		r.ReservedAfter += lv.Reserved
		total := lv.Available + lv.Reserved + lv.Sold
		if total != engine.MaxUnits {
			nf.SKUsUnbalanced++
		}
		r.Oversell += max(0, total-engine.MaxUnits) + max(0, -lv.Available) + max(0, -lv.Reserved)
		taken += engine.MaxUnits - lv.Available - lv.Reserved
	}
	r.Unaccounted = taken - acked
	r.Nodes = nf
	return r, nil
}

// errorClass names an engine error for the report.
func errorClass(err error) string {
	switch {
	case errors.Is(err, engine.ErrOutcomeUnknown):
		return "outcome_unknown"
	case errors.Is(err, engine.ErrStockBusy):
		return "stock_busy"
	case errors.Is(err, engine.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "timeout"
	}
	return "error"
}

// prepareCarts creates two SKUs per group and returns each group's two-line cart (or,
// cross, a cart of a SKU of one group and one of the next group's) and every SKU it
// created. With several partitions it takes groups until each of min(groups,
// partitions) partitions has exactly one (group names hash to partitions unevenly:
// "g0".."g11" leave some of 12 partitions empty), so the load spreads over every
// partition; the SKUs of groups it skips are still checked.
func prepareCarts(ctx context.Context, inv *engine.Redis, runID string, groups int, cross bool) ([][]engine.Line, []string, error) {
	var carts [][]engine.Line
	var skus []string
	want := groups
	if inv.Partitions() > 1 {
		want = min(groups, inv.Partitions())
	}
	taken := map[int]bool{}
	for g := 0; len(carts) < want; g++ {
		if g >= 100*want {
			return nil, nil, fmt.Errorf("no group name for %d distinct partitions in %d tries", want, g)
		}
		group := "g" + strconv.Itoa(g)
		var cart []engine.Line
		for i := range 2 {
			sku := "X" + runID + "-" + group + "-" + strconv.Itoa(i)
			lv, err := inv.CreateProduct(ctx, engine.Product{SKU: sku, Stock: engine.MaxUnits, Price: 100, Currency: "USD", Group: group})
			if err != nil {
				return nil, nil, err
			}
			skus = append(skus, sku)
			cart = append(cart, engine.Line{SKU: sku, Quantity: 1})
			if inv.Partitions() > 1 && taken[lv.Partition] {
				break // this group's partition is served already
			}
			if i == 1 {
				taken[lv.Partition] = true
				carts = append(carts, cart)
			}
		}
	}
	if cross {
		if len(carts) < 2 || inv.Partitions() < 2 {
			return nil, nil, fmt.Errorf("cross-partition carts need two partitions")
		}
		crossed := make([][]engine.Line, len(carts))
		for g := range carts {
			crossed[g] = []engine.Line{carts[g][0], carts[(g+1)%len(carts)][1]}
		}
		carts = crossed
	}
	return carts, skus, nil
}

// addClusterRatios sets the cluster target's ratios (of medians over the rounds, if
// several) and a note on the targets.
func addClusterRatios(rep *loadgen.Report) {
	rate := func(target, scenario string) float64 {
		var xs []float64
		for _, r := range rep.Results {
			if r.Target == target && r.Scenario == scenario {
				xs = append(xs, r.SuccessesPerSecond)
			}
		}
		if len(xs) == 0 {
			return 0
		}
		slices.Sort(xs)
		if n := len(xs); n%2 == 0 {
			return (xs[n/2-1] + xs[n/2]) / 2
		}
		return xs[len(xs)/2]
	}
	node := rate(TargetSingleNode, SinglePartition)
	for _, c := range []struct {
		target, toSingle, crossToSingle string
	}{
		{TargetCluster, RatioClusterToSingleNode, RatioCrossToSingle},
		{TargetClusterWait1, RatioClusterWait1ToSingleNode, RatioCrossToSingleWait1},
	} {
		sp, xp := rate(c.target, SinglePartition), rate(c.target, CrossPartition)
		if sp > 0 && node > 0 {
			rep.AddRatio(c.toSingle, sp, node)
		}
		if sp > 0 && xp > 0 {
			rep.AddRatio(c.crossToSingle, xp, sp)
		}
	}
	if sp, xp := rate(TargetCluster, SinglePartition), rate(TargetCluster, CrossPartition); sp > 0 && xp > 0 && node > 0 {
		a, b := sp/node, xp/sp
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"cluster targets of the issue (no WAIT, same run, median carts/s over the rounds): single-partition %.2f× single-node (target ≥ 0.80: %s), cross-partition %.2f× single-partition (target ≥ 0.35: %s)",
			a, met(a >= 0.8), b, met(b >= 0.35)))
	}
}
