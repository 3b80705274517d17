package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	gosync "sync"
	"testing"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
)

// cancelEvents counts, per kind, the outbox events about order id in each partition.
func cancelEvents(t *testing.T, s *xShop, id string) map[string]map[int]int {
	t.Helper()
	out := map[string]map[int]int{}
	for p, evs := range partitionEvents(t, s.inv) {
		for _, e := range evs {
			if e.ID != id || (e.Kind != engine.EventCancel && e.Kind != engine.EventXRestore) {
				continue
			}
			if out[e.Kind] == nil {
				out[e.Kind] = map[int]int{}
			}
			out[e.Kind][p]++
			for _, mv := range e.Movements {
				if mv.Available <= 0 || mv.Sold != -mv.Available || mv.Reserved != 0 || mv.Ref != id {
					t.Errorf("%s event of %s: movement %+v, want sold -> available", e.Kind, id, mv)
				}
			}
		}
	}
	return out
}

// wantPendingCancels checks how many cross-partition cancels wait for restores, over
// partitions.
func wantPendingCancels(t *testing.T, s *xShop, want int64) {
	t.Helper()
	var n int64
	for p := range s.inv.Partitions() {
		c, err := s.inv.Client().ZCard(context.Background(), s.inv.PartitionKeys(p).XCancels()).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += c
	}
	if n != want {
		t.Errorf("%d cancels pending, want %d", n, want)
	}
}

// wantCancelEvents checks one cancel event at the order's primary (the lowest of its
// partitions) and one xrestore event at each of its other partitions.
func wantCancelEvents(t *testing.T, s *xShop, id string, parts []int) {
	t.Helper()
	ev := cancelEvents(t, s, id)
	primary := slices.Min(parts)
	if len(ev[engine.EventCancel]) != 1 || ev[engine.EventCancel][primary] != 1 {
		t.Errorf("order %s: cancel events %v, want one in partition %d", id, ev[engine.EventCancel], primary)
	}
	if len(ev[engine.EventXRestore]) != len(parts)-1 {
		t.Errorf("order %s: xrestore events %v, want one in each of %v but %d", id, ev[engine.EventXRestore], parts, primary)
	}
	for _, p := range parts {
		if p != primary && ev[engine.EventXRestore][p] != 1 {
			t.Errorf("order %s: xrestore events %v, want one in partition %d", id, ev[engine.EventXRestore], p)
		}
	}
}

// at is the index in s.skus of the SKU in the lowest (min) or highest partition of the
// first three.
func (s *xShop) at(lowest bool) int {
	i := 0
	for j := 1; j < 3; j++ {
		if (s.parts[j] < s.parts[i]) == lowest {
			i = j
		}
	}
	return i
}

// TestCrossPartitionCancel: orders over two and three partitions are cancelled with
// every unit back exactly once (a repeat is a replay that changes nothing); a
// coordinator stopped after the primary's step, or midway through the restores, is
// repaired by the sweeper (or at once by a repeated cancel); many concurrent cancels of
// one order return its units once. One cluster, one shop per subtest.
func TestCrossPartitionCancel(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	buy := func(t *testing.T, s *xShop, user, key string, n int) engine.Order {
		t.Helper()
		var lines []engine.Line
		for i := range n {
			lines = append(lines, engine.Line{SKU: s.skus[i], Quantity: int64(i + 1)})
		}
		o, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: user, IdempotencyKey: key, Lines: lines})
		if err != nil || len(o.Items) != n {
			t.Fatalf("checkout over %d partitions: %+v %v", n, o, err)
		}
		return o
	}
	sold := func(orders ...engine.Order) map[string]int64 {
		out := map[string]int64{}
		for _, o := range orders {
			for _, it := range o.Items {
				out[it.SKU] += it.Quantity
			}
		}
		return out
	}

	t.Run("two and three partitions", func(t *testing.T) {
		s := newXShop(t, c, "xq", 3, 10)
		two, three, kept := buy(t, s, "u1", "k2", 2), buy(t, s, "u1", "k3", 3), buy(t, s, "u2", "k4", 3)
		s.settled(t, sold(two, three, kept))
		if _, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: two.ID, Owner: "u2"}); !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("another user's cancel: %v, want ErrNotFound", err)
		}
		s.settled(t, sold(two, three, kept))
		for _, o := range []engine.Order{two, three} {
			got, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID, Owner: "u1"})
			if err != nil || got.Status != engine.OrderCancelled || got.Replayed || len(got.Items) != len(o.Items) {
				t.Fatalf("cancel %s: %+v %v, want cancelled", o.ID, got, err)
			}
		}
		s.settled(t, sold(kept))
		for _, o := range []engine.Order{two, three} {
			got, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID})
			if err != nil || got.Status != engine.OrderCancelled || !got.Replayed {
				t.Fatalf("cancel %s again: %+v %v, want replayed", o.ID, got, err)
			}
			if r, err := s.inv.Order(ctx, o.ID); err != nil || r.Status != engine.OrderCancelled {
				t.Errorf("order %s: %+v %v, want cancelled", o.ID, r, err)
			}
		}
		s.settled(t, sold(kept))
		if n := sweepAfterTTL(t, s.inv); n != 0 {
			t.Errorf("sweeper made %d restores, want none", n)
		}
		s.settled(t, sold(kept))
		wantCancelEvents(t, s, two.ID, s.parts[:2])
		wantCancelEvents(t, s, three.ID, s.parts)
		wantPendingCancels(t, s, 0)
	})

	t.Run("crashes", func(t *testing.T) {
		s := newXShop(t, c, "xr", 3, 10)
		a, b, m := buy(t, s, "u", "a", 3), buy(t, s, "u", "b", 2), buy(t, s, "u", "m", 3)
		all := sold(a, b, m)

		// Stopped after the primary's step: the primary's units are back, the others
		// only once the sweeper re-drives the restores (not before they are due).
		s.crashNext("after-cancel")
		if _, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: a.ID}); !errors.Is(err, engine.ErrOutcomeUnknown) {
			t.Fatalf("stopped coordinator: %v, want ErrOutcomeUnknown", err)
		}
		lv, pi := s.levels(t), s.at(true)
		for i, sku := range s.skus {
			if want := all[sku] - int64(i+1)*b2i(i == pi); lv[sku].Sold != want {
				t.Errorf("after the primary's step: %s sold %d, want %d", sku, lv[sku].Sold, want)
			}
		}
		wantPendingCancels(t, s, 1)
		if n, err := s.inv.SweepCrossPartition(ctx); err != nil || n != 0 {
			t.Errorf("sweep before the restores are due: %d %v, want none", n, err)
		}
		if n := sweepAfterTTL(t, s.inv); n != 2 {
			t.Errorf("sweeper made %d restores, want 2", n)
		}
		s.settled(t, sold(b, m))
		if n := sweepAfterTTL(t, s.inv); n != 0 {
			t.Errorf("second sweep made %d restores, want none", n)
		}
		if o, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: a.ID}); err != nil || !o.Replayed {
			t.Errorf("retry: %+v %v, want replayed", o, err)
		}
		s.settled(t, sold(b, m))
		wantCancelEvents(t, s, a.ID, s.parts)

		// Stopped after the primary's step, then cancelled again: the replay finishes the
		// restores at once.
		s.crashNext("after-cancel")
		if _, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: b.ID}); !errors.Is(err, engine.ErrOutcomeUnknown) {
			t.Fatalf("stopped coordinator: %v, want ErrOutcomeUnknown", err)
		}
		if o, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: b.ID}); err != nil || !o.Replayed {
			t.Fatalf("retry: %+v %v, want replayed", o, err)
		}
		s.settled(t, sold(m))
		wantCancelEvents(t, s, b.ID, s.parts[:2])

		// Midway through the restores: the cancel is acknowledged (decided), the first
		// secondary restored, the other by the sweeper.
		s.crashNext("mid-restore")
		if o, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: m.ID}); err != nil || o.Status != engine.OrderCancelled {
			t.Fatalf("cancel stopped mid-restore: %+v %v, want cancelled", o, err)
		}
		if n := sweepAfterTTL(t, s.inv); n != 1 {
			t.Errorf("sweeper made %d restores, want 1", n)
		}
		s.settled(t, nil)
		wantCancelEvents(t, s, m.ID, s.parts)
		wantPendingCancels(t, s, 0)
	})

	t.Run("before the checkout's commit", func(t *testing.T) {
		s := newXShop(t, c, "xu", 3, 10)
		// The checkout is acknowledged with its last secondary still reserved (its
		// commit is the sweeper's); the cancel restores that line only once committed.
		s.crashNext("mid-commit")
		o := buy(t, s, "u", "m", 3)
		if o, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID}); err != nil || o.Status != engine.OrderCancelled {
			t.Fatalf("cancel: %+v %v, want cancelled", o, err)
		}
		held := s.at(false) // the last secondary, whose commit did not run
		q := int64(held + 1)
		if lv := s.levels(t)[s.skus[held]]; lv.Reserved != q || lv.Sold != 0 || lv.Available != 10-q {
			t.Errorf("%s before its commit: %+v, want %d reserved, none sold", s.skus[held], lv, q)
		}
		wantPendingCancels(t, s, 1)
		if n := sweepAfterTTL(t, s.inv); n != 2 {
			t.Errorf("sweeper resolved and restored %d, want 2 (the commit, then the restore)", n)
		}
		s.settled(t, nil)
		wantCancelEvents(t, s, o.ID, s.parts)
		wantPendingCancels(t, s, 0)
	})

	t.Run("concurrent", func(t *testing.T) {
		s := newXShop(t, c, "xs", 3, 10)
		var orders []engine.Order
		for i := range 3 {
			orders = append(orders, buy(t, s, "u", fmt.Sprint("c", i), 3))
		}
		s.settled(t, sold(orders...))
		var wg gosync.WaitGroup
		var mu gosync.Mutex
		fresh := map[string]int{}
		for g := range 24 {
			wg.Go(func() {
				o := orders[g%len(orders)]
				got, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID})
				if err != nil || got.Status != engine.OrderCancelled {
					t.Errorf("cancel %s: %+v %v", o.ID, got, err)
					return
				}
				if !got.Replayed {
					mu.Lock()
					fresh[o.ID]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, o := range orders {
			if fresh[o.ID] != 1 {
				t.Errorf("order %s: %d cancels not replayed, want 1", o.ID, fresh[o.ID])
			}
			wantCancelEvents(t, s, o.ID, s.parts)
		}
		s.settled(t, nil)
		if n := sweepAfterTTL(t, s.inv); n != 0 {
			t.Errorf("sweeper made %d restores, want none", n)
		}
		s.settled(t, nil)
		wantPendingCancels(t, s, 0)
	})
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
