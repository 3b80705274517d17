package engine

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/testredis"
)

// A step on a corrupt record fails alone: the other steps of its batch apply whole
// (units, records and events), and the failed step moves no units.
func TestCrossStepOnACorruptRecordFailsAlone(t *testing.T) {
	_, c := testredis.Start(t)
	r := NewRedis(c, Options{Partitions: 2, CrossSweepEvery: -1})
	t.Cleanup(r.Close)
	ctx := context.Background()
	for _, sku := range []string{"X", "Y"} {
		if _, err := r.CreateProduct(ctx, Product{SKU: sku, Stock: 5, Price: 100, Currency: "USD", Group: "g"}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := r.partitionOf(ctx, "X")
	if err != nil {
		t.Fatal(err)
	}
	k := p.k
	// X's stock hash lacks r; an attempt holds one unit of it (as a reserve would have).
	if err := c.HDel(ctx, k.Stock("X"), "r").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, k.XAttempt("T2"), "st", "h", "p", 1, "o", "o2", "l", "X:1:100", "u", "u").Err(); err != nil {
		t.Fatal(err)
	}
	decide := &xop{pending: pending{ctx: ctx, done: make(chan struct{})},
		keys: []string{k.XDecision("T1"), k.Order("o1"), k.RateLimit("u"), k.Stock("Y"), k.Bought("Y")},
		args: []any{"decide", "T1", "o1", "u", "fp", r.tombTTL(), 0, "", "", "Y", 2}}
	commit := &xop{pending: pending{ctx: ctx, done: make(chan struct{})},
		keys: []string{k.XAttempt("T2"), k.Stock("X"), k.Bought("X")},
		args: []any{"commit", "T2", r.tombTTL(), "X"}}
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
	if st, _ := c.HGet(ctx, k.XAttempt("T2"), "st").Result(); st != "h" {
		t.Errorf("the failed commit's record: st %q, want h (unchanged)", st)
	}
}

// An attempt the sweeper cannot settle (its stock record is corrupt) is tried again
// later, not at every sweep: it does not keep the entries behind it from being swept.
func TestSweeperPutsOffAnEntryItCannotSettle(t *testing.T) {
	_, c := testredis.Start(t)
	r := NewRedis(c, Options{Partitions: 2, CrossSweepEvery: -1})
	t.Cleanup(r.Close)
	ctx := context.Background()
	if _, err := r.CreateProduct(ctx, Product{SKU: "X", Stock: 5, Price: 100, Currency: "USD", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	p, err := r.partitionOf(ctx, "X")
	if err != nil {
		t.Fatal(err)
	}
	k := p.k
	c.HDel(ctx, k.Stock("X"), "r")
	c.HSet(ctx, k.XAttempt("T"), "st", "h", "p", p.n, "o", "o", "l", "X:1:100", "u", "u")
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
