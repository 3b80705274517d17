package engine

import (
	"context"
	"crypto/rand"
	"io"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/clusterscript"
	"github.com/flashstock/flashstock/scripts/lua"
)

// Options tune a Redis inventory. The zero value is usable.
type Options struct {
	// Partition is the hash tag every key carries (default "0").
	Partition string
	// IdempotencyTTL is how long idempotency keys are remembered (default 25h).
	IdempotencyTTL time.Duration
	// RecordTTL is how long orders and holds stay readable in Redis (default 7 days):
	// holds from when they are placed, orders from when the syncer has persisted them
	// (see RetireOrders). MongoDB keeps them for good.
	RecordTTL time.Duration
	// Batchers is how many checkout/reserve batches may be in flight at once
	// (default 4). See batcher.
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
	k           Keys
	idemTTL     string // seconds, as the scripts take it
	recTTL      string
	passTTL     int64 // ms
	rand        io.Reader
	batch       *batcher
	// soldOut is nil unless Options.SoldOutFor is set.
	soldOut *soldOut
}

var (
	scriptTake   = redis.NewScript(lua.Take)
	scriptSettle = redis.NewScript(lua.Settle)
	scriptCancel = redis.NewScript(lua.Cancel)
	scriptCreate = redis.NewScript(lua.Create)
	scriptUpdate = redis.NewScript(lua.Update)
	scriptAdjust = redis.NewScript(lua.Adjust)
	allScripts   = []*redis.Script{scriptTake, scriptSettle, scriptCancel, scriptCreate, scriptUpdate, scriptAdjust, scriptRebase, scriptQueue}
)

// ScriptCount is how many scripts LoadScripts keeps in Redis's script cache.
func ScriptCount() int { return len(allScripts) }

// NewRedis returns an Inventory on rdb, which may be a client, a cluster client or a ring.
// rdb must not retry commands on its own (build its options with NoRetries); NewRedis
// panics if it would.
func NewRedis(rdb redis.UniversalClient, opts Options) *Redis {
	checkNoRetries(rdb)
	if opts.Partition == "" {
		opts.Partition = "0"
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 25 * time.Hour
	}
	if opts.RecordTTL <= 0 {
		opts.RecordTTL = 7 * 24 * time.Hour
	}
	// A replayed key must still find its record.
	opts.RecordTTL = max(opts.RecordTTL, opts.IdempotencyTTL)
	if opts.Batchers <= 0 {
		opts.Batchers = 4
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
		k:           NewKeys(opts.Partition),
		idemTTL:     strconv.FormatInt(int64(opts.IdempotencyTTL/time.Second), 10),
		recTTL:      strconv.FormatInt(int64(opts.RecordTTL/time.Second), 10),
		passTTL:     opts.QueuePassTTL.Milliseconds(),
		rand:        opts.Rand,
		wait:        opts.WaitReplicas,
		waitTimeout: opts.WaitTimeout,
	}
	r.sc, r.plain, r.cs = newRunners(rdb, opts)
	r.batch = newBatcher(r, opts.Batchers)
	if opts.SoldOutFor > 0 {
		r.soldOut = newSoldOut(context.Background(), rdb, r.k.RestockChannel(), opts.SoldOutFor)
	}
	return r
}

// Close stops the checkout batchers after they have served what is queued, and the
// sold-out listener. It does not close the Redis client.
func (r *Redis) Close() {
	r.batch.close()
	if r.soldOut != nil {
		r.soldOut.close()
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
	exists, err := r.rdb.ScriptExists(ctx, hashes...).Result()
	if err != nil {
		return readErr("load scripts", err)
	}
	for i, s := range allScripts {
		if exists[i] {
			continue
		}
		if err := s.Load(ctx, r.rdb).Err(); err != nil {
			return readErr("load scripts", err)
		}
	}
	return nil
}

// OutboxKey is the stream every movement is appended to.
func (r *Redis) OutboxKey() string { return r.k.Outbox() }

// DeadLetterKey is the stream where the syncer parks outbox entries it cannot decode.
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
