package engine_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

func reserve(tb testing.TB, inv *engine.Redis, id string, ttl time.Duration, lines ...engine.Line) engine.Hold {
	tb.Helper()
	h, err := inv.Reserve(context.Background(), engine.ReserveRequest{UserID: "u", HoldID: id, TTL: ttl, Lines: lines})
	if err != nil {
		tb.Fatalf("reserve %s: %v", id, err)
	}
	return h
}

func TestHoldLifecycle(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 7})
		h := reserve(t, inv, "h1", time.Minute, engine.Line{SKU: "A", Quantity: 4})
		if h.Status != engine.HoldActive || h.ExpiresAt.Sub(h.CreatedAt) != time.Minute || h.Items[0].UnitPrice != 7 {
			t.Fatalf("hold: got %+v", h)
		}
		wantLevel(t, inv, "A", 6, 4, 0)

		o, err := inv.Commit(ctx, engine.CommitRequest{HoldID: "h1", OrderID: "o1"})
		if err != nil || o.ID != "o1" || o.HoldID != "h1" || o.Total != 28 || o.Replayed {
			t.Fatalf("commit: got %+v, %v", o, err)
		}
		wantLevel(t, inv, "A", 6, 0, 4)
		again, err := inv.Commit(ctx, engine.CommitRequest{HoldID: "h1", OrderID: "o2"})
		if err != nil || again.ID != "o1" || !again.Replayed {
			t.Fatalf("second commit: got %+v, %v; want o1 replayed", again, err)
		}
		_, err = inv.Release(ctx, engine.ReleaseRequest{HoldID: "h1"})
		wantErr(t, err, engine.ErrHoldCommitted)
		got, err := inv.Hold(ctx, "h1")
		if err != nil || got.Status != engine.HoldCommitted || got.OrderID != "o1" {
			t.Fatalf("read committed hold: %+v, %v", got, err)
		}

		reserve(t, inv, "h2", time.Minute, engine.Line{SKU: "A", Quantity: 6})
		r, err := inv.Release(ctx, engine.ReleaseRequest{HoldID: "h2"})
		if err != nil || r.Status != engine.HoldReleased || r.Replayed {
			t.Fatalf("release: %+v, %v", r, err)
		}
		r, err = inv.Release(ctx, engine.ReleaseRequest{HoldID: "h2"})
		if err != nil || !r.Replayed {
			t.Fatalf("second release: %+v, %v", r, err)
		}
		_, err = inv.Commit(ctx, engine.CommitRequest{HoldID: "h2", OrderID: "o3"})
		wantErr(t, err, engine.ErrHoldReleased)
		wantLevel(t, inv, "A", 6, 0, 4)

		_, err = inv.Commit(ctx, engine.CommitRequest{HoldID: "nope", OrderID: "o4"})
		wantErr(t, err, engine.ErrNotFound)
		_, err = inv.Release(ctx, engine.ReleaseRequest{HoldID: "nope"})
		wantErr(t, err, engine.ErrNotFound)
		checkLedger(t, inv)
	})
}

func TestExpiredHoldCannotBeCommittedEvenBeforeTheSweep(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 5, Price: 1, MaxPerUser: 3})
		h := reserve(t, inv, "h1", 20*time.Millisecond, engine.Line{SKU: "A", Quantity: 3})
		time.Sleep(time.Until(h.ExpiresAt) + 5*time.Millisecond)
		_, err := inv.Commit(ctx, engine.CommitRequest{HoldID: "h1", OrderID: "o1"})
		wantErr(t, err, engine.ErrHoldExpired)
		wantLevel(t, inv, "A", 5, 0, 0)
		_, err = inv.Commit(ctx, engine.CommitRequest{HoldID: "h1", OrderID: "o1"})
		wantErr(t, err, engine.ErrHoldExpired)
		_, err = inv.Release(ctx, engine.ReleaseRequest{HoldID: "h1"})
		wantErr(t, err, engine.ErrHoldExpired)
		if n, err := inv.ExpireHolds(ctx, 10); err != nil || n != 0 {
			t.Fatalf("sweep after expiry on commit: expired %d, %v; want 0", n, err)
		}
		// The per-user allowance came back with the units.
		if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "o2", Lines: []engine.Line{{SKU: "A", Quantity: 3}}}); err != nil {
			t.Fatalf("checkout after expiry: %v", err)
		}
		checkLedger(t, inv)
	})
}

func TestExpireHoldsSweepsInBoundedBatches(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 100, Price: 1})
		mustCreate(t, inv, engine.Product{SKU: "B", Stock: 100, Price: 1})
		var last engine.Hold
		for i := range 25 {
			last = reserve(t, inv, "short-"+string(rune('a'+i)), 10*time.Millisecond,
				engine.Line{SKU: "A", Quantity: 2}, engine.Line{SKU: "B", Quantity: 1})
		}
		reserve(t, inv, "long", time.Hour, engine.Line{SKU: "A", Quantity: 1})
		wantLevel(t, inv, "A", 49, 51, 0)
		time.Sleep(time.Until(last.ExpiresAt) + 5*time.Millisecond)

		total := 0
		for _, want := range []int{10, 10, 5, 0} {
			n, err := inv.ExpireHolds(ctx, 10)
			if err != nil || n != want {
				t.Fatalf("sweep: expired %d, %v; want %d", n, err, want)
			}
			total += n
		}
		wantLevel(t, inv, "A", 99, 1, 0)
		wantLevel(t, inv, "B", 100, 0, 0)
		h, err := inv.Hold(ctx, "short-a")
		if err != nil || h.Status != engine.HoldExpired {
			t.Fatalf("swept hold: %+v, %v", h, err)
		}
		if h, _ := inv.Hold(ctx, "long"); h.Status != engine.HoldActive {
			t.Fatalf("the unexpired hold: got %s, want active", h.Status)
		}
		checkLedger(t, inv)
	})
}

func TestReserveIdempotencyReturnsTheOriginalHold(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 1})
		req := engine.ReserveRequest{UserID: "u", IdempotencyKey: "k", HoldID: "h1", TTL: time.Minute, Lines: []engine.Line{{SKU: "A", Quantity: 2}}}
		first, err := inv.Reserve(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		req.HoldID = "h2"
		h, err := inv.Reserve(ctx, req)
		if err != nil || !h.Replayed || h.ID != first.ID || h.ExpiresAt != first.ExpiresAt {
			t.Fatalf("replay: %+v, %v", h, err)
		}
		req.TTL = 2 * time.Minute
		_, err = inv.Reserve(ctx, req)
		wantErr(t, err, engine.ErrIdempotencyKeyReused)
		wantLevel(t, inv, "A", 8, 2, 0)
	})
}

func TestCancelReturnsStockExactlyOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 5, Price: 3})
		mustCreate(t, inv, engine.Product{SKU: "B", Stock: 5, Price: 4, MaxPerUser: 2})
		if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "o1", Lines: []engine.Line{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 2}}}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			o, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: "o1"})
			if err != nil || o.Status != engine.OrderCancelled || o.Replayed != (i > 0) {
				t.Fatalf("cancel %d: %+v, %v", i, o, err)
			}
		}
		wantLevel(t, inv, "A", 5, 0, 0)
		wantLevel(t, inv, "B", 5, 0, 0)
		if o, _ := inv.Order(ctx, "o1"); o.Status != engine.OrderCancelled {
			t.Fatalf("order status: got %s", o.Status)
		}
		// A committed hold's order cancels the same way.
		reserve(t, inv, "h", time.Minute, engine.Line{SKU: "B", Quantity: 2})
		if _, err := inv.Commit(ctx, engine.CommitRequest{HoldID: "h", OrderID: "o2"}); err != nil {
			t.Fatal(err)
		}
		if _, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: "o2"}); err != nil {
			t.Fatal(err)
		}
		wantLevel(t, inv, "B", 5, 0, 0)
		_, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: "missing"})
		wantErr(t, err, engine.ErrNotFound)
		checkLedger(t, inv)
	})
}

func TestAdjustAndCompareAndSet(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 5, Price: 1})
		lv, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 10, Reason: "restock", Actor: "admin", IdempotencyKey: "r1"})
		if err != nil || lv.Available != 15 || lv.Version != 2 {
			t.Fatalf("restock: %+v, %v", lv, err)
		}
		lv, err = inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 10, Reason: "restock", Actor: "admin", IdempotencyKey: "r1"})
		if err != nil || !lv.Replayed || lv.Available != 15 {
			t.Fatalf("replayed restock: %+v, %v", lv, err)
		}
		_, err = inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 11, Reason: "restock", Actor: "admin", IdempotencyKey: "r1"})
		wantErr(t, err, engine.ErrIdempotencyKeyReused)
		_, err = inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: -16, Reason: "damaged"})
		wantErr(t, err, engine.ErrInsufficientStock)
		_, err = inv.Adjust(ctx, engine.AdjustRequest{SKU: "NOPE", Delta: 1})
		wantErr(t, err, engine.ErrNotFound)

		_, err = inv.SetLevel(ctx, engine.SetRequest{SKU: "A", Available: 3, ExpectedVersion: 1})
		wantErr(t, err, engine.ErrVersionConflict)
		lv, err = inv.SetLevel(ctx, engine.SetRequest{SKU: "A", Available: 3, ExpectedVersion: 2, Reason: "count"})
		if err != nil || lv.Available != 3 || lv.Version != 3 {
			t.Fatalf("set: %+v, %v", lv, err)
		}
		_, err = inv.SetLevel(ctx, engine.SetRequest{SKU: "A", Available: 9, ExpectedVersion: 2})
		wantErr(t, err, engine.ErrVersionConflict)
		wantLevel(t, inv, "A", 3, 0, 0)

		// Someone writes Redis by hand: available jumps by 5 with no movement.
		if err := inv.Client().HIncrBy(ctx, "fs:{0}:s:A", "a", 5).Err(); err != nil {
			t.Fatal(err)
		}
		lv, err = inv.Repair(ctx, "A", 3, -5, 0, 0, "drift")
		if err != nil || lv.Available != 3 || lv.Version != 5 {
			t.Fatalf("repair: %+v, %v", lv, err)
		}
		_, err = inv.Repair(ctx, "A", 3, -5, 0, 0, "drift")
		wantErr(t, err, engine.ErrVersionConflict)

		evs := checkLedger(t, inv)
		kinds := ""
		for _, e := range evs {
			kinds += e.Kind + " "
		}
		if kinds != "create adjust set drift repair " {
			t.Fatalf("outbox kinds: got %q", kinds)
		}
		if evs[1].Reason != "restock" || evs[1].Actor != "admin" || evs[2].Movements[0].Available != -12 {
			t.Fatalf("adjust/set events: %+v %+v", evs[1], evs[2])
		}
	})
}

// Commit, release and cancel act only on the owner's records when given an owner: to
// another user, someone else's hold or order does not exist.
func TestSettleChecksTheOwner(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 5, Price: 2})
		reserve(t, inv, "h1", time.Minute, engine.Line{SKU: "A", Quantity: 2})
		reserve(t, inv, "h2", time.Minute, engine.Line{SKU: "A", Quantity: 1})
		_, err := inv.Commit(ctx, engine.CommitRequest{HoldID: "h1", OrderID: "o1", Owner: "mallory"})
		wantErr(t, err, engine.ErrNotFound)
		_, err = inv.Release(ctx, engine.ReleaseRequest{HoldID: "h2", Owner: "mallory"})
		wantErr(t, err, engine.ErrNotFound)
		wantLevel(t, inv, "A", 2, 3, 0)
		o, err := inv.Commit(ctx, engine.CommitRequest{HoldID: "h1", OrderID: "o1", Owner: "u"})
		if err != nil || o.Total != 4 {
			t.Fatalf("commit by its owner: %+v, %v", o, err)
		}
		if r, err := inv.Release(ctx, engine.ReleaseRequest{HoldID: "h2", Owner: "u"}); err != nil || r.UserID != "u" || len(r.Items) != 1 || r.Status != engine.HoldReleased {
			t.Fatalf("release by its owner: %+v, %v", r, err)
		}
		_, err = inv.Cancel(ctx, engine.CancelRequest{OrderID: "o1", Owner: "mallory"})
		wantErr(t, err, engine.ErrNotFound)
		wantLevel(t, inv, "A", 3, 0, 2)
		if c, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: "o1", Owner: "u"}); err != nil || c.Status != engine.OrderCancelled {
			t.Fatalf("cancel by its owner: %+v, %v", c, err)
		}
		wantLevel(t, inv, "A", 5, 0, 0)
		checkLedger(t, inv)
	})
}

// LoadScripts refills a script cache that Redis lost (SCRIPT FLUSH, or a restart).
func TestLoadScriptsRefillsTheCache(t *testing.T) {
	inv := realRedis(t)
	ctx := context.Background()
	if err := inv.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inv.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := inv.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := inv.Client().Info(ctx, "memory").Result()
	want := "number_of_cached_scripts:" + strconv.Itoa(engine.ScriptCount())
	if err != nil || !strings.Contains(n, want) {
		t.Fatalf("cached scripts after reload: want %s: %v\n%s", want, err, n)
	}
}

// A commit counts against the rate limit of whoever asks (RateUser): an administrator
// committing customers' holds uses the administrator's allowance, not the customers'.
func TestCommitCountsAgainstWhoAsks(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 5, Price: 2})
		reserve(t, inv, "h1", time.Minute, engine.Line{SKU: "A", Quantity: 1})
		reserve(t, inv, "h2", time.Minute, engine.Line{SKU: "A", Quantity: 1})
		admin := engine.CommitRequest{OrderID: engine.NewID(), RatePerMinute: 1, RateUser: "root"}
		admin.HoldID = "h1"
		if _, err := inv.Commit(ctx, admin); err != nil {
			t.Fatal(err)
		}
		admin.HoldID, admin.OrderID = "h2", engine.NewID()
		var re *engine.RateError
		if _, err := inv.Commit(ctx, admin); !errors.As(err, &re) {
			t.Fatalf("the administrator's second commit in a minute at a limit of 1: got %v, want a rate error", err)
		}
		// The hold's owner ("u") still has their own allowance.
		if _, err := inv.Commit(ctx, engine.CommitRequest{HoldID: "h2", OrderID: engine.NewID(), Owner: "u", RatePerMinute: 1}); err != nil {
			t.Fatalf("the owner's own commit: %v", err)
		}
	})
}
