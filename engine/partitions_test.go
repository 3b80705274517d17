package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

func partitioned(t *testing.T, n int) (*redis.Client, *engine.Redis) {
	t.Helper()
	m := miniredis.RunT(t)
	c := redis.NewClient(engine.NoRetries(&redis.Options{Addr: m.Addr()}))
	t.Cleanup(func() { c.Close() })
	inv := engine.NewRedis(c, engine.Options{Partitions: n})
	t.Cleanup(inv.Close)
	return c, inv
}

func mustPartition(tb testing.TB, inv *engine.Redis, sku string) int {
	tb.Helper()
	p, err := inv.PartitionOf(context.Background(), sku)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestPartitionsAssignment: SKUs spread over the partitions by hash, a group shares
// one, the stock record lives under its partition's tag, and another process (a fresh
// inventory, no cache) finds each SKU where it was created; one partition is exactly
// the old layout (fs:{0}:).
func TestPartitionsAssignment(t *testing.T) {
	ctx := context.Background()
	c, inv := partitioned(t, 4)
	used := map[int]bool{}
	for i := range 24 {
		sku := fmt.Sprintf("S%d", i)
		mustCreate(t, inv, engine.Product{SKU: sku, Price: 1, Stock: 1})
		p := mustPartition(t, inv, sku)
		used[p] = true
		if n, _ := c.Exists(ctx, inv.PartitionKeys(p).Stock(sku)).Result(); n != 1 {
			t.Fatalf("%s: no stock record in its partition %d", sku, p)
		}
	}
	if len(used) < 3 {
		t.Fatalf("24 SKUs used partitions %v, want them spread", used)
	}
	var group []int
	for i := range 6 {
		sku := fmt.Sprintf("G%d", i)
		mustCreate(t, inv, engine.Product{SKU: sku, Price: 1, Stock: 1, Group: "bundle"})
		group = append(group, mustPartition(t, inv, sku))
	}
	for _, p := range group {
		if p != group[0] {
			t.Fatalf("a group's SKUs got partitions %v, want one", group)
		}
	}
	if _, err := inv.CreateProduct(ctx, engine.Product{SKU: "S1", Price: 1, Currency: "USD", Stock: 1, Group: "other"}); !errors.Is(err, engine.ErrAlreadyExists) {
		t.Fatalf("create S1 again: got %v, want ErrAlreadyExists", err)
	}
	other := engine.NewRedis(c, engine.Options{Partitions: 4})
	t.Cleanup(other.Close)
	for i := range 24 {
		sku := fmt.Sprintf("S%d", i)
		if got, want := mustPartition(t, other, sku), mustPartition(t, inv, sku); got != want {
			t.Fatalf("%s: another process finds partition %d, want %d", sku, got, want)
		}
	}
	skus, err := other.SKUs(ctx)
	if err != nil || len(skus) != 30 {
		t.Fatalf("SKUs over every partition: got %d %v, want 30", len(skus), err)
	}
	one := engine.NewRedis(c, engine.Options{})
	t.Cleanup(one.Close)
	if one.Partitions() != 1 || one.PartitionKeys(0).Stock("X") != "fs:{0}:s:X" || one.OutboxKey() != "fs:{0}:ob" {
		t.Fatalf("one partition: keys %q, outbox %q, want the fs:{0}: layout", one.PartitionKeys(0).Stock("X"), one.OutboxKey())
	}
}

// TestPartitionsOperations: checkout, hold, commit, release, expiry, cancel and
// adjustment work on SKUs of partitions other than 0, each movement lands in its SKU's
// partition's outbox, and the ledger explains the levels.
func TestPartitionsOperations(t *testing.T) {
	ctx := context.Background()
	_, inv := partitioned(t, 4)
	bySKU := map[int]string{}
	for i := 0; len(bySKU) < 4 && i < 200; i++ {
		sku := fmt.Sprintf("P%d", i)
		mustCreate(t, inv, engine.Product{SKU: sku, Price: 10, Stock: 10})
		if p := mustPartition(t, inv, sku); bySKU[p] == "" {
			bySKU[p] = sku
		}
	}
	if len(bySKU) != 4 {
		t.Fatalf("found SKUs in %d partitions, want 4", len(bySKU))
	}
	for p, sku := range bySKU {
		line := []engine.Line{{SKU: sku, Quantity: 1}}
		o, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "k-" + sku, Lines: line})
		if err != nil {
			t.Fatalf("partition %d: checkout: %v", p, err)
		}
		if again, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "k-" + sku, Lines: line}); err != nil || !again.Replayed || again.ID != o.ID {
			t.Fatalf("partition %d: retry: got %+v %v, want the replay of %s", p, again, err, o.ID)
		}
		if _, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID}); err != nil {
			t.Fatalf("partition %d: cancel: %v", p, err)
		}
		h, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: engine.NewID(), TTL: time.Minute, Lines: line})
		if err != nil {
			t.Fatalf("partition %d: reserve: %v", p, err)
		}
		if _, err := inv.Commit(ctx, engine.CommitRequest{HoldID: h.ID, OrderID: engine.OrderIDForHold(h.ID)}); err != nil {
			t.Fatalf("partition %d: commit: %v", p, err)
		}
		h2, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: engine.NewID(), TTL: time.Minute, Lines: line})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inv.Release(ctx, engine.ReleaseRequest{HoldID: h2.ID}); err != nil {
			t.Fatalf("partition %d: release: %v", p, err)
		}
		if _, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: engine.NewID(), TTL: time.Millisecond, Lines: line}); err != nil {
			t.Fatal(err)
		}
		if _, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: sku, Delta: 5, Reason: "restock", Actor: "admin", IdempotencyKey: "a-" + sku}); err != nil {
			t.Fatalf("partition %d: adjust: %v", p, err)
		}
	}
	time.Sleep(5 * time.Millisecond)
	if n, err := inv.ExpireHolds(ctx, 100); err != nil || n != 4 {
		t.Fatalf("expire holds over the partitions: got %d %v, want 4", n, err)
	}
	for _, sku := range bySKU {
		wantLevel(t, inv, sku, 14, 0, 1)
	}
	checkLedger(t, inv)
	for p, sku := range bySKU {
		msgs, err := inv.Client().XRange(ctx, inv.PartitionKeys(p).Outbox(), "-", "+").Result()
		if err != nil || len(msgs) == 0 {
			t.Fatalf("partition %d: outbox %v %v, want %s's movements", p, len(msgs), err, sku)
		}
	}
}

// TestCrossPartitionCartOnOneRedis: a checkout whose lines span partitions is bought
// whole (the cross-partition protocol, here on one Redis); a hold spanning partitions is
// still refused as invalid (ErrCrossPartition) and changes nothing; the order is
// cancelled across its partitions (xcancel.lua), its units back once.
func TestCrossPartitionCartOnOneRedis(t *testing.T) {
	ctx := context.Background()
	_, inv := partitioned(t, 4)
	var a, b string
	for i := 0; b == "" && i < 200; i++ {
		sku := fmt.Sprintf("X%d", i)
		mustCreate(t, inv, engine.Product{SKU: sku, Price: 1, Stock: 3})
		switch {
		case a == "":
			a = sku
		case mustPartition(t, inv, sku) != mustPartition(t, inv, a):
			b = sku
		}
	}
	lines := []engine.Line{{SKU: a, Quantity: 1}, {SKU: b, Quantity: 1}}
	o, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "k", Lines: lines})
	if err != nil || len(o.Items) != 2 {
		t.Fatalf("checkout across partitions: %+v %v, want an order of 2 lines", o, err)
	}
	_, err = inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: engine.NewID(), TTL: time.Minute, Lines: lines})
	if !errors.Is(err, engine.ErrCrossPartition) || !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("hold across partitions: got %v, want ErrCrossPartition (ErrInvalid)", err)
	}
	wantLevel(t, inv, a, 2, 0, 1)
	wantLevel(t, inv, b, 2, 0, 1)
	for i := range 2 {
		c, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID})
		if err != nil || c.Status != engine.OrderCancelled || c.Replayed != (i == 1) {
			t.Fatalf("cancel %d across partitions: %+v %v, want cancelled (replayed the second time)", i, c, err)
		}
		wantLevel(t, inv, a, 3, 0, 0)
		wantLevel(t, inv, b, 3, 0, 0)
	}
	checkLedger(t, inv)
}

// TestCrossPartitionCancelGivesBackCounters: an order spanning partitions whose lines
// count against per-user limits (cross-partition checkouts refuse such SKUs today, so
// the order comes from MongoDB's copy, as CancelRestored writes it back) gives each
// line's units back to the user's counter in its own partition, once: at the home
// partition in the cancel step, at the other in its restore.
func TestCrossPartitionCancelGivesBackCounters(t *testing.T) {
	ctx := context.Background()
	_, inv := partitioned(t, 4)
	var a, b string
	for i := 0; b == "" && i < 200; i++ {
		sku := fmt.Sprintf("L%d", i)
		mustCreate(t, inv, engine.Product{SKU: sku, Price: 7, Stock: 5, MaxPerUser: 3})
		switch {
		case a == "":
			a = sku
		case mustPartition(t, inv, sku) != mustPartition(t, inv, a):
			b = sku
		}
	}
	for i, sku := range []string{a, b} {
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: fmt.Sprint("k", i),
			Lines: []engine.Line{{SKU: sku, Quantity: 2}}})
		if err != nil {
			t.Fatalf("checkout %s: %v", sku, err)
		}
	}
	counter := func(sku string) string {
		p := mustPartition(t, inv, sku)
		v, err := inv.Client().HGet(ctx, inv.PartitionKeys(p).Bought(sku), "u").Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		return v
	}
	if counter(a) != "2" || counter(b) != "2" {
		t.Fatalf("counters %q %q, want 2 and 2", counter(a), counter(b))
	}
	// An order of one unit of each, counted, as MongoDB would have it.
	o := engine.Order{ID: engine.NewID(), UserID: "u", Status: engine.OrderConfirmed, Currency: "USD",
		Items: []engine.Item{{SKU: a, Quantity: 1, UnitPrice: 7}, {SKU: b, Quantity: 1, UnitPrice: 7}}, Total: 14,
		CreatedAt: time.Now().UTC()}
	for i := range 2 {
		c, err := inv.CancelRestored(ctx, o, a+":1:7:L,"+b+":1:7:L")
		if err != nil || c.Status != engine.OrderCancelled || c.Replayed != (i == 1) {
			t.Fatalf("cancel %d: %+v %v, want cancelled (replayed the second time)", i, c, err)
		}
		if counter(a) != "1" || counter(b) != "1" {
			t.Fatalf("cancel %d: counters %q %q, want 1 and 1", i, counter(a), counter(b))
		}
		wantLevel(t, inv, a, 4, 0, 1)
		wantLevel(t, inv, b, 4, 0, 1)
	}
	checkLedger(t, inv)
}
