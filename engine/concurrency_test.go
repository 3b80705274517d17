package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// TestConcurrentMixKeepsTheInvariants runs 240 goroutines against one hot SKU on a real
// redis-server, mixing every operation that moves stock, then checks invariant 1 (no
// oversell, levels add up), that sold equals the confirmed order units in the outbox, and
// invariant 3: every refusal saw fewer units than it asked for.
func TestConcurrentMixKeepsTheInvariants(t *testing.T) {
	inv := realRedis(t)
	ctx := context.Background()
	const (
		workers = 240
		opsEach = 40
		initial = 300
		maxTTL  = 80 * time.Millisecond
	)
	mustCreate(t, inv, engine.Product{SKU: "HOT", Stock: initial, Price: 100})
	mustCreate(t, inv, engine.Product{SKU: "SIDE", Stock: 1_000_000, Price: 1})

	var (
		received   atomic.Int64 // initial + accepted adjustments
		refusals   atomic.Int64
		successes  atomic.Int64
		falseFails atomic.Int64
		errMu      sync.Mutex
		unexpected []error
	)
	received.Store(initial)
	fail := func(err error) {
		errMu.Lock()
		unexpected = append(unexpected, err)
		errMu.Unlock()
	}
	refused := func(err error) bool {
		var se *engine.StockError
		if !errors.As(err, &se) {
			return false
		}
		refusals.Add(1)
		for _, s := range se.Short {
			if s.Available >= s.Requested {
				falseFails.Add(1)
			}
		}
		return true
	}

	sweepDone := make(chan struct{})
	stopSweep := make(chan struct{})
	go func() {
		defer close(sweepDone)
		for {
			select {
			case <-stopSweep:
				return
			default:
			}
			if _, err := inv.ExpireHolds(ctx, 50); err != nil {
				fail(fmt.Errorf("sweep: %w", err))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			user := fmt.Sprintf("user-%d", w)
			var mine []string
			for i := range opsEach {
				id := fmt.Sprintf("w%d-%d", w, i)
				switch op := rng.IntN(10); {
				case op < 4: // checkout, sometimes a two-line cart, sometimes retried with its key
					lines := []engine.Line{{SKU: "HOT", Quantity: int64(1 + rng.IntN(3))}}
					if op == 0 {
						lines = append(lines, engine.Line{SKU: "SIDE", Quantity: 1})
					}
					req := engine.CheckoutRequest{UserID: user, Lines: lines, OrderID: id, IdempotencyKey: "k-" + id}
					o, err := inv.Checkout(ctx, req)
					switch {
					case err == nil:
						successes.Add(1)
						mine = append(mine, o.ID)
						if op == 1 {
							req.OrderID = id + "-retry"
							if again, err := inv.Checkout(ctx, req); err != nil || again.ID != o.ID || !again.Replayed {
								fail(fmt.Errorf("replay of %s: got %q, %v", o.ID, again.ID, err))
							}
						}
					case !refused(err):
						fail(err)
					}
				case op < 7: // hold, then commit, release or let it expire
					ttl := time.Duration(5+rng.IntN(int(maxTTL/time.Millisecond)-5)) * time.Millisecond
					_, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: user, Lines: []engine.Line{{SKU: "HOT", Quantity: int64(1 + rng.IntN(2))}}, TTL: ttl, HoldID: id})
					if err != nil {
						if !refused(err) {
							fail(err)
						}
						continue
					}
					successes.Add(1)
					time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
					switch rng.IntN(3) {
					case 0:
						o, err := inv.Commit(ctx, engine.CommitRequest{HoldID: id, OrderID: id + "-o"})
						if err == nil {
							mine = append(mine, o.ID)
						} else if !errors.Is(err, engine.ErrHoldExpired) {
							fail(err)
						}
					case 1:
						if _, err := inv.Release(ctx, engine.ReleaseRequest{HoldID: id}); err != nil && !errors.Is(err, engine.ErrHoldExpired) {
							fail(err)
						}
					}
				case op < 8: // cancel one of my orders (sometimes twice)
					if len(mine) == 0 {
						continue
					}
					oid := mine[rng.IntN(len(mine))]
					if _, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: oid}); err != nil {
						fail(err)
					}
				default: // restock or remove units
					delta := int64(3)
					if op == 9 {
						delta = -2
					}
					_, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: "HOT", Delta: delta, Reason: "test", Actor: user})
					switch {
					case err == nil:
						received.Add(delta)
					case !errors.Is(err, engine.ErrInsufficientStock):
						fail(err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stopSweep)
	<-sweepDone
	// Every hold still active has expired by now; one more sweep must bring reserved to 0.
	time.Sleep(maxTTL)
	for {
		n, err := inv.ExpireHolds(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if len(unexpected) > 0 {
		t.Fatalf("%d unexpected errors, first: %v", len(unexpected), unexpected[0])
	}
	if n := falseFails.Load(); n > 0 {
		t.Fatalf("%d refusals reported enough stock available: contention caused a refusal", n)
	}

	lv := mustLevel(t, inv, "HOT")
	if lv.Available < 0 || lv.Reserved != 0 || lv.Sold < 0 {
		t.Fatalf("levels after all holds ended: %+v", lv)
	}
	if sum := lv.Available + lv.Reserved + lv.Sold; sum != received.Load() {
		t.Fatalf("available+reserved+sold = %d, want total received %d", sum, received.Load())
	}

	// sold must equal the units of confirmed, uncancelled orders in the outbox.
	units := map[string]int64{}
	for _, e := range checkLedger(t, inv) {
		switch e.Kind {
		case engine.EventOrder:
			for _, it := range e.Items {
				if it.SKU == "HOT" {
					units[e.ID] += it.Quantity
				}
			}
		case engine.EventCancel:
			delete(units, e.ID)
		}
	}
	var sold int64
	for _, u := range units {
		sold += u
	}
	if sold != lv.Sold {
		t.Fatalf("sold %d, confirmed order units in the outbox %d", lv.Sold, sold)
	}
	if successes.Load() == 0 || refusals.Load() == 0 {
		t.Fatalf("the mix did not exercise both paths: %d successes, %d refusals", successes.Load(), refusals.Load())
	}
	t.Logf("%d successes, %d honest refusals, final %+v", successes.Load(), refusals.Load(), lv)
}

// TestHotSKUSelloutSellsExactlyTheStock: 256 buyers race for 100 units; exactly 100 are
// sold and every buyer who lost saw zero (or too few) units left.
func TestHotSKUSelloutSellsExactlyTheStock(t *testing.T) {
	inv := realRedis(t)
	ctx := context.Background()
	mustCreate(t, inv, engine.Product{SKU: "DROP", Stock: 100, Price: 1})
	var won, lost atomic.Int64
	var wg sync.WaitGroup
	for i := range 256 {
		wg.Go(func() {
			_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: fmt.Sprint("b", i), OrderID: fmt.Sprint("o", i), Lines: []engine.Line{{SKU: "DROP", Quantity: 1}}})
			var se *engine.StockError
			switch {
			case err == nil:
				won.Add(1)
			case errors.As(err, &se) && se.Short[0].Available == 0:
				lost.Add(1)
			default:
				t.Errorf("buyer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 100 || lost.Load() != 156 {
		t.Fatalf("got %d sold and %d refused, want 100 and 156", won.Load(), lost.Load())
	}
	wantLevel(t, inv, "DROP", 0, 0, 100)
}
