package sync_test

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	stocksync "github.com/flashstock/flashstock/sync"
)

// xcart draws a cart of 1-3 distinct groups, one SKU of each, 1-2 units each: groups
// live in partitions by hash, so the cart spans 1-3 partitions.
func (s *clusterShop) xcart(rng *rand.Rand) []engine.Line {
	n := 1 + rng.IntN(3)
	var lines []engine.Line
	for _, g := range rng.Perm(len(s.groups))[:n] {
		skus := s.groups[g]
		lines = append(lines, engine.Line{SKU: skus[rng.IntN(len(skus))], Quantity: int64(1 + rng.IntN(2))})
	}
	return lines
}

// TestClusterCrossPartitionStorm: 240 buyers on a 3+3 Redis Cluster with 6 partitions
// and WAIT 1 buy carts spanning 1-3 partitions while others restock and cancel (orders
// spanning partitions too: cancel at the primary, restores at the others). Asserted: per SKU available + reserved + sold = received, in Redis and in MongoDB's
// fold, with sold exactly the units of acknowledged orders not cancelled (no partial
// cart), nothing left reserved or in flight once the sweeper ran; every refusal for
// want of stock names lines whose available units (those not held by in-flight
// attempts) were short; a buyer who met stock held only by in-flight attempts past
// CrossWait got ErrStockBusy (counted, retried with the same key, never a refusal);
// every acknowledged order is in exactly one outbox event and in MongoDB once, cancelled
// ones with status cancelled; no cancel is left with restores pending.
func TestClusterCrossPartitionStorm(t *testing.T) {
	ctx := context.Background()
	s := newClusterShop(t, engine.Options{Partitions: 6, WaitReplicas: 1, WaitTimeout: time.Second,
		CrossAttemptTTL: time.Second, CrossWait: 500 * time.Millisecond}, 6, 3, 120)
	sy := stocksync.NewSyncer(s.inv, s.st, stocksync.SyncerOptions{Consumer: "xstorm", Block: 50 * time.Millisecond})
	run(t, sy)

	const buyers, rounds = 240, 12
	var cross atomic.Int64
	took := s.storm(t, buyers, rounds, 11, s.xcart, func(o *engine.Order, lines []engine.Line, cancelled bool) {
		if len(o.Items) != len(lines) {
			t.Errorf("order %s: %d items, want %d", o.ID, len(o.Items), len(lines))
		}
		if cancelled && s.spans(ctx, lines) > 1 {
			cross.Add(1)
		}
	})
	// Attempts abandoned by a WAIT shortfall at the decision are the sweeper's, and so
	// are the restores of cancels whose restore met one.
	waitFor(t, func() bool {
		_, err := s.inv.SweepCrossPartition(ctx)
		for p := range s.inv.Partitions() {
			n, _ := s.inv.Client().ZCard(ctx, s.inv.PartitionKeys(p).XAttempts()).Result()
			m, _ := s.inv.Client().ZCard(ctx, s.inv.PartitionKeys(p).XCancels()).Result()
			if n+m > 0 {
				return false
			}
		}
		return err == nil
	})
	s.checkUnits(t, nil, true)
	spans := map[int]int{}
	for _, lines := range s.orders {
		spans[s.spans(ctx, lines)]++
	}
	for p := range s.inv.Partitions() {
		in, err := s.inv.Client().HGetAll(ctx, s.inv.PartitionKeys(p).XInFlight()).Result()
		if err != nil || len(in) > 0 {
			t.Errorf("partition %d: in flight %v (%v), want none", p, in, err)
		}
	}
	s.checkOrdersOnce(t, sy)
	for _, g := range s.groups {
		for _, sku := range g {
			f, err := s.st.Fold(ctx, sku)
			if err != nil || f.Available+f.Reserved+f.Sold != s.received[sku] || f.Reserved != 0 {
				t.Errorf("%s in MongoDB: %+v %v, want a+r+s = %d, r = 0", sku, f, err, s.received[sku])
			}
		}
	}
	t.Logf("cross-partition storm: %d buyers x %d rounds in %v: %d orders spanning 1/2/3 partitions %d/%d/%d (%d cancelled, %d of them across partitions), %d refused for want of stock, %d busy past the wait (retried)",
		buyers, rounds, took.Round(time.Millisecond), len(s.orders), spans[1], spans[2], spans[3], len(s.canceled), cross.Load(), s.short, s.busy)
	if spans[2]+spans[3] == 0 || spans[1] == 0 || s.short == 0 || cross.Load() == 0 {
		t.Errorf("want single- and cross-partition orders, sell-outs and cross-partition cancels: spans %v, %d refusals, %d cancels across partitions",
			spans, s.short, cross.Load())
	}
}

// spans is how many partitions lines live in.
func (s *clusterShop) spans(ctx context.Context, lines []engine.Line) int {
	ps := map[int]bool{}
	for _, l := range lines {
		p, _ := s.inv.PartitionOf(ctx, l.SKU)
		ps[p] = true
	}
	return len(ps)
}
