package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
	"github.com/flashstock/flashstock/internal/testredis"
)

func checkoutWithKey(inv *engine.Redis, sku, user, key string) (engine.Order, error) {
	return inv.Checkout(context.Background(), engine.CheckoutRequest{UserID: user, IdempotencyKey: key,
		Lines: []engine.Line{{SKU: sku, Quantity: 1}}})
}

// TestWaitShortfallIsOutcomeUnknown: on one redis-server with no replica, WaitReplicas 1
// cannot be met: the checkout ran (one unit sold) but is answered ErrOutcomeUnknown,
// and a retry with the same key (here without WAIT) replays the order it made.
func TestWaitShortfallIsOutcomeUnknown(t *testing.T) {
	_, c := testredis.Start(t)
	plain := engine.NewRedis(c, engine.Options{})
	t.Cleanup(plain.Close)
	waiting := engine.NewRedis(c, engine.Options{WaitReplicas: 1, WaitTimeout: 20 * time.Millisecond})
	t.Cleanup(waiting.Close)
	mustCreate(t, plain, engine.Product{SKU: "W", Price: 100, Stock: 5})

	_, err := checkoutWithKey(waiting, "W", "u1", "k1")
	wantErr(t, err, engine.ErrOutcomeUnknown)
	if errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("a shortfall must not read as unavailable (not applied): %v", err)
	}
	wantLevel(t, plain, "W", 4, 0, 1)
	o, err := checkoutWithKey(plain, "W", "u1", "k1")
	if err != nil || !o.Replayed {
		t.Fatalf("retry: got %+v %v, want the replayed order", o, err)
	}
	wantLevel(t, plain, "W", 4, 0, 1)
}

// TestWaitOnCluster: on a cluster with one replica per master, WaitReplicas 1 is met
// (checkout, hold, expiry through RunBatch) and WaitReplicas 2 is not: the checkout ran
// once, is ErrOutcomeUnknown, and its retry replays it.
func TestWaitOnCluster(t *testing.T) {
	c := testcluster.Start(t, rediscluster.Options{})
	rdb := c.Client()
	inv := engine.NewRedis(rdb, engine.Options{Partition: "w1", WaitReplicas: 1, WaitTimeout: time.Second})
	t.Cleanup(inv.Close)
	mustCreate(t, inv, engine.Product{SKU: "CW", Price: 100, Stock: 10})
	if _, err := checkoutWithKey(inv, "CW", "u1", "k1"); err != nil {
		t.Fatalf("checkout with WAIT 1: %v", err)
	}
	ctx := context.Background()
	if _, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "u2", HoldID: engine.NewID(), TTL: time.Millisecond,
		Lines: []engine.Line{{SKU: "CW", Quantity: 2}}}); err != nil {
		t.Fatalf("reserve with WAIT 1: %v", err)
	}
	time.Sleep(5 * time.Millisecond)
	if n, err := inv.ExpireHolds(ctx, 10); err != nil || n != 1 {
		t.Fatalf("expire holds on the cluster: got %d %v, want 1", n, err)
	}
	wantLevel(t, inv, "CW", 9, 0, 1)

	strict := engine.NewRedis(rdb, engine.Options{Partition: "w1", WaitReplicas: 2, WaitTimeout: 20 * time.Millisecond})
	t.Cleanup(strict.Close)
	_, err := checkoutWithKey(strict, "CW", "u3", "k3")
	wantErr(t, err, engine.ErrOutcomeUnknown)
	wantLevel(t, inv, "CW", 8, 0, 2)
	o, err := checkoutWithKey(inv, "CW", "u3", "k3")
	if err != nil || !o.Replayed {
		t.Fatalf("retry: got %+v %v, want the replayed order", o, err)
	}
	wantLevel(t, inv, "CW", 8, 0, 2)
}
