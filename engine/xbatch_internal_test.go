package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/testredis"
)

// twoPartitions is an inventory of two partitions on a private redis-server, with the
// given SKUs (stock, and a limit of maxPerUser units a user, 0 none) in one group: one
// partition, which it returns.
func twoPartitions(tb testing.TB, stock, maxPerUser int64, skus ...string) (*Redis, *redis.Client, *partition) {
	tb.Helper()
	_, c := testredis.Start(tb)
	r := NewRedis(c, Options{Partitions: 2, CrossSweepEvery: -1})
	tb.Cleanup(r.Close)
	ctx := context.Background()
	for _, sku := range skus {
		if _, err := r.CreateProduct(ctx, Product{SKU: sku, Stock: stock, Price: 100, Currency: "USD", Group: "g", MaxPerUser: maxPerUser}); err != nil {
			tb.Fatal(err)
		}
	}
	p, err := r.partitionOf(ctx, skus[0])
	if err != nil {
		tb.Fatal(err)
	}
	return r, c, p
}

// A step on a corrupt record fails alone: the other steps of its batch apply whole
// (units, records and events), and the failed step moves no units.
func TestCrossStepOnACorruptRecordFailsAlone(t *testing.T) {
	r, c, p := twoPartitions(t, 5, 0, "X", "Y")
	ctx := context.Background()
	k := p.k
	// X's stock hash lacks r; an attempt holds one unit of it (as a reserve would have).
	if err := c.HDel(ctx, k.Stock("X"), "r").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, k.XAttempt("T2"), "h\n1\no2\n0\nX:1:100\n\nu", 0).Err(); err != nil {
		t.Fatal(err)
	}
	decide := &xop{pending: pending{ctx: ctx, done: make(chan struct{})},
		keys: []string{k.Order("o1"), k.RateLimit("u"), k.Stock("Y"), k.Bought("Y"), k.Room("Y", "p"), k.Room("Y", "h")},
		args: []any{"decide", "T1", "o1", "u", "fp", 0, "", "", "", "Y", 2}}
	commit := &xop{pending: pending{ctx: ctx, done: make(chan struct{})},
		keys: []string{k.XAttempt("T2"), k.Stock("X"), k.Bought("X"), k.Room("X", "p"), k.Room("X", "h")},
		args: []any{"commit", "T2", "X"}}
	outbox := c.XLen(ctx, k.Outbox()).Val()
	p.xbatch.exec([]*xop{commit, decide}) // one script call for both
	if commit.err != nil || commit.rep.status() != "error" {
		t.Fatalf("commit on the corrupt record: %v %v, want an error of its own", commit.rep, commit.err)
	}
	if decide.err != nil || decide.rep.status() != "ok" {
		t.Fatalf("decide in the same batch: %v %v, want ok", decide.rep, decide.err)
	}
	lv, err := r.Levels(ctx, []string{"Y"})
	if err != nil || lv[0].Available != 3 || lv[0].Sold != 2 {
		t.Errorf("Y after the decide: %+v %v, want 3 available, 2 sold", lv, err)
	}
	if n, _ := c.Exists(ctx, k.Order("o1")).Result(); n != 1 {
		t.Error("the decide's order record is missing")
	}
	if n := c.XLen(ctx, k.Outbox()).Val(); n != outbox+1 {
		t.Errorf("outbox entries: %d, want %d (the batch's one entry)", n, outbox+1)
	}
	x, _ := c.HMGet(ctx, k.Stock("X"), "a", "s").Result()
	if x[0] != "5" || x[1] != "0" {
		t.Errorf("X after the failed commit: a %v s %v, want 5 and 0 (no units moved)", x[0], x[1])
	}
	if rec, _ := c.Get(ctx, k.XAttempt("T2")).Result(); rec != "h\n1\no2\n0\nX:1:100\n\nu" {
		t.Errorf("the failed commit's record: %q, want it unchanged", rec)
	}
	if n, _ := c.ZCard(ctx, k.XEnded()).Result(); n != 0 {
		t.Errorf("the failed commit left %d tombstones, want none", n)
	}
}

// An attempt the sweeper cannot settle (its stock record is corrupt) is tried again
// later, not at every sweep: it does not keep the entries behind it from being swept.
func TestSweeperPutsOffAnEntryItCannotSettle(t *testing.T) {
	r, c, p := twoPartitions(t, 5, 0, "X")
	ctx := context.Background()
	k := p.k
	c.HDel(ctx, k.Stock("X"), "r")
	c.Set(ctx, k.XAttempt("T"), fmt.Sprintf("h\n%d\no\n0\nX:1:100\n\nu", p.n), 0)
	past := float64(time.Now().Add(-time.Second).UnixMilli())
	c.ZAdd(ctx, k.XAttempts(), redis.Z{Score: past, Member: "T"})
	if _, err := r.SweepCrossPartition(ctx); err == nil {
		t.Fatal("sweeping an attempt on a corrupt record: no error")
	}
	due, err := c.ZScore(ctx, k.XAttempts(), "T").Result()
	if err != nil || due < float64(time.Now().Add(sweepRetry-time.Second).UnixMilli()) {
		t.Errorf("the failed entry is due at %v (%v), want about %v from now", due, err, sweepRetry)
	}
}

// An upgrade in the middle of a sale: reservations the previous format left (attempt
// records as hashes, decisions as keys xd:T) are ended by this version's sweeper as
// their decision says, and an undecided one is aborted in both formats, so that a
// decide of the previous version still in flight for it fails.
func TestSweeperEndsAttemptsOfThePreviousFormat(t *testing.T) {
	r, c, p := twoPartitions(t, 5, 0, "X")
	ctx := context.Background()
	k, q := p.k, r.parts[1-p.n] // X's partition, and the attempts' primary
	// What the previous version left: two units reserved by two attempts, T1 decided
	// committed at the primary, T2 undecided (its coordinator died).
	past := float64(time.Now().Add(-time.Second).UnixMilli())
	pipe := c.TxPipeline()
	pipe.HIncrBy(ctx, k.Stock("X"), "a", -2)
	pipe.HIncrBy(ctx, k.Stock("X"), "r", 2)
	pipe.HSet(ctx, k.XInFlight(), "X", 2)
	for _, a := range []string{"T1", "T2"} {
		pipe.HSet(ctx, k.XAttempt(a), "st", "h", "p", q.n, "o", "o-"+a, "l", "X:1:100", "x", int64(past), "u", "u")
		pipe.ZAdd(ctx, k.XAttempts(), redis.Z{Score: past, Member: a})
	}
	pipe.Set(ctx, q.k.XDecision("T1"), "c", time.Hour)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := r.SweepCrossPartition(ctx)
	if err != nil || n != 2 {
		t.Fatalf("sweep: %d resolved, %v; want 2", n, err)
	}
	lv, err := r.Levels(ctx, []string{"X"})
	if err != nil || lv[0].Available != 4 || lv[0].Reserved != 0 || lv[0].Sold != 1 {
		t.Errorf("X after the sweep: %+v %v, want 4 available, 0 reserved, 1 sold (T1 committed, T2 aborted)", lv, err)
	}
	if in, _ := c.HGetAll(ctx, k.XInFlight()).Result(); len(in) != 0 {
		t.Errorf("in flight after the sweep: %v, want none", in)
	}
	if n, _ := c.Exists(ctx, k.XAttempt("T1"), k.XAttempt("T2")).Result(); n != 0 {
		t.Errorf("%d attempt records left, want none", n)
	}
	for _, m := range []string{"c:T1", "a:T2"} {
		if _, err := c.ZScore(ctx, k.XEnded(), m).Result(); err != nil {
			t.Errorf("tombstone %s: %v", m, err)
		}
	}
	if d, _ := c.Get(ctx, q.k.XDecision("T2")).Result(); d != "a" {
		t.Errorf("T2's decision in the previous format: %q, want a (an old decide must fail)", d)
	}
	if _, err := c.ZScore(ctx, q.k.XDecisions(), "a:T2").Result(); err != nil {
		t.Errorf("T2's decision: %v, want a:T2", err)
	}
}

// A step that would fail on a corrupt per-user counter fails before it writes anything:
// a reserve whose second line's counter is not a number counts nothing on the first,
// and an abort whose second line's counter is not a number gives nothing back on the
// first (a sweeper trying it again would otherwise give it back again and again).
func TestCrossStepOnACorruptCounterWritesNothing(t *testing.T) {
	r, c, p := twoPartitions(t, 5, 3, "X", "Y")
	ctx := context.Background()
	k := p.k
	keys := append([]string{k.XAttempt("T1")}, lineKeys(k, []Line{{SKU: "X"}, {SKU: "Y"}})...)
	c.HSet(ctx, k.Bought("X"), "u", 1)
	c.HSet(ctx, k.Bought("Y"), "u", "garbage")
	step := func(args ...any) *xop {
		op := &xop{pending: pending{ctx: ctx, done: make(chan struct{})}, keys: keys, args: args}
		p.xbatch.exec([]*xop{op})
		return op
	}
	unchanged := func(what string) {
		t.Helper()
		if n, _ := c.HGet(ctx, k.Bought("X"), "u").Int(); n != 1 {
			t.Errorf("%s: X's counter %d, want 1 (unchanged)", what, n)
		}
		lv, err := r.Levels(ctx, []string{"X", "Y"})
		if err != nil || lv[0].Available != 5 || lv[1].Available != 5 || lv[0].Reserved+lv[1].Reserved != 0 {
			t.Errorf("%s: levels %+v %v, want 5 available each, none reserved", what, lv, err)
		}
	}
	if op := step("reserve", "T1", 1-p.n, "o1", 2000, "u", "", "X", 1, "Y", 1); op.err != nil || op.rep.status() != "error" {
		t.Fatalf("reserve over a corrupt counter: %v %v, want an error of its own", op.rep, op.err)
	}
	unchanged("after the reserve")
	if n, _ := c.Exists(ctx, k.XAttempt("T1")).Result(); n != 0 {
		t.Error("the failed reserve left an attempt record")
	}
	// An abort of a reservation (as a reserve made it before the counter was damaged).
	c.Set(ctx, k.XAttempt("T1"), fmt.Sprintf("h\n%d\no1\n0\nX:1:100:L,Y:1:100:L\n\nu", 1-p.n), 0)
	if op := step("abort", "T1", "X", "Y"); op.err != nil || op.rep.status() != "error" {
		t.Fatalf("abort over a corrupt counter: %v %v, want an error of its own", op.rep, op.err)
	}
	unchanged("after the abort")
	if n, _ := c.Exists(ctx, k.XAttempt("T1")).Result(); n != 1 {
		t.Error("the failed abort ended the attempt")
	}
}
