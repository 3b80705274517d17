package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

func TestCheckoutSellsEveryUnitAndNoMore(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "TV", Stock: 3, Price: 49900, Currency: "EUR"})
		for i := range 3 {
			o, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u1", Lines: []engine.Line{{SKU: "TV", Quantity: 1}}, OrderID: engine.NewID()})
			if err != nil {
				t.Fatalf("checkout %d: %v", i, err)
			}
			if o.Total != 49900 || o.Currency != "EUR" || o.Status != engine.OrderConfirmed || len(o.Items) != 1 || o.Items[0].UnitPrice != 49900 {
				t.Fatalf("order: got %+v", o)
			}
		}
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u1", Lines: []engine.Line{{SKU: "TV", Quantity: 1}}, OrderID: engine.NewID()})
		var se *engine.StockError
		if !errors.As(err, &se) || len(se.Short) != 1 || se.Short[0] != (engine.Shortage{SKU: "TV", Requested: 1, Available: 0}) {
			t.Fatalf("fourth checkout: got %v, want out of stock TV 1/0", err)
		}
		wantLevel(t, inv, "TV", 0, 0, 3)
		checkLedger(t, inv)
	})
}

func TestCheckoutIsAllOrNothingAndListsEveryShortLine(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 5, Price: 100})
		mustCreate(t, inv, engine.Product{SKU: "B", Stock: 1, Price: 200})
		mustCreate(t, inv, engine.Product{SKU: "C", Stock: 0, Price: 300})
		before := outboxLen(t, inv)
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "o1",
			Lines: []engine.Line{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 2}, {SKU: "C", Quantity: 1}}})
		var se *engine.StockError
		if !errors.As(err, &se) {
			t.Fatalf("got %v, want a StockError", err)
		}
		want := []engine.Shortage{{SKU: "B", Requested: 2, Available: 1}, {SKU: "C", Requested: 1, Available: 0}}
		if len(se.Short) != 2 || se.Short[0] != want[0] || se.Short[1] != want[1] {
			t.Fatalf("short lines: got %+v, want %+v", se.Short, want)
		}
		wantLevel(t, inv, "A", 5, 0, 0)
		wantLevel(t, inv, "B", 1, 0, 0)
		if n := outboxLen(t, inv); n != before {
			t.Fatalf("outbox grew from %d to %d on a refusal", before, n)
		}
	})
}

func TestCheckoutSumsDuplicateLines(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 3, Price: 100})
		mustCreate(t, inv, engine.Product{SKU: "B", Stock: 9, Price: 10})
		// 2 + 2 of A exceeds 3 even though each line alone fits.
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "o1",
			Lines: []engine.Line{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 1}, {SKU: "A", Quantity: 2}}})
		var se *engine.StockError
		if !errors.As(err, &se) || se.Short[0].Requested != 4 {
			t.Fatalf("got %v, want out of stock with A requested 4", err)
		}
		o, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "o2",
			Lines: []engine.Line{{SKU: "B", Quantity: 1}, {SKU: "A", Quantity: 1}, {SKU: "A", Quantity: 2}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(o.Items) != 2 || o.Items[0] != (engine.Item{SKU: "A", Quantity: 3, UnitPrice: 100}) || o.Total != 310 {
			t.Fatalf("order: got %+v", o)
		}
		wantLevel(t, inv, "A", 0, 0, 3)
		got, err := inv.Order(ctx, "o2")
		if err != nil || got.Total != 310 || got.UserID != "u" || !got.CreatedAt.Equal(o.CreatedAt) {
			t.Fatalf("read back: got %+v, %v; want %+v", got, err, o)
		}
	})
}

func TestCheckoutRulesRefuseWithoutChange(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		mustCreate(t, inv, engine.Product{SKU: "OPEN", Stock: 10, Price: 1})
		mustCreate(t, inv, engine.Product{SKU: "LATER", Stock: 10, Price: 1, SaleStartsAt: &future})
		mustCreate(t, inv, engine.Product{SKU: "OVER", Stock: 10, Price: 1, SaleEndsAt: &past})
		mustCreate(t, inv, engine.Product{SKU: "LIMITED", Stock: 10, Price: 1, MaxPerUser: 2})
		mustCreate(t, inv, engine.Product{SKU: "YEN", Stock: 10, Price: 1, Currency: "JPY"})
		if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "first", Lines: []engine.Line{{SKU: "LIMITED", Quantity: 1}}}); err != nil {
			t.Fatal(err)
		}
		before := outboxLen(t, inv)
		cases := []struct {
			name  string
			lines []engine.Line
			want  error
		}{
			{"unknown sku", []engine.Line{{SKU: "OPEN", Quantity: 1}, {SKU: "NOPE", Quantity: 1}}, engine.ErrNotFound},
			{"sale not started", []engine.Line{{SKU: "LATER", Quantity: 1}}, engine.ErrSaleNotActive},
			{"sale over", []engine.Line{{SKU: "OPEN", Quantity: 1}, {SKU: "OVER", Quantity: 1}}, engine.ErrSaleNotActive},
			{"over the per-user limit", []engine.Line{{SKU: "LIMITED", Quantity: 2}}, engine.ErrLimitExceeded},
			{"mixed currencies", []engine.Line{{SKU: "OPEN", Quantity: 1}, {SKU: "YEN", Quantity: 1}}, engine.ErrInvalid},
		}
		for _, tc := range cases {
			_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "x", Lines: tc.lines})
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			}
		}
		var le *engine.LimitError
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "x", Lines: []engine.Line{{SKU: "LIMITED", Quantity: 2}}})
		if !errors.As(err, &le) || le.Limit != 2 || le.Already != 1 || le.Requested != 2 {
			t.Fatalf("limit error: got %v", err)
		}
		// Another user is not limited by u's purchases.
		if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "v", OrderID: "v1", Lines: []engine.Line{{SKU: "LIMITED", Quantity: 2}}}); err != nil {
			t.Fatalf("another user: %v", err)
		}
		wantLevel(t, inv, "OPEN", 10, 0, 0)
		wantLevel(t, inv, "LIMITED", 7, 0, 3)
		if n := outboxLen(t, inv); n != before+1 {
			t.Fatalf("outbox: got %d entries, want %d", n, before+1)
		}
	})
}

func TestCheckoutIdempotency(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
		req := engine.CheckoutRequest{UserID: "u", IdempotencyKey: "key-1", OrderID: "o1", Lines: []engine.Line{{SKU: "A", Quantity: 2}}}
		first, err := inv.Checkout(ctx, req)
		if err != nil || first.Replayed {
			t.Fatalf("first: %+v, %v", first, err)
		}
		req.OrderID = "o2" // a retry mints a new id; the original must come back
		again, err := inv.Checkout(ctx, req)
		if err != nil || !again.Replayed || again.ID != first.ID || again.Total != first.Total {
			t.Fatalf("replay: got %+v, %v; want order %s replayed", again, err, first.ID)
		}
		req.Lines = []engine.Line{{SKU: "A", Quantity: 3}}
		_, err = inv.Checkout(ctx, req)
		wantErr(t, err, engine.ErrIdempotencyKeyReused)
		// The same key from another user is another key.
		other, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "v", IdempotencyKey: "key-1", OrderID: "o3", Lines: []engine.Line{{SKU: "A", Quantity: 3}}})
		if err != nil || other.Replayed || other.ID == first.ID {
			t.Fatalf("other user: got %+v, %v", other, err)
		}
		// Keys are scoped per kind of record: the same key on a hold names a hold.
		h, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", IdempotencyKey: "key-1", TTL: time.Minute, Lines: []engine.Line{{SKU: "A", Quantity: 1}}})
		if err != nil || h.Replayed || h.ID == first.ID {
			t.Fatalf("hold with a checkout's key: got %+v, %v", h, err)
		}
		wantLevel(t, inv, "A", 4, 1, 5)
		checkLedger(t, inv)
	})
}

func TestBadInputChangesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
		many := make([]engine.Line, engine.MaxLines+1)
		for i := range many {
			many[i] = engine.Line{SKU: "A", Quantity: 1}
		}
		long := strings.Repeat("x", engine.MaxIDLength+1)
		one := []engine.Line{{SKU: "A", Quantity: 1}}
		cases := []struct {
			name string
			req  engine.CheckoutRequest
		}{
			{"no lines", engine.CheckoutRequest{UserID: "u", OrderID: "o"}},
			{"too many lines", engine.CheckoutRequest{UserID: "u", OrderID: "o", Lines: many}},
			{"zero quantity", engine.CheckoutRequest{UserID: "u", OrderID: "o", Lines: []engine.Line{{SKU: "A", Quantity: 0}}}},
			{"negative quantity", engine.CheckoutRequest{UserID: "u", OrderID: "o", Lines: []engine.Line{{SKU: "A", Quantity: -1}}}},
			{"quantity over 1000", engine.CheckoutRequest{UserID: "u", OrderID: "o", Lines: []engine.Line{{SKU: "A", Quantity: 1001}}}},
			{"bad sku", engine.CheckoutRequest{UserID: "u", OrderID: "o", Lines: []engine.Line{{SKU: "A:1", Quantity: 1}}}},
			{"long sku", engine.CheckoutRequest{UserID: "u", OrderID: "o", Lines: []engine.Line{{SKU: strings.Repeat("A", 65), Quantity: 1}}}},
			{"no user", engine.CheckoutRequest{OrderID: "o", Lines: one}},
			{"long user", engine.CheckoutRequest{UserID: long, OrderID: "o", Lines: one}},
			{"long order id", engine.CheckoutRequest{UserID: "u", OrderID: long, Lines: one}},
			{"bad order id", engine.CheckoutRequest{UserID: "u", OrderID: "o,1", Lines: one}},
			{"long idempotency key", engine.CheckoutRequest{UserID: "u", OrderID: "o", IdempotencyKey: long, Lines: one}},
			{"control character in key", engine.CheckoutRequest{UserID: "u", OrderID: "o", IdempotencyKey: "a\nb", Lines: one}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := inv.Checkout(ctx, tc.req)
				if !errors.Is(err, engine.ErrInvalid) {
					t.Errorf("checkout: got %v, want ErrInvalid", err)
				}
				_, err = inv.Reserve(ctx, engine.ReserveRequest{UserID: tc.req.UserID, Lines: tc.req.Lines, HoldID: tc.req.OrderID, IdempotencyKey: tc.req.IdempotencyKey, TTL: time.Minute})
				if !errors.Is(err, engine.ErrInvalid) {
					t.Errorf("reserve: got %v, want ErrInvalid", err)
				}
			})
		}
		_, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", Lines: one, HoldID: "h", TTL: 2 * time.Hour})
		wantErr(t, err, engine.ErrInvalid)
		_, err = inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 0})
		wantErr(t, err, engine.ErrInvalid)
		_, err = inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 1, Reason: strings.Repeat("r", 257)})
		wantErr(t, err, engine.ErrInvalid)
		_, err = inv.SetLevel(ctx, engine.SetRequest{SKU: "A", Available: -1, ExpectedVersion: 1})
		wantErr(t, err, engine.ErrInvalid)
		_, err = inv.CreateProduct(ctx, engine.Product{SKU: "B", Stock: -1, Currency: "USD"})
		wantErr(t, err, engine.ErrInvalid)
		_, err = inv.CreateProduct(ctx, engine.Product{SKU: "B", Stock: 1, Currency: "usd"})
		wantErr(t, err, engine.ErrInvalid)
		_, err = inv.Levels(ctx, []string{"bad sku"})
		wantErr(t, err, engine.ErrInvalid)
		wantLevel(t, inv, "A", 10, 0, 0)
		if n := outboxLen(t, inv); n != 1 {
			t.Fatalf("outbox: got %d entries, want only the creation", n)
		}
	})
}

func TestCreateProductTwiceIsAlreadyExists(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 1})
		_, err := inv.CreateProduct(context.Background(), engine.Product{SKU: "A", Stock: 99, Currency: "USD"})
		wantErr(t, err, engine.ErrAlreadyExists)
		wantLevel(t, inv, "A", 1, 0, 0)
	})
}

func TestUpdateProductChangesTheRulesNotTheLevels(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 5, Price: 100})
		price, limit := int64(250), int64(1)
		if err := inv.UpdateProduct(ctx, "A", engine.ProductPatch{Price: &price, MaxPerUser: &limit}); err != nil {
			t.Fatal(err)
		}
		o, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "o1", Lines: []engine.Line{{SKU: "A", Quantity: 1}}})
		if err != nil || o.Total != 250 {
			t.Fatalf("checkout after price change: %+v, %v", o, err)
		}
		_, err = inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: "o2", Lines: []engine.Line{{SKU: "A", Quantity: 1}}})
		wantErr(t, err, engine.ErrLimitExceeded)
		future := time.Now().Add(time.Hour)
		if err := inv.UpdateProduct(ctx, "A", engine.ProductPatch{SaleStartsAt: &future}); err != nil {
			t.Fatal(err)
		}
		_, err = inv.Checkout(ctx, engine.CheckoutRequest{UserID: "v", OrderID: "o3", Lines: []engine.Line{{SKU: "A", Quantity: 1}}})
		wantErr(t, err, engine.ErrSaleNotActive)
		if err := inv.UpdateProduct(ctx, "A", engine.ProductPatch{SaleStartsAt: &time.Time{}}); err != nil {
			t.Fatal(err)
		}
		if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "v", OrderID: "o4", Lines: []engine.Line{{SKU: "A", Quantity: 1}}}); err != nil {
			t.Fatalf("after reopening the window: %v", err)
		}
		wantErr(t, inv.UpdateProduct(ctx, "NOPE", engine.ProductPatch{Price: &price}), engine.ErrNotFound)
		wantLevel(t, inv, "A", 3, 0, 2)
	})
}

// Units count against a per-user limit only while the SKU has one, and giving units back
// (cancel, release, expiry) returns exactly what was counted.
func TestLimitCountsOnlyUnitsTakenUnderALimit(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 100, Price: 1})
		buy := func(id string, q int64) error {
			_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: id, Lines: []engine.Line{{SKU: "A", Quantity: q}}})
			return err
		}
		if err := buy("before", 5); err != nil {
			t.Fatal(err)
		}
		limit := int64(3)
		if err := inv.UpdateProduct(ctx, "A", engine.ProductPatch{MaxPerUser: &limit}); err != nil {
			t.Fatal(err)
		}
		if err := buy("under1", 3); err != nil {
			t.Fatalf("3 units under a limit of 3: %v", err)
		}
		wantErr(t, buy("under2", 1), engine.ErrLimitExceeded)
		// Cancelling the order from before the limit frees no allowance.
		if _, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: "before"}); err != nil {
			t.Fatal(err)
		}
		wantErr(t, buy("under3", 1), engine.ErrLimitExceeded)
		// Cancelling a counted order does.
		if _, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: "under1"}); err != nil {
			t.Fatal(err)
		}
		if err := buy("under4", 3); err != nil {
			t.Fatalf("after cancelling counted units: %v", err)
		}
		checkLedger(t, inv)
	})
}

func TestLookupReportsOnlyWhatExists(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 4})
		found, err := inv.Lookup(ctx, []string{"A", "MISSING"})
		if err != nil || len(found) != 1 || found["A"].Available != 4 {
			t.Fatalf("lookup: %+v, %v", found, err)
		}
		_, err = inv.Levels(ctx, []string{"A", "MISSING"})
		wantErr(t, err, engine.ErrNotFound)
		_, err = inv.Lookup(ctx, []string{"bad sku"})
		wantErr(t, err, engine.ErrInvalid)
	})
}

// The per-user rate limit is counted in the checkout's own script: checkouts and
// reservations share one counter per user and minute, refused ones included.
func TestRateLimitCountedInTheScript(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		// The window slides on Redis's clock: a minute boundary mid-test changes nothing.
		rateLimitRun(t, inv, "0")
	})
}

func rateLimitRun(t *testing.T, inv *engine.Redis, run string) {
	ctx := context.Background()
	mustCreate(t, inv, engine.Product{SKU: "R" + run, Stock: 2, Price: 1})
	line := []engine.Line{{SKU: "R" + run, Quantity: 1}}
	u1, u2 := "u1-"+run, "u2-"+run
	buy := func(user string) error {
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: user, Lines: line, OrderID: engine.NewID(), RatePerMinute: 3})
		return err
	}
	if err := buy(u1); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: u1, Lines: line, HoldID: engine.NewID(), TTL: time.Minute, RatePerMinute: 3}); err != nil {
		t.Fatal(err)
	}
	if err := buy(u1); !errors.Is(err, engine.ErrOutOfStock) {
		t.Fatalf("third request: %v, want out of stock (it still counts)", err)
	}
	var re *engine.RateError
	// The window is estimated from two clock minutes (prelude.lua, over_rate): the wait
	// can exceed a minute by up to 30 s / limit. TestRateLimitSlidesOnRedisClock checks
	// that waiting Retry-After is enough.
	if err := buy(u1); !errors.As(err, &re) || re.RetryAfter < 1 || re.RetryAfter > 60+30/3 {
		t.Fatalf("fourth request: %v, want a rate error with Retry-After of 1 to 70 s", err)
	}
	if err := buy(u2); !errors.Is(err, engine.ErrOutOfStock) {
		t.Fatalf("another user has their own allowance: %v", err)
	}
	// A commit counts on the same counter: u2 has used 1 of 3, two commits make 3, and
	// the third is refused without settling its hold.
	lim := struct {
		User      string
		PerMinute int
	}{u2, 3}
	mustCreate(t, inv, engine.Product{SKU: "RC" + run, Stock: 5, Price: 1})
	rc := []engine.Line{{SKU: "RC" + run, Quantity: 1}}
	hold := func() engine.Hold {
		h, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: u2, Lines: rc, HoldID: engine.NewID(), TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	h1, h2 := hold(), hold()
	if _, err := inv.Commit(ctx, engine.CommitRequest{HoldID: h1.ID, OrderID: engine.NewID(), Owner: lim.User, RatePerMinute: lim.PerMinute}); err != nil {
		t.Fatalf("commit within the limit: %v", err)
	}
	if _, err := inv.Commit(ctx, engine.CommitRequest{HoldID: h2.ID, OrderID: engine.NewID(), Owner: lim.User, RatePerMinute: lim.PerMinute}); err != nil {
		t.Fatalf("commit within the limit: %v", err)
	}
	h3 := hold()
	if _, err := inv.Commit(ctx, engine.CommitRequest{HoldID: h3.ID, OrderID: engine.NewID(), Owner: lim.User, RatePerMinute: lim.PerMinute}); !errors.As(err, &re) {
		t.Fatalf("commit over the limit: %v, want a rate error", err)
	}
	if got, err := inv.Hold(ctx, h3.ID); err != nil || got.Status != engine.HoldActive {
		t.Fatalf("a refused commit settled its hold: %+v, %v", got, err)
	}
	// Without a limit nothing is counted.
	if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: u1, Lines: line, OrderID: engine.NewID()}); !errors.Is(err, engine.ErrOutOfStock) {
		t.Fatalf("unlimited request: %v", err)
	}
}
