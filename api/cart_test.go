package api_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/engine"
)

func (h *harness) cart(t testing.TB, user string) map[string]string {
	t.Helper()
	m, err := h.rdb.HGetAll(context.Background(), "fs:{0}:cart:"+user).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustCreate(t testing.TB, h *harness, sku string, stock int64) {
	t.Helper()
	if _, err := h.inv.CreateProduct(context.Background(), engine.Product{SKU: sku, Stock: stock, Price: 100, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
}

// Many concurrent adds of new SKUs to a cart one line short of full: exactly one
// gets in, the others are refused, and the cart never holds more than 100 lines.
func TestCartLineCapHoldsUnderConcurrentAdds(t *testing.T) {
	h := newHarness(t, api.Config{})
	const racers = 64
	for i := range engine.MaxLines - 1 + racers {
		mustCreate(t, h, fmt.Sprintf("S%03d", i), 10)
	}
	tok := token(t, "c1", api.RoleCustomer)
	for i := range engine.MaxLines - 1 {
		want(t, h.do(t, "PUT", fmt.Sprintf("/api/v1/cart/items/S%03d", i), tok, `{"quantity":1}`), 200, "")
	}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			r := h.do(t, "PUT", fmt.Sprintf("/api/v1/cart/items/S%03d", engine.MaxLines-1+i), tok, `{"quantity":2}`)
			switch {
			case r.status == 200:
				ok.Add(1)
			case r.status == 400 && strings.Contains(string(r.body), `"code":"validation_failed"`):
				refused.Add(1)
			default:
				t.Errorf("add: %d %s", r.status, r.body)
			}
		})
	}
	wg.Wait()
	if n := len(h.cart(t, "c1")); n != engine.MaxLines || ok.Load() != 1 || refused.Load() != racers-1 {
		t.Fatalf("got %d lines, %d adds accepted, %d refused; want %d lines, 1 accepted, %d refused",
			n, ok.Load(), refused.Load(), engine.MaxLines, racers-1)
	}
	// A full cart still takes a new quantity for a line it has, and a removal.
	want(t, h.do(t, "PUT", "/api/v1/cart/items/S000", tok, `{"quantity":7}`), 200, "")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/S001", tok, `{"quantity":0}`), 200, "")
	if c := h.cart(t, "c1"); len(c) != engine.MaxLines-1 || c["S000"] != "7" {
		t.Fatalf("cart: %d lines, S000 = %q", len(c), c["S000"])
	}
}

// duringTake is a go-redis hook that runs fn once, just before the first take.lua call
// (the checkout's script) is sent.
type duringTake struct {
	once sync.Once
	fn   func(ctx context.Context)
}

func (d *duringTake) DialHook(next redis.DialHook) redis.DialHook { return next }
func (d *duringTake) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (d *duringTake) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			for _, a := range cmd.Args() {
				if a == "fs:{0}:ob" { // the outbox: a stock script, not a cart one
					d.once.Do(func() { d.fn(ctx) })
					break
				}
			}
		}
		return next(ctx, cmd)
	}
}

// A cart checkout takes out only the lines it bought: a line added while it ran, and a
// line whose quantity changed meanwhile, stay.
func TestCartCheckoutKeepsLinesChangedWhileItRan(t *testing.T) {
	h := newHarness(t, api.Config{})
	h.product(t, "A", 10, "")
	h.product(t, "B", 10, "")
	h.product(t, "C", 10, "")
	tok := token(t, "c1", api.RoleCustomer)
	want(t, h.do(t, "PUT", "/api/v1/cart/items/A", tok, `{"quantity":1}`), 200, "")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/B", tok, `{"quantity":2}`), 200, "")
	h.rdb.AddHook(&duringTake{fn: func(ctx context.Context) {
		// The buyer, in another tab, while the checkout is on its way to Redis.
		h.rdb.HSet(ctx, "fs:{0}:cart:c1", "C", 4, "B", 5)
	}})
	r := h.do(t, "POST", "/api/v1/checkout", tok, "")
	want(t, r, 201, "")
	if items := r.json(t)["items"].([]any); len(items) != 2 {
		t.Fatalf("order: %s", r.body)
	}
	if c := h.cart(t, "c1"); len(c) != 2 || c["B"] != "5" || c["C"] != "4" {
		t.Fatalf("cart after checkout: got %v, want B=5 and C=4 (A bought and gone)", c)
	}
}

// A retried cart checkout whose first attempt bought the lines but never took them out
// of the cart (it failed after the purchase) replays the order and empties the cart.
func TestReplayedCartCheckoutRemovesTheLinesItBought(t *testing.T) {
	h := newHarness(t, api.Config{})
	h.product(t, "A", 10, "")
	h.product(t, "B", 10, "")
	tok := token(t, "c1", api.RoleCustomer)
	want(t, h.do(t, "PUT", "/api/v1/cart/items/A", tok, `{"quantity":1}`), 200, "")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/B", tok, `{"quantity":2}`), 200, "")
	// The first attempt: the purchase happened, the cart was left as it was.
	first, err := h.inv.Checkout(context.Background(), engine.CheckoutRequest{UserID: "c1", IdempotencyKey: "k1",
		Lines: []engine.Line{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 2}}, Cart: true})
	if err != nil {
		t.Fatal(err)
	}
	r := h.do(t, "POST", "/api/v1/checkout", tok, "", "Idempotency-Key", "k1")
	want(t, r, 201, "")
	if r.json(t)["id"] != first.ID || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: got %v %s, want a replay of order %s", r.header, r.body, first.ID)
	}
	if c := h.cart(t, "c1"); len(c) != 0 {
		t.Fatalf("cart after the replay: got %v, want empty", c)
	}
	if got := h.available(t, "A"); got != 9 {
		t.Fatalf("A available: got %v, want 9 (bought once)", got)
	}
}

// A retried cart checkout after a line was added while the first attempt ran (so the
// cart no longer matches what was bought) still gets the original order, not
// idempotency_key_reused, and the added line stays.
func TestRetriedCartCheckoutAfterTheCartChangedReplays(t *testing.T) {
	h := newHarness(t, api.Config{})
	h.product(t, "A", 10, "")
	h.product(t, "C", 10, "")
	tok := token(t, "c1", api.RoleCustomer)
	want(t, h.do(t, "PUT", "/api/v1/cart/items/A", tok, `{"quantity":1}`), 200, "")
	h.rdb.AddHook(&duringTake{fn: func(ctx context.Context) { h.rdb.HSet(ctx, "fs:{0}:cart:c1", "C", 4) }})
	first := h.do(t, "POST", "/api/v1/checkout", tok, "", "Idempotency-Key", "k1")
	want(t, first, 201, "")
	retry := h.do(t, "POST", "/api/v1/checkout", tok, "", "Idempotency-Key", "k1")
	want(t, retry, 201, "")
	if retry.json(t)["id"] != first.json(t)["id"] || retry.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: got %v %s, want a replay of %s", retry.header, retry.body, first.body)
	}
	if c := h.cart(t, "c1"); len(c) != 1 || c["C"] != "4" {
		t.Fatalf("cart: got %v, want only C=4", c)
	}
	if got := h.available(t, "C"); got != 10 {
		t.Fatalf("C available: got %v, want 10 (not bought)", got)
	}
	// A buy-now with the key of that cart checkout and another body is still refused.
	want(t, h.do(t, "POST", "/api/v1/checkout", tok, `{"items":[{"sku":"C","quantity":1}]}`, "Idempotency-Key", "k1"),
		422, "idempotency_key_reused")
}

// A cart checkout and a buy-now are different requests: the same key on both is 422
// idempotency_key_reused, whichever came first and whatever the cart holds, and the cart
// keeps its lines.
func TestCartCheckoutWithABuyNowsKeyIsReused(t *testing.T) {
	h := newHarness(t, api.Config{})
	h.product(t, "A", 10, "")
	h.product(t, "B", 10, "")
	tok := token(t, "c1", api.RoleCustomer)
	want(t, h.do(t, "POST", "/api/v1/checkout", tok, `{"items":[{"sku":"A","quantity":1}]}`, "Idempotency-Key", "k1"), 201, "")
	// With an empty cart: no cart order under the key, and the buy-now is not one.
	want(t, h.do(t, "POST", "/api/v1/checkout", tok, "", "Idempotency-Key", "k1"), 422, "idempotency_key_reused")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/A", tok, `{"quantity":1}`), 200, "")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/B", tok, `{"quantity":2}`), 200, "")
	want(t, h.do(t, "POST", "/api/v1/checkout", tok, "", "Idempotency-Key", "k1"), 422, "idempotency_key_reused")
	if c := h.cart(t, "c1"); c["A"] != "1" || c["B"] != "2" {
		t.Fatalf("cart after a refused checkout: got %v, want it unchanged", c)
	}
	if got := h.available(t, "A"); got != 9 {
		t.Fatalf("A available: got %v, want 9 (the buy-now only)", got)
	}
	// The other way round: a cart checkout's key on a buy-now.
	want(t, h.do(t, "POST", "/api/v1/checkout", tok, "", "Idempotency-Key", "k2"), 201, "")
	want(t, h.do(t, "POST", "/api/v1/checkout", tok, `{"items":[{"sku":"A","quantity":1}]}`, "Idempotency-Key", "k2"), 422, "idempotency_key_reused")
}
