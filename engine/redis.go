package engine

import (
	"context"
	"crypto/rand"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/clusterscript"
	"github.com/flashstock/flashstock/scripts/lua"
)

// Options tune a Redis inventory. The zero value is usable.
type Options struct {
	// Partition is the hash tag every key carries (default "0"); with several
	// Partitions, partition i's tag is Partition+"."+i (i > 0), or i by default.
	Partition string
	// Partitions is how many partitions SKUs are spread over (default 1: every key in
	// fs:{0}:). Never lower it on a running store: SKUs stay where they were created.
	Partitions int
	// IdempotencyTTL is how long idempotency keys are remembered (default 25h).
	IdempotencyTTL time.Duration
	// RecordTTL is how long orders and holds stay readable in Redis (default 7 days):
	// holds from when they are placed, orders from when the syncer has persisted them
	// (see RetireOrders). MongoDB keeps them for good.
	RecordTTL time.Duration
	// Batchers is how many checkout/reserve batches of one partition may be in flight
	// at once (default 4 / Partitions, at least 1). See batcher.
	Batchers int
	// SoldOutFor, if positive, lets this process refuse a SKU it has seen sold out for
	// that long without asking Redis, unless stock comes back first (see soldOut).
	// 0, the default, keeps every answer live.
	SoldOutFor time.Duration
	// QueuePassTTL is how long a waiting room's pass stays valid (default 120 s).
	QueuePassTTL time.Duration
	// WaitReplicas, if positive, acknowledges a script that changes stock only once that
	// many replicas confirmed its writes (WAIT, pipelined behind the script on the same
	// connection); a shortfall within WaitTimeout (default 100 ms) is ErrOutcomeUnknown.
	// Not for miniredis, which has no WAIT.
	WaitReplicas int
	WaitTimeout  time.Duration
	// CrossAttemptTTL is how long a cross-partition checkout's reservations may stay
	// undecided before the sweeper resolves them through the primary partition's
	// decision (default 2 s); CrossWait is how long a buyer who meets stock held only by
	// in-flight cross-partition attempts waits, re-checking, before ErrStockBusy
	// (default 500 ms); CrossSweepEvery is how often this process sweeps abandoned
	// attempts (default 500 ms; negative: never, only lazily while a buyer waits). All
	// three matter only with several partitions.
	CrossAttemptTTL time.Duration
	CrossWait       time.Duration
	CrossSweepEvery time.Duration
	// Rand is where the random places of early arrivals in a waiting room come from
	// (default crypto/rand; tests give a seeded source).
	Rand io.Reader
}

// Redis is live stock on Redis: each operation is one Lua script, so every check and its
// write happen in one atomic step, and the same script appends each movement to the
// outbox. Every method that changes stock returns only errors of this package, wrapped
// with the operation; ErrUnavailable means nothing was applied, ErrOutcomeUnknown that
// it may have been. All methods are safe for concurrent use.
type Redis struct {
	rdb         redis.UniversalClient
	sc          scriptRunner          // scripts that change stock: at most once, WAIT if configured
	plain       scriptRunner          // scripts that do not: at most once, never WAIT
	cs          *clusterscript.Client // nil unless rdb is a cluster client
	wait        int
	waitTimeout time.Duration
	k           Keys // partition 0: also the home of what is no SKU's (carts, throttles, jobs)
	parts       []*partition
	dir         *sync.Map // sku -> *partition, as the directory records it (never changes)
	idemTTL     string    // seconds, as the scripts take it
	recTTL      string
	passTTL     int64 // ms
	rand        io.Reader
	// soldOut is nil unless Options.SoldOutFor is set.
	soldOut *soldOut
	x       crossOptions
}

var (
	scriptTake   = newScript(lua.Take)
	scriptSettle = newScript(lua.Settle)
	scriptCancel = newScript(lua.Cancel)
	scriptCreate = newScript(lua.Create)
	scriptUpdate = newScript(lua.Update)
	scriptAdjust = newScript(lua.Adjust)
	allScripts   = []*redis.Script{scriptTake, scriptSettle, scriptCancel, scriptCreate, scriptUpdate, scriptAdjust, scriptRebase, scriptQueue, scriptXCart, scriptXCancel}
)

// ScriptCount is how many scripts LoadScripts keeps in Redis's script cache.
func ScriptCount() int { return len(allScripts) }

// NewRedis returns an Inventory on rdb, which may be a client, a cluster client or a ring.
// rdb must not retry commands on its own (build its options with NoRetries); NewRedis
// panics if it would.
func NewRedis(rdb redis.UniversalClient, opts Options) *Redis {
	checkNoRetries(rdb)
	opts.Partitions = min(max(opts.Partitions, 1), MaxPartitions)
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 25 * time.Hour
	}
	if opts.RecordTTL <= 0 {
		opts.RecordTTL = 7 * 24 * time.Hour
	}
	// A replayed key must still find its record.
	opts.RecordTTL = max(opts.RecordTTL, opts.IdempotencyTTL)
	if opts.Batchers <= 0 {
		// Four batches in flight in all: with many partitions one each, so that each
		// batch still gathers many requests (BenchmarkPartitionCarts: 12 partitions on a
		// 3-master cluster, 4 per partition 23.5k carts/s, 1 per partition 38k).
		opts.Batchers = max(1, 4/opts.Partitions)
	}
	if opts.QueuePassTTL <= 0 {
		opts.QueuePassTTL = 120 * time.Second
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 100 * time.Millisecond
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	r := &Redis{
		rdb:         rdb,
		idemTTL:     strconv.FormatInt(int64(opts.IdempotencyTTL/time.Second), 10),
		recTTL:      strconv.FormatInt(int64(opts.RecordTTL/time.Second), 10),
		passTTL:     opts.QueuePassTTL.Milliseconds(),
		rand:        opts.Rand,
		wait:        opts.WaitReplicas,
		dir:         new(sync.Map),
		waitTimeout: opts.WaitTimeout,
	}
	r.sc, r.plain, r.cs = newRunners(rdb, opts)
	channels := make([]string, opts.Partitions)
	for i, tag := range partitionTags(opts.Partition, opts.Partitions) {
		p := &partition{n: i, k: NewKeys(tag)}
		p.batch = newTakeBatcher(r, p.k, opts.Batchers)
		if opts.Partitions > 1 {
			p.xbatch = newXBatcher(r, p.k, opts.Batchers)
		}
		r.parts = append(r.parts, p)
		channels[i] = p.k.RestockChannel()
	}
	r.k = r.parts[0].k
	if opts.SoldOutFor > 0 {
		r.soldOut = newSoldOut(context.Background(), rdb, channels, opts.SoldOutFor)
	}
	r.x = newCrossOptions(opts)
	if len(r.parts) > 1 && r.x.sweepEvery > 0 {
		r.x.stop = make(chan struct{})
		r.x.done = make(chan struct{})
		r.x.closeOnce = new(sync.Once)
		go r.sweepLoop()
	}
	return r
}

// Close stops the checkout batchers after they have served what is queued, the sold-out
// listener, the cross-partition sweeper, then the batchers of cross-partition steps. It
// does not close the Redis client.
func (r *Redis) Close() {
	for _, p := range r.parts {
		p.batch.close()
	}
	if r.soldOut != nil {
		r.soldOut.close()
	}
	if r.x.stop != nil {
		r.x.closeOnce.Do(func() { close(r.x.stop) })
		<-r.x.done
	}
	for _, p := range r.parts {
		if p.xbatch != nil {
			p.xbatch.close()
		}
	}
}

// LoadScripts makes sure every script is in Redis's script cache: one SCRIPT EXISTS,
// and SCRIPT LOAD only for those missing (a restarted Redis has an empty cache).
// Scripts also load themselves on first use (EVALSHA falls back to EVAL on NOSCRIPT);
// this is for readiness checks.
func (r *Redis) LoadScripts(ctx context.Context) error {
	hashes := make([]string, len(allScripts))
	for i, s := range allScripts {
		hashes[i] = s.Hash()
	}
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		// Every master must answer; a promoted replica without the scripts loads them.
		scripts := make([]*redis.Script, len(allScripts))
		for i, s := range allScripts {
			scripts[i] = clusterVariant(s)
			hashes[i] = scripts[i].Hash()
		}
		return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			return loadScripts(ctx, n, scripts, hashes)
		})
	}
	return loadScripts(ctx, r.rdb, allScripts, hashes)
}

func loadScripts(ctx context.Context, rdb redis.Scripter, scripts []*redis.Script, hashes []string) error {
	exists, err := rdb.ScriptExists(ctx, hashes...).Result()
	if err != nil {
		return readErr("load scripts", err)
	}
	for i, s := range scripts {
		if exists[i] {
			continue
		}
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return readErr("load scripts", err)
		}
	}
	return nil
}

// OutboxKey is partition 0's outbox stream (the only one with one partition; see
// OutboxKeys).
func (r *Redis) OutboxKey() string { return r.k.Outbox() }

// DeadLetterKey is the stream where the syncer parks outbox entries it cannot decode
// (partition 0's, for every partition).
func (r *Redis) DeadLetterKey() string { return r.k.DeadLetter() }

// Keys names the keys of the inventory's partition, for the code that keeps its own
// data beside the stock (carts, idempotency bindings, scheduler claims).
func (r *Redis) Keys() Keys { return r.k }

// Client is the Redis client the inventory runs on.
func (r *Redis) Client() redis.UniversalClient { return r.rdb }

func unixMs(t *time.Time) int64 {
	if t == nil || t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
