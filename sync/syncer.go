// Package sync moves flashstock's history from Redis to MongoDB and keeps the two
// honest: the outbox syncer, reconciliation, the cold-start rebuild and the scheduled
// jobs. It shadows the standard library's name; import it as stocksync.
package sync

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

// Group is the consumer group every syncer process joins.
const Group = "flashstock-sync"

// SyncerOptions tune a Syncer. The zero value is usable.
type SyncerOptions struct {
	// Consumer names this process in the group (default host-pid-random). Two live
	// syncers must not share a name.
	Consumer string
	// Batch is how many entries one MongoDB write takes at most (default 100).
	Batch int
	// Block is how long a read waits for new entries (default 1 s).
	Block time.Duration
	// ClaimIdle is how long an entry may sit unacknowledged with another consumer
	// before this one takes it over (default 30 s): that consumer is presumed dead.
	ClaimIdle time.Duration
	// MaxBackoff caps the wait between retries while MongoDB fails (default 5 s).
	MaxBackoff time.Duration
	// TrimBehind names other consumer groups of the outbox that Trim must not delete
	// entries ahead of (the webhook feeder's, when webhooks run). A group not named is
	// not waited for: one left behind by a feature since turned off cannot make the
	// outbox grow for ever.
	TrimBehind []string
	Logger     *slog.Logger
	// beforeAck, if set, runs after a batch is written; returning false skips the
	// acknowledgement, as a crash at that instant would (tests use it).
	beforeAck func() bool
}

// Syncer reads the outbox stream with a consumer group and persists each entry to
// MongoDB, acknowledging it only after the write. Redelivery is harmless because every
// write is an idempotent upsert; any number of syncers may run at once.
type Syncer struct {
	inv *engine.Redis
	rdb redis.UniversalClient
	// streams are the outbox streams, one per partition, each read with its own
	// consumer group (Group) by a reader of its own.
	streams []string
	dead    string
	store   *store.Store
	opts    SyncerOptions
	log     *slog.Logger

	persisted    atomic.Int64
	failures     atomic.Int64
	deadFailures atomic.Int64
	conflicts    atomic.Int64
}

// NewSyncer returns a syncer of inv's outbox into st.
func NewSyncer(inv *engine.Redis, st *store.Store, opts SyncerOptions) *Syncer {
	if opts.Consumer == "" {
		host, _ := os.Hostname()
		opts.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), engine.NewShortID())
	}
	if opts.Batch <= 0 {
		opts.Batch = 100
	}
	if opts.Block <= 0 {
		opts.Block = time.Second
	}
	if opts.ClaimIdle <= 0 {
		opts.ClaimIdle = 30 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Syncer{inv: inv, rdb: inv.Client(), streams: inv.OutboxKeys(), dead: inv.DeadLetterKey(), store: st, opts: opts,
		log: opts.Logger.With("component", "syncer", "consumer", opts.Consumer)}
}

// Persisted counts the entries this syncer has written and acknowledged.
func (s *Syncer) Persisted() int64 { return s.persisted.Load() }

// Failures counts failed MongoDB writes (each retried).
func (s *Syncer) Failures() int64 { return s.failures.Load() }

// DeadLetterFailures counts failed attempts to park an undecodable entry in the
// dead-letter stream (each retried; the entry stays unacknowledged meanwhile).
func (s *Syncer) DeadLetterFailures() int64 { return s.deadFailures.Load() }

// Conflicts counts movements this syncer found stored under their id with other
// content: the id was handed out twice, the sign of a Redis rollback (see
// store.ErrConflict). Each is kept in MongoDB's conflicts collection and reported by
// reconciliation. Export it as a counter and alert on any increase.
func (s *Syncer) Conflicts() int64 { return s.conflicts.Load() }

// Run syncs until ctx ends. A batch that was read is written and acknowledged before Run
// returns (within 10 s), so shutdown leaves nothing half done. While MongoDB fails, Run
// retries the same batch with backoff; it never skips or drops an entry.
//
// With several partitions it reads every partition's stream at once, one reader each:
// MongoDB's writes are keyed by movement (SKU and sequence) and order ids, never by
// stream id, so entries of different streams never collide.
func (s *Syncer) Run(ctx context.Context) error {
	return runEach(ctx, s.streams, func(ctx context.Context, stream string) error {
		g := &groupReader{rdb: s.rdb, stream: stream, group: Group, start: "0", consumer: s.opts.Consumer,
			batch: s.opts.Batch, block: s.opts.Block, idle: s.opts.ClaimIdle, log: s.log.With("stream", stream)}
		return g.run(ctx, func(msgs []redis.XMessage) { s.persist(ctx, stream, msgs) })
	})
}

// runEach runs fn for every stream at once and returns the first error, once all have
// returned; an error ends the others too.
func runEach(ctx context.Context, streams []string, fn func(context.Context, string) error) error {
	if len(streams) == 1 {
		return fn(ctx, streams[0])
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(streams))
	for _, st := range streams {
		go func() {
			err := fn(ctx, st)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range streams {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// persist writes one batch and acknowledges it, retrying with backoff until it succeeds
// or the process is stopping (then the entries stay pending for the next syncer).
// Undecodable entries are parked in the dead-letter stream first: the batch is not
// acknowledged until every one of them is parked, so none is dropped unseen.
func (s *Syncer) persist(ctx context.Context, stream string, msgs []redis.XMessage) {
	events := make([]engine.Event, 0, len(msgs))
	ids := make([]string, 0, len(msgs))
	var bad []redis.XMessage
	lines := map[string]string{}
	for _, m := range msgs {
		ids = append(ids, m.ID)
		evs, err := engine.DecodeEntry(m.ID, m.Values)
		if err != nil {
			s.log.Error("undecodable outbox entry: moving it to the dead-letter stream", "id", m.ID, "err", err)
			bad = append(bad, m)
			continue
		}
		events = append(events, evs...)
		for id, l := range engine.RecordedLines(m.Values) {
			lines[id] = l
		}
	}
	backoff := 100 * time.Millisecond
	for {
		bad = s.park(ctx, bad)
		if len(bad) == 0 && s.writeAndAck(ctx, stream, events, lines, ids) {
			return
		}
		if ctx.Err() != nil {
			return // unacknowledged: redelivered to whoever syncs next
		}
		sleep(ctx, backoff)
		backoff = min(2*backoff, s.opts.MaxBackoff)
	}
}

// park copies undecodable entries to the dead-letter stream, where an operator will see
// them rather than have them retried for ever, and returns those it could not copy.
func (s *Syncer) park(ctx context.Context, bad []redis.XMessage) []redis.XMessage {
	for i, m := range bad {
		err := s.rdb.XAdd(context.WithoutCancel(ctx), &redis.XAddArgs{Stream: s.dead, Values: m.Values}).Err()
		if err != nil {
			s.deadFailures.Add(1)
			s.log.Error("park undecodable outbox entry; it stays unacknowledged", "id", m.ID, "err", err)
			return bad[i:]
		}
	}
	return nil
}

// writeAndAck writes one batch and acknowledges it; it reports whether the write
// succeeded. Both finish (within 10 s) even if ctx ends meanwhile.
func (s *Syncer) writeAndAck(ctx context.Context, stream string, events []engine.Event, lines map[string]string, ids []string) bool {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	conflicts, err := s.store.ApplyBatch(wctx, events, lines)
	for _, c := range conflicts {
		s.conflicts.Add(1)
		s.log.Error("movement id already names another movement in MongoDB: Redis was rolled back; kept in the conflicts collection",
			"movement", c.Movement.ID, "stored", c.Stored, "hash", c.Hash)
	}
	if len(conflicts) > 0 {
		// Redis is selling from levels older than MongoDB's: restore them now rather
		// than at the next reconciliation, once this batch is acknowledged, on a budget
		// of its own (a restore catches up the outbox first, which can take a while).
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			s.restore(rctx, conflicts)
		}()
	}
	if err != nil {
		s.failures.Add(1)
		s.log.Warn("persist batch failed; retrying", "entries", len(events), "err", err)
		return false
	}
	var orders []string
	for _, e := range events {
		if e.Kind == engine.EventOrder {
			orders = append(orders, e.ID)
		}
	}
	// MongoDB has the orders: their Redis records may now expire.
	if err := s.inv.RetireOrders(wctx, orders); err != nil {
		s.log.Warn("set order record TTLs; they are set again on redelivery", "err", err)
	}
	if s.opts.beforeAck != nil && !s.opts.beforeAck() {
		return true
	}
	if err := s.rdb.XAck(wctx, stream, Group, ids...).Err(); err != nil {
		s.log.Warn("ack failed; entries will be redelivered", "err", err)
		return true
	}
	s.persisted.Add(int64(len(ids)))
	return true
}

// restore restores the SKUs of conflicts from MongoDB (see Rollback). A failure is
// logged; reconciliation tries again.
func (s *Syncer) restore(ctx context.Context, conflicts []store.Conflict) {
	done, caught := map[string]bool{}, ""
	for _, c := range conflicts {
		if done[c.SKU] {
			continue
		}
		done[c.SKU] = true
		rb, err := rebaseSKU(ctx, s.inv, s.store, c.SKU, &caught)
		if err != nil {
			s.log.Error("restore a rolled-back SKU; reconciliation will retry", "sku", c.SKU, "err", err)
			continue
		}
		if rb != nil {
			s.log.Error("Redis was rolled back: restored from MongoDB", "sku", rb.SKU, "redis_version", rb.RedisVersion,
				"ledger_version", rb.LedgerVersion, "renumbered", rb.Renumbered, "restored_orders", rb.RestoredOrders,
				"released_hold_units", rb.ReleasedHolds, "restored", rb.Restored, "version", rb.Version, "error", rb.Error)
		}
	}
}

// Lag is how far MongoDB is behind the outbox.
type Lag struct {
	Pending     int64 `json:"pending"`     // delivered to a syncer, not yet acknowledged
	Undelivered int64 `json:"undelivered"` // not yet read by any syncer
}

// Total is every entry not yet persisted.
func (l Lag) Total() int64 { return l.Pending + l.Undelivered }

// Lag reports the group's pending and undelivered entries, over every partition.
func (s *Syncer) Lag(ctx context.Context) (Lag, error) {
	lags, err := s.PartitionLags(ctx)
	var sum Lag
	for _, l := range lags {
		sum.Pending += l.Pending
		sum.Undelivered += l.Undelivered
	}
	return sum, err
}

// PartitionLags reports Lag for each partition's stream, in partition order.
func (s *Syncer) PartitionLags(ctx context.Context) ([]Lag, error) {
	out := make([]Lag, len(s.streams))
	for i, stream := range s.streams {
		l, err := s.lag(ctx, stream)
		if err != nil {
			return nil, err
		}
		out[i] = l
	}
	return out, nil
}

func (s *Syncer) lag(ctx context.Context, stream string) (Lag, error) {
	groups, err := s.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return Lag{}, fmt.Errorf("syncer lag: %w", err)
	}
	for _, g := range groups {
		if g.Name == Group {
			return Lag{Pending: g.Pending, Undelivered: max(g.Lag, 0)}, nil
		}
	}
	n, err := s.rdb.XLen(ctx, stream).Result()
	return Lag{Undelivered: n}, err
}

// Trim deletes outbox entries that every syncer has acknowledged: those older than the
// oldest pending entry, or, with none pending, older than the last one delivered.
// Undelivered entries are never touched. It returns how many it deleted.
func (s *Syncer) Trim(ctx context.Context) (int64, error) {
	var total int64
	for _, stream := range s.streams {
		n, err := s.trim(ctx, stream)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s *Syncer) trim(ctx context.Context, stream string) (int64, error) {
	groups, err := s.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return 0, fmt.Errorf("trim outbox: %w", err)
	}
	// Behind the syncer's group and the ones named in TrimBehind: what one has not
	// acknowledged, or not read yet, stays.
	minID, synced := "", false
	for _, g := range groups {
		if g.Name != Group && !slices.Contains(s.opts.TrimBehind, g.Name) {
			continue
		}
		id := g.LastDeliveredID
		p, err := s.rdb.XPending(ctx, stream, g.Name).Result()
		if err != nil {
			return 0, fmt.Errorf("trim outbox: %w", err)
		}
		if p.Count > 0 {
			id = p.Lower
		}
		if minID == "" || streamIDLess(id, minID) {
			minID = id
		}
		synced = synced || g.Name == Group
	}
	if !synced || minID == "" || minID == "0-0" {
		return 0, nil
	}
	n, err := s.rdb.XTrimMinID(ctx, stream, minID).Result()
	if err != nil {
		return 0, fmt.Errorf("trim outbox: %w", err)
	}
	return n, nil
}

// streamIDLess orders stream ids ("ms-seq").
func streamIDLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	an, _ := strconv.ParseUint(am, 10, 64)
	bn, _ := strconv.ParseUint(bm, 10, 64)
	if an != bn {
		return an < bn
	}
	ai, _ := strconv.ParseUint(as, 10, 64)
	bi, _ := strconv.ParseUint(bs, 10, 64)
	return ai < bi
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
