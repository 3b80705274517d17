package sync_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/engine"
)

// Issue 10, fault 5: an order whose Redis record has expired (7 days after MongoDB had
// it) is cancelled from MongoDB's copy: its units return exactly once, and only the
// lines that counted against a per-user limit go back to the user's count.
func TestCancelAfterTheRecordLeftRedis(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	e.product(t, "B", 10)
	if err := e.inv.UpdateProduct(ctx, "A", engine.ProductPatch{MaxPerUser: ptr(int64(5))}); err != nil {
		t.Fatal(err)
	}
	sy := e.started(t, "s")
	o, err := e.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u1", OrderID: engine.NewID(),
		Lines: []engine.Line{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	waitSynced(t, sy)
	if ttl := e.rdb.TTL(ctx, "fs:{0}:o:"+o.ID).Val(); ttl <= 0 {
		t.Fatalf("record TTL after sync: %v", ttl)
	}
	if err := e.rdb.Del(ctx, "fs:{0}:o:"+o.ID).Err(); err != nil { // the TTL ran out
		t.Fatal(err)
	}
	if _, err := e.inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID}); err == nil {
		t.Fatal("cancel without a record succeeded: the test no longer sets the stage")
	}

	stored, lines, err := e.st.OrderRecord(ctx, o.ID)
	if err != nil || !strings.Contains(lines, "A:2:100:L") || strings.Contains(lines, "B:3:100:L") {
		t.Fatalf("MongoDB's copy: %+v, lines %q, %v; want A counted, B not", stored, lines, err)
	}
	for i := range 2 {
		got, err := e.inv.CancelRestored(ctx, stored, lines)
		if err != nil || got.Status != engine.OrderCancelled || got.Replayed != (i > 0) {
			t.Fatalf("cancel %d: %+v, %v", i, got, err)
		}
	}
	for _, sku := range []string{"A", "B"} {
		if lv := e.level(t, sku); lv.Available != 10 || lv.Sold != 0 {
			t.Fatalf("%s after the cancel: %+v; want every unit back once", sku, lv)
		}
	}
	if n, _ := e.rdb.HGet(ctx, "fs:{0}:b:A", "u1").Int64(); n != 0 {
		t.Fatalf("u1's count of A: got %d, want 0", n)
	}
	if n, err := e.rdb.HGet(ctx, "fs:{0}:b:B", "u1").Int64(); err == nil && n != 0 {
		t.Fatalf("u1's count of B (never counted): got %d, want none", n)
	}

	// Once MongoDB has the cancellation, its copy says so: cancelling again is a replay.
	waitSynced(t, sy)
	if err := e.rdb.Del(ctx, "fs:{0}:o:"+o.ID).Err(); err != nil {
		t.Fatal(err)
	}
	stored, lines, err = e.st.OrderRecord(ctx, o.ID)
	if err != nil || stored.Status != engine.OrderCancelled {
		t.Fatalf("MongoDB's copy after the cancel: %+v, %v", stored, err)
	}
	if got, err := e.inv.CancelRestored(ctx, stored, lines); err != nil || !got.Replayed {
		t.Fatalf("cancel of a cancelled order: %+v, %v; want a replay", got, err)
	}
	if lv := e.level(t, "A"); lv.Available != 10 {
		t.Fatalf("A after the replay: %+v", lv)
	}
	waitSynced(t, sy)
	e.wantFoldMatches(t, "A")
	e.wantFoldMatches(t, "B")
}
