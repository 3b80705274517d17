package sync_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	stocksync "github.com/flashstock/flashstock/sync"
	"github.com/redis/go-redis/v9"
)

// A process starting while the syncers are behind does not write their backlog itself
// before taking traffic (Rebuild in a reconciliation does), unless a SKU is missing from
// Redis: then the backlog may complete that SKU's ledger, and it is written first.
func TestRebuildAtStartLeavesTheBacklogToTheSyncers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 100)
	e.buy(t, 20, "A") // no syncer runs: the outbox holds the creation and 20 sales
	if _, err := stocksync.RebuildAtStart(ctx, e.inv, e.st, nil); err != nil {
		t.Fatal(err)
	}
	if l, err := e.st.Ledger(ctx, "A"); err != nil || len(l) != 0 {
		t.Fatalf("ledger after a start with nothing lost: %d entries, %v; want the backlog left to the syncers", len(l), err)
	}
	// A SKU Redis lost: the backlog is written before its ledger is folded.
	e.product(t, "B", 10)
	e.buy(t, 3, "B")
	if err := e.rdb.Del(ctx, e.inv.Keys().Stock("B")).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err := stocksync.RebuildAtStart(ctx, e.inv, e.st, nil)
	if err != nil || len(rep.Restored) != 1 || rep.Lost != 0 {
		t.Fatalf("rebuild of a lost SKU: %+v, %v; want B restored from a complete ledger", rep, err)
	}
	if lv := e.level(t, "B"); lv.Available != 7 || lv.Sold != 3 {
		t.Fatalf("B restored as %+v, want 7 available and 3 sold", lv)
	}
}

// After Redis lost everything, a client retrying a checkout made before the loss with
// its Idempotency-Key gets its order back instead of buying again.
func TestKeyedRetryAfterRedisLostEverythingReplays(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	req := engine.CheckoutRequest{UserID: "u1", IdempotencyKey: "k1", Lines: []engine.Line{{SKU: "A", Quantity: 2}}}
	o, err := e.inv.Checkout(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	waitSynced(t, e.started(t, "s"))
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err := stocksync.RebuildAtStart(ctx, e.inv, e.st, nil)
	if err != nil || len(rep.Restored) != 1 || rep.RestoredRecords != 1 {
		t.Fatalf("rebuild: %+v, %v; want A and one order record restored", rep, err)
	}
	again, err := e.inv.Checkout(ctx, req)
	if err != nil || !again.Replayed || again.ID != o.ID {
		t.Fatalf("retry after the loss: %+v, %v; want a replay of %s", again, err, o.ID)
	}
	if lv := e.level(t, "A"); lv.Sold != 2 || lv.Available != 8 {
		t.Fatalf("levels %+v; want 2 sold once", lv)
	}
}

// A rolled-back SKU that cannot be restored now (here: a damaged hold record the restore
// must read) is reported, and does not stop a start-up: the next run tries again.
func TestARollbackThatCannotBeRestoredDoesNotStopAStart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	before := e.level(t, "A")
	e.buy(t, 2, "A")
	if _, err := e.inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: "h1", TTL: time.Hour,
		Lines: []engine.Line{{SKU: "A", Quantity: 1}}}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, e.started(t, "s"))
	e.rollBack(t, "A", before)
	if err := e.rdb.HSet(ctx, e.inv.Keys().Hold("h-bad"), "u", "u", "st", "active", "l", "garbage").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.ZAdd(ctx, e.inv.Keys().HoldIndex(), redis.Z{Score: 1, Member: "h-bad"}).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err := stocksync.RebuildAtStart(ctx, e.inv, e.st, nil)
	if err != nil {
		t.Fatalf("start-up stopped by one SKU: %v", err)
	}
	if len(rep.RolledBack) != 1 || rep.RolledBack[0].Restored || rep.RolledBack[0].Error == "" || rep.Restorations() != 0 {
		t.Fatalf("report: %+v; want A reported, not restored, with its error", rep.RolledBack)
	}
}
