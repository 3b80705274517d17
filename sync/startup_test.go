package sync_test

import (
	"context"
	"testing"

	stocksync "github.com/flashstock/flashstock/sync"
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
