package sync_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	stocksync "github.com/flashstock/flashstock/sync"
)

// Fault 1: a syncer dies after writing a batch and before acknowledging it; another
// syncer takes its pending entries over. Every order is in MongoDB exactly once.
func TestSyncerDiesBetweenWriteAndAck(t *testing.T) {
	e := newEnv(t)
	e.product(t, "A", 1000)
	ids := e.buy(t, 250, "A")

	var opts stocksync.SyncerOptions
	var stopA func()
	crashed := make(chan struct{})
	var once sync.Once
	stocksync.SetBeforeAck(&opts, func() bool {
		once.Do(func() {
			go stopA()
			close(crashed)
		})
		return false // "crash": written, never acknowledged
	})
	a := e.syncer(e.st, "a", opts)
	stopA = run(t, a)
	<-crashed
	stopA()
	if a.Persisted() != 0 {
		t.Fatalf("the crashed syncer acknowledged %d entries", a.Persisted())
	}
	pending, err := e.rdb.XPending(context.Background(), e.inv.OutboxKey(), stocksync.Group).Result()
	if err != nil || pending.Count == 0 {
		t.Fatalf("pending after the crash: %+v, %v", pending, err)
	}

	b := e.syncer(e.st, "b", stocksync.SyncerOptions{ClaimIdle: 100 * time.Millisecond})
	run(t, b)
	waitSynced(t, b)
	e.wantOrders(t, ids)
	e.wantFoldMatches(t, "A")
	// Entries written twice are identical: already stored, not conflicts.
	if n := b.Conflicts(); n != 0 {
		t.Fatalf("a redelivery counted as %d conflicts", n)
	}
}

// Fault 2: MongoDB is unreachable while checkouts go on; when it is back, every order
// arrives, none twice, and the syncer never crashed.
func TestMongoDownThenBack(t *testing.T) {
	e := newEnv(t)
	st, proxy := e.storeBehindProxy(t)
	e.product(t, "A", 1000)
	sy := e.syncer(st, "s", stocksync.SyncerOptions{MaxBackoff: 200 * time.Millisecond})
	run(t, sy)
	ids := e.buy(t, 20, "A")
	waitSynced(t, sy)

	proxy.Down()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 8 {
		wg.Go(func() {
			got := e.buy(t, 25, "A")
			mu.Lock()
			ids = append(ids, got...)
			mu.Unlock()
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for sy.Failures() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if sy.Failures() == 0 {
		t.Fatal("the syncer never saw MongoDB fail")
	}
	proxy.Up()
	waitSynced(t, sy)
	e.wantOrders(t, ids)
	e.wantFoldMatches(t, "A")
}

// Fault 3: Redis restarts without persistence. The rebuild gives exactly the live stock
// MongoDB implies, and releases the units of holds that were lost.
func TestRedisLostRebuildsFromMongo(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 100)
	e.product(t, "B", 50)
	sy := e.syncer(e.st, "s", stocksync.SyncerOptions{})
	stop := run(t, sy)
	ids := e.buy(t, 30, "A")
	e.buy(t, 5, "B")
	if _, err := e.inv.Cancel(ctx, engine.CancelRequest{OrderID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: "h1", TTL: time.Hour,
		Lines: []engine.Line{{SKU: "A", Quantity: 4}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.inv.Adjust(ctx, engine.AdjustRequest{SKU: "B", Delta: 10, Reason: "restock"}); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, sy)
	stop()
	before, err := e.inv.Levels(ctx, []string{"A", "B"})
	if err != nil {
		t.Fatal(err)
	}

	e.srv.Restart() // no persistence: Redis comes back empty
	if _, err := e.inv.Levels(ctx, []string{"A"}); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("after the restart: got %v, want the SKU gone", err)
	}
	rep, err := stocksync.Rebuild(ctx, e.inv, e.st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Restored) != 2 || rep.Lost != 0 || rep.ReleasedHolds != 4 {
		t.Fatalf("rebuild report: %+v", rep)
	}
	after, err := e.inv.Levels(ctx, []string{"A", "B"})
	if err != nil {
		t.Fatal(err)
	}
	wantA := engine.Level{SKU: "A", Available: before[0].Available + 4, Sold: before[0].Sold, Version: before[0].Version + 1}
	if after[0] != wantA || after[1] != before[1] {
		t.Fatalf("rebuilt levels: got %+v, want %+v and %+v", after, wantA, before[1])
	}
	// The release of the lost hold is itself a movement that reaches the ledger.
	sy2 := e.started(t, "s2")
	waitSynced(t, sy2)
	e.wantFoldMatches(t, "A")
	e.wantFoldMatches(t, "B")
	// Checkout goes on where the sequence left off.
	e.buy(t, 3, "A")
	waitSynced(t, sy2)
	e.wantFoldMatches(t, "A")
	// Rebuilding again changes nothing.
	if rep, err := stocksync.Rebuild(ctx, e.inv, e.st, nil); err != nil || len(rep.Restored) != 0 {
		t.Fatalf("second rebuild: %+v, %v", rep, err)
	}
}

// With AOF on, a Redis restart loses nothing: the outbox survives and every order
// acknowledged before the restart reaches MongoDB.
func TestRedisRestartWithAOFLosesNothing(t *testing.T) {
	e := newEnv(t, "--save", "", "--appendonly", "yes", "--appendfsync", "always")
	e.product(t, "A", 100)
	ids := e.buy(t, 40, "A")
	e.srv.Restart()
	sy := e.started(t, "s")
	waitSynced(t, sy)
	e.wantOrders(t, ids)
	e.wantFoldMatches(t, "A")
}

// Fault 4: drift written into Redis by hand is reported exactly; after repair the next
// run is clean and the ledger shows the drift and its compensation.
func TestReconcileFindsAndRepairsDrift(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 100)
	e.product(t, "B", 100)
	sy := e.started(t, "s")
	e.buy(t, 10, "A")
	e.buy(t, 3, "B")
	rc := &stocksync.Reconciler{Inv: e.inv, Store: e.st}
	if rep, err := rc.Run(ctx, false); err != nil || !rep.Clean() || rep.CheckedSKUs != 2 {
		t.Fatalf("before the drift: %+v, %v", rep, err)
	}
	if err := e.rdb.HIncrBy(ctx, "fs:{0}:s:A", "a", 7).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err := rc.Run(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	want := stocksync.Drift{SKU: "A", Version: 11, Redis: stocksync.Levels{Available: 97, Sold: 10},
		Expected: stocksync.Levels{Available: 90, Sold: 10}, Delta: stocksync.Levels{Available: 7}}
	if len(rep.Drift) != 1 || rep.Drift[0] != want || rep.Repaired {
		t.Fatalf("drift report: got %+v, want exactly %+v", rep.Drift, want)
	}
	last, err := rc.LastReport(ctx)
	if err != nil || len(last.Drift) != 1 || last.Drift[0] != want {
		t.Fatalf("stored report: %+v, %v", last, err)
	}

	rep, err = rc.Run(ctx, true)
	if err != nil || !rep.Repaired || len(rep.Drift) != 1 || !rep.Drift[0].Repaired {
		t.Fatalf("repair: %+v, %v", rep, err)
	}
	if lv, _ := e.inv.Levels(ctx, []string{"A"}); lv[0].Available != 90 {
		t.Fatalf("after repair: %+v", lv[0])
	}
	waitSynced(t, sy)
	if rep, err := rc.Run(ctx, false); err != nil || !rep.Clean() {
		t.Fatalf("after repair: %+v, %v", rep, err)
	}
	ledger, err := e.st.Ledger(ctx, "A")
	if err != nil {
		t.Fatal(err)
	}
	n := len(ledger)
	if n < 2 || ledger[n-2].Kind != "drift" || ledger[n-2].Available != 7 || ledger[n-1].Kind != "repair" || ledger[n-1].Available != -7 {
		t.Fatalf("ledger tail: %+v", ledger[max(0, n-2):])
	}
}

// Fault 5: two syncers and two schedulers at once. No effect is doubled, and each tick
// of a job runs once.
func TestTwoSyncersTwoSchedulers(t *testing.T) {
	e := newEnv(t)
	e.product(t, "A", 5000)
	s1 := e.syncer(e.st, "s1", stocksync.SyncerOptions{Batch: 17})
	s2 := e.syncer(e.st, "s2", stocksync.SyncerOptions{Batch: 23})
	run(t, s1)
	run(t, s2)

	var ticks sync.Map // second -> runs
	var runs atomic.Int64
	job := stocksync.Job{Name: "count", Spec: "* * * * * *", Run: func(context.Context) error {
		runs.Add(1)
		n, _ := ticks.LoadOrStore(time.Now().Round(time.Second).Unix(), new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		sch, err := stocksync.NewScheduler(e.rdb, e.inv.Keys(), nil, job)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { sch.Start(ctx) })
	}

	var ids []string
	var mu sync.Mutex
	var buyers sync.WaitGroup
	for range 4 {
		buyers.Go(func() {
			got := e.buy(t, 100, "A")
			mu.Lock()
			ids = append(ids, got...)
			mu.Unlock()
		})
	}
	buyers.Wait()
	time.Sleep(3200 * time.Millisecond) // let the schedulers see at least three ticks
	cancel()
	wg.Wait()

	waitSynced(t, s1)
	e.wantOrders(t, ids)
	e.wantFoldMatches(t, "A")
	if s1.Persisted() == 0 || s2.Persisted() == 0 {
		t.Fatalf("both syncers should share the work: %d and %d", s1.Persisted(), s2.Persisted())
	}
	seen := 0
	ticks.Range(func(k, v any) bool {
		seen++
		if n := v.(*atomic.Int64).Load(); n != 1 {
			t.Errorf("tick %v ran %d times", k, n)
		}
		return true
	})
	if seen < 3 || runs.Load() != int64(seen) {
		t.Fatalf("%d runs over %d ticks, want one per tick and at least 3 ticks", runs.Load(), seen)
	}
}

func TestLockIsReleasedOnlyByItsOwner(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, err := stocksync.Acquire(ctx, e.rdb, "L", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stocksync.Acquire(ctx, e.rdb, "L", time.Minute); !errors.Is(err, stocksync.ErrLocked) {
		t.Fatalf("second acquire: got %v, want ErrLocked", err)
	}
	// The lock expires and someone else takes it: the first holder cannot release it.
	e.rdb.Del(ctx, "L")
	other, err := stocksync.Acquire(ctx, e.rdb, "L", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := stocksync.Acquire(ctx, e.rdb, "L", time.Minute); !errors.Is(err, stocksync.ErrLocked) {
		t.Fatal("a stale holder released someone else's lock")
	}
	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := stocksync.Acquire(ctx, e.rdb, "L", time.Minute); err != nil {
		t.Fatalf("after the owner released: %v", err)
	}
}

// A stock hash lost on its own (its index entry survives) is rebuilt too, and only it.
func TestRebuildRestoresASingleLostSKU(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	e.product(t, "B", 10)
	sy := e.started(t, "s")
	e.buy(t, 4, "A")
	waitSynced(t, sy)
	if err := e.rdb.Del(ctx, "fs:{0}:s:A").Err(); err != nil {
		t.Fatal(err)
	}
	rep, err := stocksync.Rebuild(ctx, e.inv, e.st, nil)
	if err != nil || len(rep.Restored) != 1 || rep.Restored[0] != "A" {
		t.Fatalf("rebuild: %+v, %v", rep, err)
	}
	lv, err := e.inv.Levels(ctx, []string{"A", "B"})
	if err != nil || lv[0].Available != 6 || lv[0].Sold != 4 || lv[0].Version != 5 || lv[1].Available != 10 {
		t.Fatalf("levels after rebuild: %+v, %v", lv, err)
	}
}
