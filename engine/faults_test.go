package engine_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testredis"
)

// Redis stops answering (SIGSTOP) for longer than the client's read timeout while
// keyless checkouts are in flight, then resumes. Nothing may be applied twice, and
// every answer must be true: ok means the order exists, ErrUnavailable means it does
// not, ErrOutcomeUnknown may go either way; sold units match orders one for one.
func TestRedisStoppedMidStormAppliesNothingTwiceAndTellsTheTruth(t *testing.T) {
	srv, _ := testredis.Start(t)
	c := redis.NewClient(engine.NoRetries(&redis.Options{Addr: srv.Addr, ReadTimeout: 200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond, PoolSize: 16}))
	t.Cleanup(func() { c.Close() })
	inv := engine.NewRedis(c, engine.Options{})
	t.Cleanup(inv.Close)
	mustCreate(t, inv, engine.Product{SKU: "HOT", Stock: 100_000, Price: 10})

	const buyers, each = 48, 40
	type outcome struct {
		id  string
		err error
	}
	results := make([][]outcome, buyers)
	var ok atomic.Int64
	stopAt := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for b := range buyers {
		wg.Go(func() {
			for i := range each {
				// Deadlines from 50 ms to 2 s: some expire while queued, some after
				// their batch was sent.
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(50+(b*each+i)%40*50)*time.Millisecond)
				id := engine.NewID()
				_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "buyer", OrderID: id,
					Lines: []engine.Line{{SKU: "HOT", Quantity: 1}}})
				cancel()
				results[b] = append(results[b], outcome{id, err})
				if err == nil && ok.Add(1) == 200 {
					once.Do(func() { close(stopAt) })
				}
			}
		})
	}
	<-stopAt
	pid := srv.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the fault: five read timeouts long
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	// A client with no short timeouts reads the truth once Redis has run all it got.
	check := redis.NewClient(engine.NoRetries(&redis.Options{Addr: srv.Addr}))
	t.Cleanup(func() { check.Close() })
	truth := engine.NewRedis(check, engine.Options{})
	t.Cleanup(truth.Close)
	ctx := context.Background()
	var acked, unknown, unavailable, existing int64
	for _, rs := range results {
		for _, r := range rs {
			_, err := truth.Order(ctx, r.id)
			if err != nil && !errors.Is(err, engine.ErrNotFound) {
				t.Fatal(err)
			}
			found := err == nil
			if found {
				existing++
			}
			switch {
			case r.err == nil:
				acked++
				if !found {
					t.Errorf("order %s was acknowledged but does not exist", r.id)
				}
			case errors.Is(r.err, engine.ErrOutcomeUnknown):
				unknown++
			case errors.Is(r.err, engine.ErrUnavailable):
				unavailable++
				if found {
					t.Errorf("order %s was answered 'not applied' (%v) but exists", r.id, r.err)
				}
			default:
				t.Errorf("order %s: unexpected error %v", r.id, r.err)
			}
		}
	}
	lv := mustLevel(t, truth, "HOT")
	t.Logf("%d requests: %d acknowledged, %d outcome unknown, %d unavailable; %d orders exist, %d sold",
		buyers*each, acked, unknown, unavailable, existing, lv.Sold)
	if lv.Sold != existing {
		t.Fatalf("sold %d units for %d orders: a request was applied twice or lost", lv.Sold, existing)
	}
	if lv.Available+lv.Sold != 100_000 || lv.Reserved != 0 {
		t.Fatalf("levels %+v do not add up to the 100000 received", lv)
	}
	if unknown == 0 {
		t.Fatal("no request met the fault: the test did not exercise a lost reply")
	}
	if existing > acked+unknown {
		t.Fatalf("%d orders exist but only %d were acknowledged or unknown", existing, acked+unknown)
	}
	checkLedger(t, truth)
}

func TestKeylessRequestRunTwiceIsAReplay(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
		// The server draws the id of a keyless request once; the same request sent
		// again carries the same id and must find its own record.
		req := engine.CheckoutRequest{UserID: "u", OrderID: "order-1", Lines: []engine.Line{{SKU: "A", Quantity: 2}}}
		first, err := inv.Checkout(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := inv.Checkout(ctx, req)
		if err != nil || !again.Replayed || again.ID != first.ID {
			t.Fatalf("the same keyless checkout again: got %+v, %v; want a replay of %s", again, err, first.ID)
		}
		hreq := engine.ReserveRequest{UserID: "u", HoldID: "hold-1", TTL: time.Minute, Lines: []engine.Line{{SKU: "A", Quantity: 3}}}
		if _, err := inv.Reserve(ctx, hreq); err != nil {
			t.Fatal(err)
		}
		h, err := inv.Reserve(ctx, hreq)
		if err != nil || !h.Replayed || h.ID != "hold-1" {
			t.Fatalf("the same keyless hold again: got %+v, %v; want a replay", h, err)
		}
		wantLevel(t, inv, "A", 5, 3, 2)
		checkLedger(t, inv)
	})
}

func TestAdjustReplayReturnsTheOriginalResult(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
		req := engine.AdjustRequest{SKU: "A", Delta: 5, Reason: "restock", Actor: "admin", IdempotencyKey: "k1"}
		first, err := inv.Adjust(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 7, Reason: "more", Actor: "admin", IdempotencyKey: "k2"}); err != nil {
			t.Fatal(err)
		}
		again, err := inv.Adjust(ctx, req)
		if err != nil || !again.Replayed {
			t.Fatalf("replay: %+v, %v", again, err)
		}
		if again.Available != first.Available || again.Version != first.Version {
			t.Fatalf("replay answered %+v, want the original result %+v", again, first)
		}
		wantLevel(t, inv, "A", 22, 0, 0)
	})
}

func TestNumbersOutOfBoundsChangeNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: engine.MaxUnits - 10, Price: engine.MaxPrice})
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"stock above the bound", func() error {
				_, err := inv.CreateProduct(ctx, engine.Product{SKU: "B", Stock: engine.MaxUnits + 1, Price: 1, Currency: "USD"})
				return err
			}},
			{"price above the bound", func() error {
				_, err := inv.CreateProduct(ctx, engine.Product{SKU: "B", Stock: 1, Price: engine.MaxPrice + 1, Currency: "USD"})
				return err
			}},
			{"limit above the bound", func() error {
				_, err := inv.CreateProduct(ctx, engine.Product{SKU: "B", Stock: 1, Price: 1, Currency: "USD", MaxPerUser: engine.MaxUnits + 1})
				return err
			}},
			{"delta of 1e14", func() error {
				_, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 100_000_000_000_000, Reason: "x", Actor: "a"})
				return err
			}},
			{"negative delta of 1e14", func() error {
				_, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: -100_000_000_000_000, Reason: "x", Actor: "a"})
				return err
			}},
			{"delta taking the level past the bound", func() error {
				_, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 11, Reason: "x", Actor: "a"})
				return err
			}},
			{"level above the bound", func() error {
				_, err := inv.SetLevel(ctx, engine.SetRequest{SKU: "A", Available: engine.MaxUnits + 1, ExpectedVersion: 1, Reason: "x", Actor: "a"})
				return err
			}},
			{"price patch above the bound", func() error {
				p := int64(engine.MaxPrice + 1)
				return inv.UpdateProduct(ctx, "A", engine.ProductPatch{Price: &p})
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				wantErr(t, tc.call(), engine.ErrInvalid)
				wantLevel(t, inv, "A", engine.MaxUnits-10, 0, 0)
			})
		}
		// At the bound itself is fine.
		if _, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 10, Reason: "x", Actor: "a"}); err != nil {
			t.Fatal(err)
		}
		checkLedger(t, inv)
	})
}

func TestUnreadableHoldDoesNotStopTheSweep(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
		mustCreate(t, inv, engine.Product{SKU: "B", Stock: 10, Price: 5})
		rdb := inv.Client()
		// Damage records the way a bad deploy or a hand edit could: lines that do not
		// parse, an expiry that is gone, a stock hash the settle script cannot use.
		garbled := reserve(t, inv, "hold-garbled", time.Millisecond, engine.Line{SKU: "A", Quantity: 1})
		if err := rdb.HSet(ctx, inv.Keys().Hold(garbled.ID), "l", "garbage").Err(); err != nil {
			t.Fatal(err)
		}
		noExpiry := reserve(t, inv, "hold-no-expiry", time.Millisecond, engine.Line{SKU: "A", Quantity: 1})
		if err := rdb.HDel(ctx, inv.Keys().Hold(noExpiry.ID), "x").Err(); err != nil {
			t.Fatal(err)
		}
		brokenStock := reserve(t, inv, "hold-broken-stock", time.Millisecond, engine.Line{SKU: "B", Quantity: 1})
		if err := rdb.HDel(ctx, inv.Keys().Stock("B"), "q").Err(); err != nil {
			t.Fatal(err)
		}
		reserve(t, inv, "hold-good", time.Millisecond, engine.Line{SKU: "A", Quantity: 2})
		time.Sleep(5 * time.Millisecond) // all are due
		n, err := inv.ExpireHolds(ctx, 10)
		var qe *engine.QuarantineError
		if !errors.As(err, &qe) {
			t.Fatalf("sweep error: got %v, want the bad holds quarantined", err)
		}
		slices.Sort(qe.HoldIDs)
		if want := []string{brokenStock.ID, garbled.ID, noExpiry.ID}; !slices.Equal(qe.HoldIDs, want) {
			t.Fatalf("quarantined %v, want %v", qe.HoldIDs, want)
		}
		if n != 1 {
			t.Fatalf("expired %d holds, want the sound one", n)
		}
		if n, err := inv.ExpireHolds(ctx, 10); n != 0 || err != nil {
			t.Fatalf("next sweep: %d, %v; want a clean run", n, err)
		}
		for _, id := range qe.HoldIDs {
			if q, _ := rdb.ZScore(ctx, inv.HoldQuarantineKey(), id).Result(); q == 0 {
				t.Fatalf("hold %s is not in the quarantine set", id)
			}
		}
		wantLevel(t, inv, "A", 8, 2, 0) // their units stay reserved until someone settles them
	})
}

func TestRateLimitSlidesOnRedisClock(t *testing.T) {
	m, inv := miniInventory(t)
	ctx := context.Background()
	mustCreate(t, inv, engine.Product{SKU: "A", Stock: 1000, Price: 1})
	buy := func() error {
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: engine.NewID(), RatePerMinute: 10,
			Lines: []engine.Line{{SKU: "A", Quantity: 1}}})
		return err
	}
	// Redis's clock, not this host's: 0.5 s before a minute boundary.
	base := time.Date(2026, 1, 1, 12, 0, 59, 500_000_000, time.UTC)
	m.SetTime(base)
	for i := range 10 {
		if err := buy(); err != nil {
			t.Fatalf("request %d within the limit: %v", i+1, err)
		}
	}
	var re *engine.RateError
	if err := buy(); !errors.As(err, &re) {
		t.Fatalf("11th request: got %v, want a rate error", err)
	}
	// A fixed clock-minute window would admit ten more right after the boundary.
	m.SetTime(base.Add(time.Second))
	if err := buy(); !errors.As(err, &re) {
		t.Fatalf("just after the minute boundary: got %v, want a rate error (no 2x burst)", err)
	}
	if re.RetryAfter < 1 || re.RetryAfter > 60 {
		t.Fatalf("Retry-After %d s, want 1..60", re.RetryAfter)
	}
	// Once the earlier requests have slid out of the last minute, requests pass again.
	m.SetTime(base.Add(time.Duration(re.RetryAfter)*time.Second + time.Second))
	if err := buy(); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
	m.SetTime(base.Add(2 * time.Minute))
	for i := range 10 {
		if err := buy(); err != nil {
			t.Fatalf("a minute later, request %d: %v", i+1, err)
		}
	}
}

func TestOutOfMemoryIsUnavailableAndChangesNothing(t *testing.T) {
	_, c := testredis.Start(t)
	inv := engine.NewRedis(c, engine.Options{})
	t.Cleanup(inv.Close)
	ctx := context.Background()
	mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
	if err := c.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: engine.NewID(), Lines: []engine.Line{{SKU: "A", Quantity: 1}}})
	if !errors.Is(err, engine.ErrUnavailable) || errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("checkout on a full Redis: got %v, want ErrUnavailable", err)
	}
	_, err = inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 1, Reason: "x", Actor: "a"})
	if !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("adjust on a full Redis: got %v, want ErrUnavailable", err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, inv, "A", 10, 0, 0)
}

// A record written back from MongoDB does not know its request's fingerprint ("*"): a
// retry under its key, whatever its body, gets the order back and sells nothing more.
func TestRestoredRecordReplaysForAnyRequest(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
		req := engine.CheckoutRequest{UserID: "u", IdempotencyKey: "k-1", Lines: []engine.Line{{SKU: "A", Quantity: 2}}}
		first, err := inv.Checkout(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		key := inv.Keys().Order(first.ID)
		rec, err := inv.Client().Get(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Split(rec, "\n") // version, status, ts, currency, hold, lines, fingerprint, user
		if len(f) != 8 {
			t.Fatalf("record %q", rec)
		}
		f[6] = engine.RecordedFingerprint
		if err := inv.Client().Set(ctx, key, strings.Join(f, "\n"), 0).Err(); err != nil {
			t.Fatal(err)
		}
		req.Lines = []engine.Line{{SKU: "A", Quantity: 3}} // another body under the same key
		again, err := inv.Checkout(ctx, req)
		if err != nil || !again.Replayed || again.ID != first.ID {
			t.Fatalf("retry of a restored order: got %+v, %v; want a replay of %s", again, err, first.ID)
		}
		wantLevel(t, inv, "A", 8, 0, 2)
	})
}

// Units given back to a per-user counter that was forgotten meanwhile (the simulation's
// synthetic buyers) leave no negative counter behind.
func TestGivenBackUnitsLeaveNoNegativeCounter(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5, MaxPerUser: 5})
		o, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "sim-1", OrderID: "o1", Lines: []engine.Line{{SKU: "A", Quantity: 2}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := inv.ForgetBuyers(ctx, []string{"A"}, []string{"sim-1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID}); err != nil {
			t.Fatal(err)
		}
		if n, err := inv.Client().HExists(ctx, inv.Keys().Bought("A"), "sim-1").Result(); err != nil || n {
			t.Fatalf("counter of a forgotten buyer after a cancel: exists %v, %v", n, err)
		}
		wantLevel(t, inv, "A", 10, 0, 0)
	})
}

// A record that exists but does not parse is never taken for a missing one: the
// request is refused (an internal error) and nothing is sold over it.
func TestUnparsableRecordIsNeverSoldOver(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
		req := engine.CheckoutRequest{UserID: "u", IdempotencyKey: "k", Lines: []engine.Line{{SKU: "A", Quantity: 2}}}
		o, err := inv.Checkout(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := inv.Client().Set(ctx, inv.Keys().Order(o.ID), "damaged", 0).Err(); err != nil {
			t.Fatal(err)
		}
		_, err = inv.Checkout(ctx, req)
		if err == nil || errors.Is(err, engine.ErrUnavailable) || errors.Is(err, engine.ErrOutcomeUnknown) {
			t.Fatalf("retry over a damaged record: got %v, want an internal refusal", err)
		}
		wantLevel(t, inv, "A", 8, 0, 2)
		if v, _ := inv.Client().Get(ctx, inv.Keys().Order(o.ID)).Result(); v != "damaged" {
			t.Fatalf("the record was overwritten: %q", v)
		}
	})
}
