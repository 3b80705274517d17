package engine_test

import (
	"context"
	"testing"

	"github.com/flashstock/flashstock/engine"
)

// A lane sells from the same stock as its inventory, and closing it leaves the
// inventory working.
func TestLaneSharesStockAndClosesAlone(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 3, Price: 100})
		lane, closeLane := inv.Lane(1)
		if _, err := lane.Checkout(ctx, engine.CheckoutRequest{UserID: "sim-1", OrderID: engine.NewID(),
			Lines: []engine.Line{{SKU: "A", Quantity: 2}}}); err != nil {
			t.Fatal(err)
		}
		closeLane()
		if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: engine.NewID(),
			Lines: []engine.Line{{SKU: "A", Quantity: 1}}}); err != nil {
			t.Fatalf("the inventory after its lane closed: %v", err)
		}
		if lv := mustLevel(t, inv, "A"); lv.Available != 0 || lv.Sold != 3 {
			t.Fatalf("levels: got %+v, want 0 available, 3 sold", lv)
		}
	})
}

// ForgetBuyers removes the named users' counters and nobody else's.
func TestForgetBuyersRemovesOnlyTheirCounters(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "L", Stock: 100, Price: 100, MaxPerUser: 5})
		mustCreate(t, inv, engine.Product{SKU: "N", Stock: 100, Price: 100})
		for _, u := range []string{"sim-x-0", "sim-x-1", "alice"} {
			if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: u, OrderID: engine.NewID(),
				Lines: []engine.Line{{SKU: "L", Quantity: 2}, {SKU: "N", Quantity: 1}}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := inv.ForgetBuyers(ctx, []string{"L", "N"}, []string{"sim-x-0", "sim-x-1"}); err != nil {
			t.Fatal(err)
		}
		got, err := inv.Client().HGetAll(ctx, inv.Keys().Bought("L")).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got["alice"] != "2" {
			t.Fatalf("counters of L: got %v, want only alice's 2", got)
		}
		if lv := mustLevel(t, inv, "L"); lv.Sold != 6 {
			t.Fatalf("forgetting buyers changed stock: %+v", lv)
		}
	})
}
