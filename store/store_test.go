package store_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/store"
)

func TestMain(m *testing.M) { os.Exit(testmongo.Main(m)) }

func newStore(t *testing.T) *store.Store {
	t.Helper()
	s := store.New(testmongo.Database(t))
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// ledgerEvents builds n sale events for one SKU after a creation with stock.
func ledgerEvents(sku string, stock int64, n int) []engine.Event {
	at := time.Now().UTC().Truncate(time.Millisecond)
	evs := []engine.Event{{Kind: engine.EventCreate, SKU: sku, At: at,
		Movements: []engine.Movement{{SKU: sku, Seq: 1, Kind: "create", Available: stock, At: at}}}}
	for i := range n {
		id := sku + "-o" + string(rune('a'+i))
		evs = append(evs, engine.Event{Kind: engine.EventOrder, ID: id, UserID: "u", At: at, Currency: "USD",
			Items:     []engine.Item{{SKU: sku, Quantity: 1, UnitPrice: 250}},
			Movements: []engine.Movement{{SKU: sku, Seq: int64(2 + i), Kind: "sale", Available: -1, Sold: 1, Ref: id, At: at}}})
	}
	return evs
}

func TestApplyEventsIsIdempotent(t *testing.T) {
	s, ctx := newStore(t), context.Background()
	evs := ledgerEvents("A", 10, 3)
	evs = append(evs, engine.Event{Kind: engine.EventCancel, ID: "A-oa", UserID: "u", At: time.Now(),
		Movements: []engine.Movement{{SKU: "A", Seq: 5, Kind: "cancel", Available: 1, Sold: -1, Ref: "A-oa"}}})
	for range 3 {
		if err := s.ApplyEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.CountOrders(ctx, "")
	if err != nil || n != 3 {
		t.Fatalf("orders: got %d, %v; want 3", n, err)
	}
	o, err := s.Order(ctx, "A-oa")
	if err != nil || o.Status != engine.OrderCancelled || o.Total != 250 || o.Items[0].UnitPrice != 250 {
		t.Fatalf("cancelled order: %+v, %v", o, err)
	}
	f, err := s.Fold(ctx, "A")
	if err != nil || f != (store.Fold{SKU: "A", Seq: 5, Available: 8, Sold: 2}) {
		t.Fatalf("fold: got %+v, %v", f, err)
	}
	at3, err := s.FoldAt(ctx, "A", 3)
	if err != nil || at3 != (store.Fold{SKU: "A", Seq: 3, Available: 8, Sold: 2}) {
		t.Fatalf("fold at 3: got %+v, %v", at3, err)
	}
	_, err = s.FoldAt(ctx, "A", 9)
	if !errors.Is(err, store.ErrBehind) {
		t.Fatalf("fold at 9: got %v, want ErrBehind", err)
	}
	_, err = s.Order(ctx, "nope")
	if !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("missing order: got %v", err)
	}
}

// A cancellation persisted before its order (two syncers) still ends cancelled.
func TestCancelBeforeOrderEndsCancelled(t *testing.T) {
	s, ctx := newStore(t), context.Background()
	evs := ledgerEvents("B", 5, 1)
	cancel := engine.Event{Kind: engine.EventCancel, ID: "B-oa", UserID: "u", At: time.Now(),
		Movements: []engine.Movement{{SKU: "B", Seq: 3, Kind: "cancel", Available: 1, Sold: -1}}}
	for _, batch := range [][]engine.Event{{cancel}, evs} {
		if err := s.ApplyEvents(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	o, err := s.Order(ctx, "B-oa")
	if err != nil || o.Status != engine.OrderCancelled || o.UserID != "u" || len(o.Items) != 1 {
		t.Fatalf("order: %+v, %v", o, err)
	}
	if f, _ := s.Fold(ctx, "B"); f.Seq != 3 || f.Available != 5 || f.Sold != 0 {
		t.Fatalf("fold: %+v", f)
	}
}

// Batches applied concurrently and out of order fold to the same levels exactly once.
func TestConcurrentApplyFoldsEachMovementOnce(t *testing.T) {
	s, ctx := newStore(t), context.Background()
	evs := ledgerEvents("C", 100, 20)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			// Each worker applies every event, in its own order, in small batches.
			for i := range len(evs) {
				j := (i*5 + w*3) % len(evs) // 5 is coprime with len(evs): a permutation
				if err := s.ApplyEvents(ctx, evs[j:j+1]); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	f, err := s.Fold(ctx, "C")
	if err != nil || f != (store.Fold{SKU: "C", Seq: 21, Available: 80, Sold: 20}) {
		t.Fatalf("fold: got %+v, %v", f, err)
	}
}

func TestUsersAreUniqueByEmail(t *testing.T) {
	s, ctx := newStore(t), context.Background()
	if err := s.CreateUser(ctx, store.User{Email: "A@example.com", ID: "1", Role: "customer"}); err != nil {
		t.Fatal(err)
	}
	err := s.CreateUser(ctx, store.User{Email: " a@EXAMPLE.com", ID: "2", Role: "customer"})
	if !errors.Is(err, engine.ErrAlreadyExists) {
		t.Fatalf("duplicate email: got %v", err)
	}
	u, err := s.UserByEmail(ctx, "a@example.com")
	if err != nil || u.ID != "1" {
		t.Fatalf("lookup: %+v, %v", u, err)
	}
}
