package sync_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/flashstock/flashstock/engine"
	stocksync "github.com/flashstock/flashstock/sync"
	"github.com/redis/go-redis/v9"
)

// rollBack writes a SKU's stock hash back to older levels, as a Redis that lost its
// last writes (appendfsync everysec, a lagging replica promoted) would hold it, and
// drops the order records written since.
func (e *env) rollBack(t *testing.T, sku string, to engine.Level, lostOrders ...string) {
	t.Helper()
	ctx := context.Background()
	if err := e.rdb.HSet(ctx, "fs:{0}:s:"+sku, "a", to.Available, "r", to.Reserved, "s", to.Sold, "q", to.Version).Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range lostOrders {
		if err := e.rdb.Del(ctx, "fs:{0}:o:"+id).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) level(t *testing.T, sku string) engine.Level {
	t.Helper()
	lv, err := e.inv.Levels(context.Background(), []string{sku})
	if err != nil {
		t.Fatal(err)
	}
	return lv[0]
}

// soldUnits sums the units of confirmed orders, in Redis or MongoDB.
func (e *env) soldUnits(t *testing.T, ids []string) int64 {
	t.Helper()
	var n int64
	for _, id := range ids {
		o, err := e.inv.Order(context.Background(), id)
		if errors.Is(err, engine.ErrNotFound) {
			o, err = e.st.Order(context.Background(), id)
		}
		if err != nil {
			t.Fatalf("order %s: %v", id, err)
		}
		if o.Status == engine.OrderConfirmed {
			for _, it := range o.Items {
				n += it.Quantity
			}
		}
	}
	return n
}

// Issue 10, fault 1: Redis rolls back a SKU after MongoDB has its movements, and
// checkouts go on, handing out sequence numbers MongoDB already holds. Reconciliation
// finds MongoDB ahead, reports the rollback, and restores levels and sequence from
// MongoDB plus the movements numbered again, and the lost orders; no unit is sold twice.
func TestRedisRollbackIsDetectedAndRestored(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	e.product(t, "B", 10)
	stop := run(t, e.syncer(e.st, "s", stocksync.SyncerOptions{}))
	before := e.level(t, "A") // q 1
	lost := e.buy(t, 3, "A")  // seqs 2..4, persisted
	e.buy(t, 2, "B")
	waitSynced(t, e.syncer(e.st, "probe", stocksync.SyncerOptions{}))
	stop()

	e.rollBack(t, "A", before, lost...)
	again := e.buy(t, 2, "A") // seqs 2..3 once more; no syncer has seen them
	rc := &stocksync.Reconciler{Inv: e.inv, Store: e.st, Wait: 200 * time.Millisecond}
	rep, err := rc.Run(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Clean() || len(rep.RolledBack) != 1 || rc.RolledBack() != 1 {
		t.Fatalf("report: %+v (counter %d); want A rolled back", rep, rc.RolledBack())
	}
	rb := rep.RolledBack[0]
	if rb.SKU != "A" || !rb.Restored || rb.Renumbered != 2 || rb.RestoredOrders != 3 || rb.LedgerVersion != 4 || rb.RedisVersion != 3 {
		t.Fatalf("rollback: %+v", rb)
	}
	if len(rep.Drift) != 0 {
		t.Fatalf("drift after the restore: %+v", rep.Drift)
	}
	cs, err := e.st.Conflicts(ctx, "A")
	if err != nil || len(cs) != 2 || cs[0].Seq != 2 || cs[1].Seq != 3 || cs[0].Movement.Ref != again[0] || !cs[0].Resolved {
		t.Fatalf("kept conflicts: got %+v, %v; want seqs 2 and 3 of %v, resolved", cs, err, again)
	}
	lv := e.level(t, "A")
	all := append(append([]string{}, lost...), again...)
	if lv.Sold != 5 || lv.Available != 5 || lv.Reserved != 0 || e.soldUnits(t, all) != lv.Sold {
		t.Fatalf("restored levels %+v; want 5 sold (the confirmed orders hold %d units) and 5 available",
			lv, e.soldUnits(t, all))
	}
	for _, id := range lost {
		o, err := e.inv.Order(ctx, id)
		if err != nil || o.Status != engine.OrderConfirmed || len(o.Items) != 1 || o.Items[0].SKU != "A" {
			t.Fatalf("lost order %s through the engine: %+v, %v", id, o, err)
		}
	}

	// Once synced, the ledger explains the restored levels, the next run is clean, and
	// the last five units sell exactly once.
	sy := e.started(t, "s2")
	waitSynced(t, sy)
	e.wantFoldMatches(t, "A")
	if rep, err := rc.Run(ctx, false); err != nil || !rep.Clean() {
		t.Fatalf("second run: %+v, %v", rep, err)
	}
	all = append(all, e.buy(t, 5, "A")...)
	_, err = e.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "late", OrderID: engine.NewID(),
		Lines: []engine.Line{{SKU: "A", Quantity: 1}}})
	var se *engine.StockError
	if !errors.As(err, &se) {
		t.Fatalf("checkout past the stock: got %v, want out of stock", err)
	}
	lv = e.level(t, "A")
	if lv.Sold != 10 || lv.Available != 0 || e.soldUnits(t, all) != 10 {
		t.Fatalf("after selling out: %+v, orders hold %d units; want 10 sold once", lv, e.soldUnits(t, all))
	}
	waitSynced(t, sy)
	e.wantFoldMatches(t, "A")
	if lv := e.level(t, "B"); lv.Sold != 2 || lv.Version != 3 {
		t.Fatalf("B was not rolled back and must be untouched: %+v", lv)
	}
}

// The syncer meets the movements Redis numbered again: it keeps each in the conflicts
// collection, counts it, and restores the SKU from MongoDB at once.
func TestSyncerRestoresARollbackAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	stop := run(t, e.syncer(e.st, "s", stocksync.SyncerOptions{}))
	before := e.level(t, "A")
	lost := e.buy(t, 3, "A")
	waitSynced(t, e.syncer(e.st, "probe", stocksync.SyncerOptions{}))
	stop()
	e.rollBack(t, "A", before, lost...)
	again := e.buy(t, 2, "A")

	sy := e.started(t, "s2")
	waitSynced(t, sy)
	if sy.Conflicts() != 2 {
		t.Fatalf("syncer conflicts: got %d, want 2", sy.Conflicts())
	}
	// The syncer restores right after acknowledging the batch: no reconciliation runs.
	e.waitNoOpenConflicts(t)
	lv := e.level(t, "A")
	all := append(append([]string{}, lost...), again...)
	if lv.Sold != 5 || lv.Available != 5 || e.soldUnits(t, all) != 5 {
		t.Fatalf("levels %+v; want 5 sold and 5 available", lv)
	}
	if _, err := e.inv.Order(ctx, lost[0]); err != nil {
		t.Fatalf("lost order through the engine: %v", err)
	}
	waitSynced(t, sy)
	e.wantFoldMatches(t, "A")
}

// At start-up (Rebuild, before any syncer runs), a SKU whose Redis copy is older than
// MongoDB's is found and restored, its lost orders written back with their per-user
// counts, and the units of a hold Redis lost are released in the same step.
func TestRebuildRestoresARolledBackSKU(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	if err := e.inv.UpdateProduct(ctx, "A", engine.ProductPatch{MaxPerUser: ptr(int64(3))}); err != nil {
		t.Fatal(err)
	}
	sy := e.syncer(e.st, "s", stocksync.SyncerOptions{})
	stop := run(t, sy)
	before := e.level(t, "A")
	o, err := e.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u1", IdempotencyKey: "k1", Lines: []engine.Line{{SKU: "A", Quantity: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.inv.Reserve(ctx, engine.ReserveRequest{UserID: "u2", HoldID: "h1", TTL: time.Hour,
		Lines: []engine.Line{{SKU: "A", Quantity: 3}}}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, sy)
	stop()
	// The rollback takes the order, the hold and the user's count with it.
	e.rollBack(t, "A", before, o.ID)
	if err := e.rdb.Del(ctx, "fs:{0}:h:h1", "fs:{0}:b:A").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.ZRem(ctx, "fs:{0}:hx", "h1").Err(); err != nil {
		t.Fatal(err)
	}

	rep, err := stocksync.Rebuild(ctx, e.inv, e.st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.RolledBack) != 1 || !rep.RolledBack[0].Restored || rep.RolledBack[0].ReleasedHolds != 3 ||
		rep.RolledBack[0].RestoredOrders != 1 {
		t.Fatalf("rebuild report: %+v", rep)
	}
	lv := e.level(t, "A")
	if want := (engine.Level{SKU: "A", Available: 8, Sold: 2, Version: 4}); lv != want {
		t.Fatalf("levels: got %+v, want %+v", lv, want)
	}
	got, err := e.inv.Order(ctx, o.ID)
	if err != nil || got.Status != engine.OrderConfirmed || got.Total != o.Total || got.UserID != "u1" {
		t.Fatalf("restored order: %+v, %v; want %+v", got, err, o)
	}
	// The user's two counted units are back under the limit of 3: one more fits, two do not.
	_, err = e.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u1", OrderID: engine.NewID(), Lines: []engine.Line{{SKU: "A", Quantity: 2}}})
	var le *engine.LimitError
	if !errors.As(err, &le) || le.Already != 2 {
		t.Fatalf("over the limit after the restore: got %v, want a limit error with 2 already taken", err)
	}
	sy2 := e.started(t, "s2")
	waitSynced(t, sy2)
	e.wantFoldMatches(t, "A")
	if rep, err := stocksync.Rebuild(ctx, e.inv, e.st, nil); err != nil || len(rep.RolledBack) != 0 {
		t.Fatalf("second rebuild: %+v, %v", rep, err)
	}
}

func ptr[T any](v T) *T { return &v }

// A rollback can leave Redis showing holds active that MongoDB's ledger settled after
// the rollback point. The restore settles them the same way, so they can be neither
// committed nor expired again (which would sell or return their units a second time),
// and gives released units back to the user's count.
func TestRollbackSettlesHoldsMongoDBSettled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	if err := e.inv.UpdateProduct(ctx, "A", engine.ProductPatch{MaxPerUser: ptr(int64(5))}); err != nil {
		t.Fatal(err)
	}
	sy := e.started(t, "s")
	for _, h := range []struct {
		id, user string
		qty      int64
	}{{"h1", "u1", 2}, {"h2", "u2", 3}} {
		if _, err := e.inv.Reserve(ctx, engine.ReserveRequest{UserID: h.user, HoldID: h.id, TTL: time.Hour,
			Lines: []engine.Line{{SKU: "A", Quantity: h.qty}}}); err != nil {
			t.Fatal(err)
		}
	}
	point := e.level(t, "A") // q 3: both holds active
	exp := e.rdb.ZScore(ctx, "fs:{0}:hx", "h1").Val()
	o, err := e.inv.Commit(ctx, engine.CommitRequest{HoldID: "h1", OrderID: engine.NewID()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.inv.Release(ctx, engine.ReleaseRequest{HoldID: "h2"}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, sy)

	// Redis goes back to the point where both holds were active.
	e.rollBack(t, "A", point, o.ID)
	for _, cmd := range [][]any{{"HSET", "fs:{0}:h:h1", "st", "active"}, {"HDEL", "fs:{0}:h:h1", "o"},
		{"HSET", "fs:{0}:h:h2", "st", "active"}, {"ZADD", "fs:{0}:hx", exp, "h1", exp, "h2"},
		{"HSET", "fs:{0}:b:A", "u2", 3}} {
		if err := e.rdb.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}

	rep, err := stocksync.Rebuild(ctx, e.inv, e.st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.RolledBack) != 1 || !rep.RolledBack[0].Restored || rep.RolledBack[0].RestoredOrders != 1 ||
		rep.RolledBack[0].ReleasedHolds != 0 {
		t.Fatalf("rebuild report: %+v", rep)
	}
	if lv := e.level(t, "A"); lv != (engine.Level{SKU: "A", Available: 8, Sold: 2, Version: 5}) {
		t.Fatalf("levels: %+v; want 8 available, 2 sold, none reserved at version 5", lv)
	}
	if h, err := e.inv.Hold(ctx, "h1"); err != nil || h.Status != engine.HoldCommitted || h.OrderID != o.ID {
		t.Fatalf("h1: %+v, %v; want committed to %s", h, err, o.ID)
	}
	if h, err := e.inv.Hold(ctx, "h2"); err != nil || h.Status != engine.HoldReleased {
		t.Fatalf("h2: %+v, %v; want released", h, err)
	}
	if n, err := e.inv.ActiveHolds(ctx); err != nil || n != 0 {
		t.Fatalf("active holds: %d, %v; want 0", n, err)
	}
	if _, err := e.inv.Release(ctx, engine.ReleaseRequest{HoldID: "h1"}); !errors.Is(err, engine.ErrHoldCommitted) {
		t.Fatalf("release of the committed hold: got %v, want ErrHoldCommitted", err)
	}
	u1, _ := e.rdb.HGet(ctx, "fs:{0}:b:A", "u1").Int64()
	u2, _ := e.rdb.HGet(ctx, "fs:{0}:b:A", "u2").Int64()
	if u1 != 2 || u2 != 0 {
		t.Fatalf("per-user counts: u1 %d, u2 %d; want 2 (bought) and 0 (released)", u1, u2)
	}
	if got, err := e.inv.Order(ctx, o.ID); err != nil || got.HoldID != "h1" || got.Status != engine.OrderConfirmed {
		t.Fatalf("restored order: %+v, %v", got, err)
	}
	waitSynced(t, sy)
	e.wantFoldMatches(t, "A")
}

// A keyed checkout retried after Redis lost its order record runs again under the same
// order id. The restore counts that order once: its units are sold once.
func TestRollbackCountsARerunOrderOnce(t *testing.T) {
	e, req, o := syncedOrderRolledBack(t)
	ctx := context.Background()
	again, err := e.inv.Checkout(ctx, req) // Redis has no record: it runs again
	if err != nil || again.ID != o.ID || again.Replayed {
		t.Fatalf("retry after the rollback: %+v, %v; want the same order run again", again, err)
	}
	rc := &stocksync.Reconciler{Inv: e.inv, Store: e.st, Wait: 200 * time.Millisecond}
	rep, err := rc.Run(ctx, false)
	if err != nil || len(rep.RolledBack) != 1 || !rep.RolledBack[0].Restored {
		t.Fatalf("report: %+v, %v", rep, err)
	}
	if lv := e.level(t, "A"); lv.Sold != 2 || lv.Available != 8 {
		t.Fatalf("levels %+v; want the one order's 2 units sold once", lv)
	}
	sy := e.started(t, "s2")
	waitSynced(t, sy)
	e.wantFoldMatches(t, "A")
	if n, err := e.st.CountOrders(ctx, ""); err != nil || n != 1 {
		t.Fatalf("orders in MongoDB: %d, %v; want 1", n, err)
	}
}

// A restore whose conflicts were recorded again but not marked resolved (the process
// died in between) is not applied a second time: the next run finds its rebase movement
// in the ledger and only marks them.
func TestRollbackRestoreIsNotAppliedTwice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	stop := run(t, e.syncer(e.st, "s", stocksync.SyncerOptions{}))
	before := e.level(t, "A")
	lost := e.buy(t, 3, "A")
	waitSynced(t, e.syncer(e.st, "probe", stocksync.SyncerOptions{}))
	stop()
	e.rollBack(t, "A", before, lost...)
	e.buy(t, 2, "A")
	rc := &stocksync.Reconciler{Inv: e.inv, Store: e.st, Wait: 200 * time.Millisecond}
	if rep, err := rc.Run(ctx, false); err != nil || len(rep.RolledBack) != 1 || !rep.RolledBack[0].Restored {
		t.Fatalf("first run: %+v, %v", rep, err)
	}
	want := e.level(t, "A")
	// The process "died" before marking the conflicts resolved.
	res, err := e.st.Database().Collection("conflicts").UpdateMany(ctx, bson.M{}, bson.M{"$set": bson.M{"resolved": false}})
	if err != nil || res.ModifiedCount != 2 {
		t.Fatalf("unresolve: %+v, %v", res, err)
	}
	if _, err := rc.Run(ctx, false); err != nil {
		t.Fatal(err)
	}
	if lv := e.level(t, "A"); lv != want || lv.Sold != 5 {
		t.Fatalf("after the second run: %+v; want %+v (5 sold, once)", lv, want)
	}
	if open, err := e.st.OpenConflicts(ctx); err != nil || len(open) != 0 {
		t.Fatalf("open conflicts: %+v, %v", open, err)
	}
}

// A keyed retry after a rollback whose re-run takes a sequence number MongoDB never held
// (other checkouts took the lost ones first) is the same order run twice: the ledger
// holds it twice, and the restore counts it once.
func TestRollbackCountsARerunPastTheLedgerOnce(t *testing.T) {
	e, req, o := syncedOrderRolledBack(t)
	ctx := context.Background()
	other := e.buy(t, 1, "A") // takes the number o had: a conflict
	if again, err := e.inv.Checkout(ctx, req); err != nil || again.ID != o.ID {
		t.Fatalf("retry after the rollback: %+v, %v", again, err)
	}
	sy := e.started(t, "s2") // the re-run lands in the ledger under a new number
	waitSynced(t, sy)
	e.waitNoOpenConflicts(t) // the syncer restores after its ack; let it finish first
	rc := &stocksync.Reconciler{Inv: e.inv, Store: e.st, Wait: 200 * time.Millisecond}
	if _, err := rc.Run(ctx, false); err != nil {
		t.Fatal(err)
	}
	if lv := e.level(t, "A"); lv.Sold != 3 || lv.Available != 7 {
		t.Fatalf("levels %+v; want 3 sold (o once, 2 units, and the other buyer's 1) and 7 available", lv)
	}
	if got := e.soldUnits(t, append([]string{o.ID}, other...)); got != 3 {
		t.Fatalf("orders hold %d units, want 3", got)
	}
}

// A hold committed again after a rollback lost its commit is the same commit: commits
// are named by their hold, so the restore counts it once and no second order appears.
func TestRollbackCountsARecommittedHoldOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	stop := run(t, e.syncer(e.st, "s", stocksync.SyncerOptions{}))
	for _, h := range []struct {
		id  string
		qty int64
	}{{"h1", 2}, {"h2", 3}} {
		if _, err := e.inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: h.id, TTL: time.Hour,
			Lines: []engine.Line{{SKU: "A", Quantity: h.qty}}}); err != nil {
			t.Fatal(err)
		}
	}
	before := e.level(t, "A") // a5 r5
	commit := engine.CommitRequest{HoldID: "h1", OrderID: engine.OrderIDForHold("h1")}
	o1, err := e.inv.Commit(ctx, commit)
	if err != nil {
		t.Fatal(err)
	}
	waitSynced(t, e.syncer(e.st, "probe", stocksync.SyncerOptions{}))
	stop()
	// Redis loses the commit: the stock hash and the hold go back, the order is gone.
	e.rollBack(t, "A", before, o1.ID)
	if err := e.rdb.HSet(ctx, e.inv.Keys().Hold("h1"), "st", "active").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HDel(ctx, e.inv.Keys().Hold("h1"), "o").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.ZAdd(ctx, e.inv.Keys().HoldIndex(), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: "h1"}).Err(); err != nil {
		t.Fatal(err)
	}
	o2, err := e.inv.Commit(ctx, commit) // the buyer commits again
	if err != nil || o2.ID != o1.ID {
		t.Fatalf("commit again: %+v, %v; want the same order %s", o2, err, o1.ID)
	}
	rc := &stocksync.Reconciler{Inv: e.inv, Store: e.st, Wait: 200 * time.Millisecond}
	if _, err := rc.Run(ctx, false); err != nil {
		t.Fatal(err)
	}
	if lv := e.level(t, "A"); lv.Available != 5 || lv.Reserved != 3 || lv.Sold != 2 {
		t.Fatalf("levels %+v; want a5 r3 s2 (h1 committed once, h2 still held)", lv)
	}
	if _, err := e.inv.Commit(ctx, engine.CommitRequest{HoldID: "h2", OrderID: engine.OrderIDForHold("h2")}); err != nil {
		t.Fatalf("commit of the other hold: %v", err)
	}
	if lv := e.level(t, "A"); lv.Reserved != 0 || lv.Sold != 5 {
		t.Fatalf("levels after h2: %+v; want r0 s5", lv)
	}
}

// waitNoOpenConflicts waits until every conflict is resolved by a restore.
func (e *env) waitNoOpenConflicts(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		open, err := e.st.OpenConflicts(context.Background())
		if err == nil && len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("open conflicts: %+v, %v; want all resolved by a restore", open, err)
		}
	}
}

// syncedOrderRolledBack sets up the rerun cases: SKU A (10 units), a keyed checkout of 2
// that MongoDB has, then Redis rolled back to before it with the order's record lost.
func syncedOrderRolledBack(t *testing.T) (*env, engine.CheckoutRequest, engine.Order) {
	t.Helper()
	e := newEnv(t)
	e.product(t, "A", 10)
	stop := run(t, e.syncer(e.st, "s", stocksync.SyncerOptions{}))
	before := e.level(t, "A")
	req := engine.CheckoutRequest{UserID: "u1", IdempotencyKey: "k1", Lines: []engine.Line{{SKU: "A", Quantity: 2}}}
	o, err := e.inv.Checkout(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	waitSynced(t, e.syncer(e.st, "probe", stocksync.SyncerOptions{}))
	stop()
	e.rollBack(t, "A", before, o.ID)
	return e, req, o
}
