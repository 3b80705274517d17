package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testredis"
)

func buyOne(inv *engine.Redis, user string) (engine.Order, error) {
	return inv.Checkout(context.Background(), engine.CheckoutRequest{UserID: user, Lines: []engine.Line{{SKU: "S", Quantity: 1}}, OrderID: engine.NewID()})
}

// restockBehindTheEngine puts a unit back without any engine call, so no process hears
// of it: only the mark's own time limit can end it.
func restockBehindTheEngine(t *testing.T, inv *engine.Redis) {
	t.Helper()
	if err := inv.Client().HIncrBy(context.Background(), "fs:{0}:s:S", "a", 1).Err(); err != nil {
		t.Fatal(err)
	}
}

// soldOutEngine is an engine on a private Redis whose one SKU, S, has just sold out: its
// last unit sold, and the next buyer refused (which marks it, if marks are on).
func soldOutEngine(t *testing.T, marks time.Duration) *engine.Redis {
	t.Helper()
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{SoldOutFor: marks})
	t.Cleanup(inv.Close)
	mustCreate(t, inv, engine.Product{SKU: "S", Stock: 1, Price: 1})
	if _, err := buyOne(inv, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := buyOne(inv, "b"); !errors.Is(err, engine.ErrOutOfStock) {
		t.Fatalf("sold out: %v", err)
	}
	// The create's restock message reaches the engine's subscription when it does; a
	// refusal that it overtakes is rightly not marked. Refuse again until one is.
	for deadline := time.Now().Add(5 * time.Second); marks > 0 && !engine.SoldOutMarked(inv, "S"); {
		if time.Now().After(deadline) {
			t.Fatal("no refusal marked the sold-out SKU within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
		if _, err := buyOne(inv, "b"); !errors.Is(err, engine.ErrOutOfStock) {
			t.Fatalf("sold out: %v", err)
		}
	}
	return inv
}

func TestSoldOutMarkIsOffByDefault(t *testing.T) {
	inv := soldOutEngine(t, 0)
	restockBehindTheEngine(t, inv)
	if _, err := buyOne(inv, "c"); err != nil {
		t.Fatalf("live answers must see the unit at once: %v", err)
	}
}

func TestSoldOutMarkLagsAtMostItsDuration(t *testing.T) {
	const d = 300 * time.Millisecond
	inv := soldOutEngine(t, d)
	marked := time.Now()
	restockBehindTheEngine(t, inv)
	_, err := buyOne(inv, "c")
	if time.Since(marked) < d && !errors.Is(err, engine.ErrOutOfStock) {
		t.Fatalf("within the mark the refusal should come from the mark, got %v", err)
	}
	time.Sleep(d - time.Since(marked) + 50*time.Millisecond)
	if _, err := buyOne(inv, "d"); err != nil {
		t.Fatalf("after the mark ran out the unit must sell: %v", err)
	}
}

// Stock returned through any process ends every process's mark long before it expires.
func TestSoldOutMarkClearsOnReturnedStock(t *testing.T) {
	_, rdb := testredis.Start(t)
	a := engine.NewRedis(rdb, engine.Options{SoldOutFor: time.Hour})
	b := engine.NewRedis(rdb, engine.Options{SoldOutFor: time.Hour})
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	mustCreate(t, a, engine.Product{SKU: "S", Stock: 2, Price: 1})
	o1, err := buyOne(a, "u1")
	if err != nil {
		t.Fatal(err)
	}
	o2, err := buyOne(a, "u2")
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range []*engine.Redis{a, b} {
		if _, err := buyOne(inv, "u3"); !errors.Is(err, engine.ErrOutOfStock) {
			t.Fatalf("sold out: %v", err)
		}
	}
	// Cancelled here: this process's mark goes at once.
	if _, err := a.Cancel(context.Background(), engine.CancelRequest{OrderID: o1.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := buyOne(a, "u4"); err != nil {
		t.Fatalf("after a local cancel: %v", err)
	}
	// Marked again, then cancelled through the other process: the message clears it.
	if _, err := buyOne(a, "u5"); !errors.Is(err, engine.ErrOutOfStock) {
		t.Fatalf("sold out again: %v", err)
	}
	if _, err := b.Cancel(context.Background(), engine.CancelRequest{OrderID: o2.ID}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := buyOne(a, "u6")
		if err == nil {
			break
		}
		if !errors.Is(err, engine.ErrOutOfStock) || time.Now().After(deadline) {
			t.Fatalf("the other process's cancel never reached this one's mark: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A keyed retry of a checkout that succeeded gets its order back, mark or no mark.
func TestSoldOutMarkNeverHidesAReplay(t *testing.T) {
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{SoldOutFor: time.Hour})
	t.Cleanup(inv.Close)
	mustCreate(t, inv, engine.Product{SKU: "S", Stock: 1, Price: 1})
	ctx := context.Background()
	req := engine.CheckoutRequest{UserID: "u1", Lines: []engine.Line{{SKU: "S", Quantity: 1}}, IdempotencyKey: "k1"}
	first, err := inv.Checkout(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := buyOne(inv, "u2"); !errors.Is(err, engine.ErrOutOfStock) {
		t.Fatalf("sold out: %v", err)
	}
	if _, err := buyOne(inv, "u3"); !errors.Is(err, engine.ErrOutOfStock) {
		t.Fatalf("marked: %v", err)
	}
	again, err := inv.Checkout(ctx, req)
	if err != nil || !again.Replayed || again.ID != first.ID {
		t.Fatalf("retry during the mark: %+v, %v; want the replay of %s", again, err, first.ID)
	}
}
