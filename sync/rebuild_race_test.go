package sync_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	stocksync "github.com/flashstock/flashstock/sync"
)

// storm checks out one unit of sku from 4 goroutines until stop is called or it has
// placed limit orders; refusals (the SKU missing, sold out) are expected. stop returns
// the ids of the orders it placed.
func (e *env) storm(t *testing.T, sku string, limit int64) (stop func() []string) {
	t.Helper()
	var mu sync.Mutex
	var ids []string
	var done atomic.Bool
	var placed atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for !done.Load() && placed.Load() < limit {
				o, err := e.inv.Checkout(context.Background(), engine.CheckoutRequest{UserID: fmt.Sprint("storm", g),
					OrderID: engine.NewID(), Lines: []engine.Line{{SKU: sku, Quantity: 1}}})
				var se *engine.StockError
				switch {
				case err == nil:
					placed.Add(1)
					mu.Lock()
					ids = append(ids, o.ID)
					mu.Unlock()
				case errors.Is(err, engine.ErrNotFound) || errors.As(err, &se):
				default:
					t.Errorf("storm checkout: %v", err)
					return
				}
			}
		})
	}
	return func() []string { done.Store(true); wg.Wait(); return ids }
}

// Issue 10, fault 2: checkouts keep landing while Rebuild restores a lost SKU. The
// restore and the release of the lost holds' units are one step, so no checkout can
// come between them: every round ends with nothing reserved and every unit accounted.
func TestRebuildUnderACheckoutStorm(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const received = 100000
	e.product(t, "A", received)
	sy := e.started(t, "s")
	var orders []string
	for round := range 8 {
		h := fmt.Sprint("h", round)
		if _, err := e.inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: h, TTL: time.Hour,
			Lines: []engine.Line{{SKU: "A", Quantity: 2}}}); err != nil {
			t.Fatal(err)
		}
		waitSynced(t, sy)
		// Redis loses the SKU and the hold.
		if err := e.rdb.Del(ctx, "fs:{0}:s:A", "fs:{0}:h:"+h).Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.rdb.ZRem(ctx, "fs:{0}:hx", h).Err(); err != nil {
			t.Fatal(err)
		}
		stop := e.storm(t, "A", 40)
		rep, err := stocksync.Rebuild(ctx, e.inv, e.st, nil)
		orders = append(orders, stop()...)
		if err != nil {
			t.Fatalf("round %d: rebuild: %v", round, err)
		}
		if len(rep.Restored) != 1 || rep.ReleasedHolds != 2 {
			t.Fatalf("round %d: rebuild report %+v; want A restored and 2 held units released", round, rep)
		}
		lv := e.level(t, "A")
		if lv.Reserved != 0 || lv.Available+lv.Reserved+lv.Sold != received || lv.Sold != int64(len(orders)) {
			t.Fatalf("round %d: levels %+v after %d orders; want nothing reserved and %d units accounted",
				round, lv, len(orders), received)
		}
	}
	waitSynced(t, sy)
	e.wantFoldMatches(t, "A")
}

// Issue 10, fault 2, on a rolled-back SKU: a checkout lands between the read of the
// live version and the restore. The restore's compare-and-set fails, it reads afresh
// and restores, counting that checkout; the lost hold's units are released.
func TestRollbackRestoreRetriesWhenACheckoutLands(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	sy := e.started(t, "s")
	before := e.level(t, "A")
	if _, err := e.inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: "h1", TTL: time.Hour,
		Lines: []engine.Line{{SKU: "A", Quantity: 3}}}); err != nil {
		t.Fatal(err)
	}
	ids := e.buy(t, 2, "A")
	waitSynced(t, sy)
	e.rollBack(t, "A", before, ids...)
	if err := e.rdb.Del(ctx, "fs:{0}:h:h1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.ZRem(ctx, "fs:{0}:hx", "h1").Err(); err != nil {
		t.Fatal(err)
	}

	var calls atomic.Int64
	stocksync.SetRebaseHook(func(string) {
		if calls.Add(1) == 1 {
			ids = append(ids, e.buy(t, 1, "A")...) // lands between the read and the write
		}
	})
	t.Cleanup(func() { stocksync.SetRebaseHook(nil) })
	rep, err := stocksync.Rebuild(ctx, e.inv, e.st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || len(rep.RolledBack) != 1 || !rep.RolledBack[0].Restored || rep.RolledBack[0].ReleasedHolds != 3 ||
		rep.RolledBack[0].Renumbered != 1 {
		t.Fatalf("restore attempts %d, report %+v; want a second attempt that restores", calls.Load(), rep)
	}
	lv := e.level(t, "A")
	if lv.Reserved != 0 || lv.Sold != 3 || lv.Available != 7 || e.soldUnits(t, ids) != 3 {
		t.Fatalf("levels %+v; want 3 sold (orders hold %d), none reserved, 7 available", lv, e.soldUnits(t, ids))
	}
	waitSynced(t, sy)
	e.wantFoldMatches(t, "A")
}
