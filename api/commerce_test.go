package api_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashstock/flashstock/api"
)

func TestProductsAndInventory(t *testing.T) {
	h := newHarness(t, api.Config{})
	admin, cust := token(t, "root", api.RoleAdmin), token(t, "c1", api.RoleCustomer)
	h.product(t, "TV", 5, `,"maxPerUser":2,"description":"55 inch"`)
	h.product(t, "APPLE", 100, "")
	want(t, h.do(t, "POST", "/api/v1/products", admin, `{"sku":"TV","name":"x","price":1,"currency":"USD","stock":1}`), 409, "already_exists")
	want(t, h.do(t, "POST", "/api/v1/products", cust, `{"sku":"X","name":"x","price":1,"currency":"USD","stock":1}`), 403, "forbidden")
	want(t, h.do(t, "POST", "/api/v1/products", admin, `{"sku":"bad sku","name":"x","price":1,"currency":"USD","stock":1}`), 400, "validation_failed")
	want(t, h.do(t, "POST", "/api/v1/products", admin, `{"sku":"NEG","name":"x","price":1,"currency":"USD","stock":-1}`), 400, "validation_failed")

	r := h.do(t, "GET", "/api/v1/products/TV", cust, "")
	want(t, r, 200, "")
	m := r.json(t)
	if m["maxPerUser"].(float64) != 2 || m["stock"].(map[string]any)["available"].(float64) != 5 || m["saleStartsAt"] != nil {
		t.Fatalf("product: %s", r.body)
	}
	want(t, h.do(t, "GET", "/api/v1/products/NOPE", cust, ""), 404, "not_found")

	r = h.do(t, "GET", "/api/v1/products?limit=1", cust, "")
	want(t, r, 200, "")
	page := r.json(t)
	if len(page["items"].([]any)) != 1 || page["nextCursor"] != "APPLE" {
		t.Fatalf("page 1: %s", r.body)
	}
	r = h.do(t, "GET", "/api/v1/products?limit=1&cursor=APPLE", cust, "")
	if p2 := r.json(t); p2["items"].([]any)[0].(map[string]any)["sku"] != "TV" || p2["nextCursor"] != nil {
		t.Fatalf("page 2: %s", r.body)
	}
	want(t, h.do(t, "GET", "/api/v1/products?limit=500", cust, ""), 400, "validation_failed")

	r = h.do(t, "PATCH", "/api/v1/products/TV", admin, `{"price":45000,"name":"TV 55"}`)
	want(t, r, 200, "")
	if m := r.json(t); m["price"].(float64) != 45000 || m["name"] != "TV 55" {
		t.Fatalf("patch: %s", r.body)
	}
	want(t, h.do(t, "PATCH", "/api/v1/products/TV", admin, `{"stock":3}`), 400, "validation_failed")
	want(t, h.do(t, "PATCH", "/api/v1/products/NOPE", admin, `{"price":1}`), 404, "not_found")

	// Adjustments, with their idempotency key.
	adj := func(body, key string) resp {
		return h.do(t, "POST", "/api/v1/inventory/TV/adjustments", admin, body, "Idempotency-Key", key)
	}
	r = adj(`{"delta":10,"reason":"restock"}`, "a1")
	want(t, r, 200, "")
	if m := r.json(t); m["available"].(float64) != 15 || m["version"].(float64) != 2 {
		t.Fatalf("adjust: %s", r.body)
	}
	r = adj(`{"delta":10,"reason":"restock"}`, "a1")
	want(t, r, 200, "")
	if r.header.Get("Idempotent-Replayed") != "true" || h.available(t, "TV") != 15 {
		t.Fatalf("adjust replay: %v %s", r.header, r.body)
	}
	want(t, adj(`{"delta":11,"reason":"restock"}`, "a1"), 422, "idempotency_key_reused")
	want(t, adj(`{"delta":-16,"reason":"damaged"}`, "a2"), 409, "insufficient_stock")
	want(t, adj(`{"delta":"ten","reason":"x"}`, "a3"), 400, "validation_failed")

	want(t, h.do(t, "PUT", "/api/v1/inventory/TV", admin, `{"available":3,"expectedVersion":1}`), 409, "version_conflict")
	r = h.do(t, "PUT", "/api/v1/inventory/TV", admin, `{"available":3,"expectedVersion":2}`)
	want(t, r, 200, "")
	if h.available(t, "TV") != 3 {
		t.Fatalf("set: %s", r.body)
	}
	want(t, h.do(t, "GET", "/api/v1/inventory/NOPE", cust, ""), 404, "not_found")
}

func TestCartAndCheckout(t *testing.T) {
	h := newHarness(t, api.Config{})
	c1, c2 := token(t, "c1", api.RoleCustomer), token(t, "c2", api.RoleCustomer)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	h.product(t, "TV", 5, `,"maxPerUser":2`)
	h.product(t, "APPLE", 100, "")
	h.product(t, "LATER", 10, `,"saleStartsAt":"`+future+`"`)

	want(t, h.do(t, "POST", "/api/v1/checkout", c1, ""), 400, "cart_empty")
	r := h.do(t, "PUT", "/api/v1/cart/items/APPLE", c1, `{"quantity":3}`)
	want(t, r, 200, "")
	if m := r.json(t); m["total"].(float64) != 1500 || m["currency"] != "USD" {
		t.Fatalf("cart: %s", r.body)
	}
	want(t, h.do(t, "PUT", "/api/v1/cart/items/TV", c1, `{"quantity":1}`), 200, "")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/NOPE", c1, `{"quantity":1}`), 404, "not_found")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/TV", c1, `{"quantity":-1}`), 400, "validation_failed")
	if r := h.do(t, "GET", "/api/v1/cart", c2, ""); len(r.json(t)["items"].([]any)) != 0 {
		t.Fatalf("another user's cart: %s", r.body)
	}

	// The cart is bought and emptied; the order is readable at once.
	r = h.do(t, "POST", "/api/v1/checkout", c1, "", "Idempotency-Key", "cart-1")
	want(t, r, 201, "")
	order := r.json(t)
	if order["total"].(float64) != 2000 || order["status"] != "confirmed" || len(order["items"].([]any)) != 2 {
		t.Fatalf("order: %s", r.body)
	}
	id := order["id"].(string)
	if r := h.do(t, "GET", "/api/v1/cart", c1, ""); len(r.json(t)["items"].([]any)) != 0 {
		t.Fatalf("cart after checkout: %s", r.body)
	}
	r = h.do(t, "POST", "/api/v1/checkout", c1, "", "Idempotency-Key", "cart-1")
	want(t, r, 201, "")
	if r.json(t)["id"] != id || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %v %s", r.header, r.body)
	}
	want(t, h.do(t, "GET", "/api/v1/orders/"+id, c1, ""), 200, "")
	want(t, h.do(t, "GET", "/api/v1/orders/"+id, c2, ""), 404, "not_found")
	want(t, h.do(t, "GET", "/api/v1/orders/"+id, token(t, "root", api.RoleAdmin), ""), 200, "")

	buy := func(tok, body string, hdr ...string) resp {
		return h.do(t, "POST", "/api/v1/checkout", tok, body, hdr...)
	}
	r = buy(c2, `{"items":[{"sku":"TV","quantity":2},{"sku":"APPLE","quantity":1000}]}`)
	want(t, r, 409, "out_of_stock")
	items := r.json(t)["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["sku"] != "APPLE" || items[0].(map[string]any)["available"].(float64) != 97 {
		t.Fatalf("short lines: %s", r.body)
	}
	want(t, buy(c1, `{"items":[{"sku":"TV","quantity":2}]}`), 409, "purchase_limit_exceeded")
	want(t, buy(c1, `{"items":[{"sku":"LATER","quantity":1}]}`), 409, "sale_not_active")
	want(t, buy(c1, `{"items":[{"sku":"NOPE","quantity":1}]}`), 404, "not_found")
	want(t, buy(c2, `{"items":[{"sku":"APPLE","quantity":1}]}`, "Idempotency-Key", "k"), 201, "")
	want(t, buy(c2, `{"items":[{"sku":"APPLE","quantity":2}]}`, "Idempotency-Key", "k"), 422, "idempotency_key_reused")

	many := make([]string, 101)
	for i := range many {
		many[i] = `{"sku":"APPLE","quantity":1}`
	}
	for name, body := range map[string]string{
		"zero quantity":     `{"items":[{"sku":"APPLE","quantity":0}]}`,
		"negative quantity": `{"items":[{"sku":"APPLE","quantity":-2}]}`,
		"over 1000":         `{"items":[{"sku":"APPLE","quantity":1001}]}`,
		"no lines":          `{"items":[]}`,
		"101 lines":         `{"items":[` + strings.Join(many, ",") + `]}`,
		"wrong type":        `{"items":[{"sku":"APPLE","quantity":"1"}]}`,
		"unknown field":     `{"items":[{"sku":"APPLE","quantity":1}],"coupon":"FREE"}`,
		"malformed":         `{"items":[{"sku":"APPLE",`,
		"trailing data":     `{"items":[{"sku":"APPLE","quantity":1}]} {}`,
		"bad sku":           `{"items":[{"sku":"APPLE;DROP","quantity":1}]}`,
	} {
		if r := buy(c2, body); r.status != 400 || r.code(t) != "validation_failed" {
			t.Errorf("%s: got %d %s", name, r.status, r.body)
		}
	}
	big := `{"items":[{"sku":"APPLE","quantity":1}],"pad":"` + strings.Repeat("x", 70*1024) + `"}`
	want(t, h.overHTTP(t, "POST", "/api/v1/checkout", c2, big), 413, "payload_too_large")
	if got := h.available(t, "APPLE"); got != 96 {
		t.Fatalf("APPLE after refusals: got %v, want 96", got)
	}
}

func TestCancelReturnsStockOnce(t *testing.T) {
	h := newHarness(t, api.Config{})
	c1 := token(t, "c1", api.RoleCustomer)
	h.product(t, "A", 10, "")
	r := h.do(t, "POST", "/api/v1/checkout", c1, `{"items":[{"sku":"A","quantity":4}]}`)
	want(t, r, 201, "")
	id := r.json(t)["id"].(string)
	h.wantCancelledOnce(t, id, c1)
	// The same key on another order is a reuse.
	r = h.do(t, "POST", "/api/v1/checkout", c1, `{"items":[{"sku":"A","quantity":1}]}`)
	other := r.json(t)["id"].(string)
	want(t, h.do(t, "POST", "/api/v1/orders/"+other+"/cancel", c1, "", "Idempotency-Key", "c-1"), 422, "idempotency_key_reused")
}

func TestHolds(t *testing.T) {
	h := newHarness(t, api.Config{})
	c1, c2 := token(t, "c1", api.RoleCustomer), token(t, "c2", api.RoleCustomer)
	h.product(t, "A", 10, "")
	r := h.do(t, "POST", "/api/v1/holds", c1, `{"items":[{"sku":"A","quantity":3}],"ttlSeconds":60}`)
	want(t, r, 201, "")
	hold := r.json(t)
	if hold["status"] != "active" || hold["expiresAt"] == nil {
		t.Fatalf("hold: %s", r.body)
	}
	id := hold["id"].(string)
	want(t, h.do(t, "GET", "/api/v1/holds/"+id, c2, ""), 404, "not_found")
	want(t, h.do(t, "POST", "/api/v1/holds/"+id+"/commit", c2, ""), 404, "not_found")
	r = h.do(t, "POST", "/api/v1/holds/"+id+"/commit", c1, "")
	want(t, r, 201, "")
	orderID := r.json(t)["id"].(string)
	r = h.do(t, "POST", "/api/v1/holds/"+id+"/commit", c1, "")
	want(t, r, 201, "")
	if r.json(t)["id"] != orderID || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("second commit: %s", r.body)
	}
	if r := h.do(t, "GET", "/api/v1/holds/"+id, c1, ""); r.json(t)["status"] != "committed" {
		t.Fatalf("committed hold: %s", r.body)
	}

	r = h.do(t, "POST", "/api/v1/holds", c1, `{"items":[{"sku":"A","quantity":2}]}`)
	id2 := r.json(t)["id"].(string)
	r = h.do(t, "DELETE", "/api/v1/holds/"+id2, c1, "")
	want(t, r, 200, "")
	if r.json(t)["status"] != "released" {
		t.Fatalf("release: %s", r.body)
	}
	want(t, h.do(t, "POST", "/api/v1/holds/"+id2+"/commit", c1, ""), 410, "hold_released")
	want(t, h.do(t, "POST", "/api/v1/holds", c1, `{"items":[{"sku":"A","quantity":1}],"ttlSeconds":0}`), 400, "validation_failed")
	want(t, h.do(t, "POST", "/api/v1/holds", c1, `{"items":[{"sku":"A","quantity":1}],"ttlSeconds":3601}`), 400, "validation_failed")
	want(t, h.do(t, "POST", "/api/v1/holds", c1, `{"items":[{"sku":"A","quantity":8}]}`), 409, "out_of_stock")
	if got := h.available(t, "A"); got != 7 {
		t.Fatalf("available: got %v, want 7", got)
	}
}

// A hold that expires cannot be committed, and its units come back within 5 s through
// the expiry sweep alone.
func TestExpiredHold(t *testing.T) {
	h := newHarness(t, api.Config{})
	c1 := token(t, "c1", api.RoleCustomer)
	h.product(t, "A", 10, "")
	r := h.do(t, "POST", "/api/v1/holds", c1, `{"items":[{"sku":"A","quantity":4}],"ttlSeconds":1}`)
	want(t, r, 201, "")
	id := r.json(t)["id"].(string)
	r2 := h.do(t, "POST", "/api/v1/holds", c1, `{"items":[{"sku":"A","quantity":2}],"ttlSeconds":1}`)
	id2 := r2.json(t)["id"].(string)

	stop := make(chan struct{})
	defer close(stop)
	go func() { // the hold-expiry job, as the scheduler runs it
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				_, _ = h.inv.ExpireHolds(t.Context(), 500)
			}
		}
	}()
	deadline := time.Now().Add(6 * time.Second)
	for h.available(t, "A") != 10 {
		if time.Now().After(deadline) {
			t.Fatalf("expired units did not come back: available %v", h.available(t, "A"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := h.do(t, "GET", "/api/v1/holds/"+id, c1, ""); r.json(t)["status"] != "expired" {
		t.Fatalf("expired hold: %s", r.body)
	}
	want(t, h.do(t, "POST", "/api/v1/holds/"+id+"/commit", c1, ""), 410, "hold_expired")
	want(t, h.do(t, "POST", "/api/v1/holds/"+id2+"/commit", c1, ""), 410, "hold_expired")
	if got := h.available(t, "A"); got != 10 {
		t.Fatalf("available: got %v, want 10", got)
	}
}

// 64 buyers race for the last 10 units: exactly 10 succeed, 54 are out_of_stock.
func TestLastTenUnits(t *testing.T) {
	h := newHarness(t, api.Config{})
	h.product(t, "DROP", 10, "")
	var ok, oos atomic.Int64
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			r := h.do(t, "POST", "/api/v1/checkout", token(t, fmt.Sprint("b", i), api.RoleCustomer), `{"items":[{"sku":"DROP","quantity":1}]}`)
			switch {
			case r.status == 201:
				ok.Add(1)
			case r.status == 409 && r.code(t) == "out_of_stock":
				oos.Add(1)
			default:
				t.Errorf("buyer %d: %d %s", i, r.status, r.body)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || oos.Load() != 54 {
		t.Fatalf("got %d sold, %d out_of_stock; want 10 and 54", ok.Load(), oos.Load())
	}
	if got := h.available(t, "DROP"); got != 0 {
		t.Fatalf("available: %v", got)
	}
}

func TestRateLimit(t *testing.T) {
	h := newHarness(t, api.Config{RateLimitPerMinute: 3})
	c1 := token(t, "c1", api.RoleCustomer)
	h.product(t, "A", 100, "")
	for range 3 {
		want(t, h.do(t, "POST", "/api/v1/checkout", c1, `{"items":[{"sku":"A","quantity":1}]}`), 201, "")
	}
	r := h.do(t, "POST", "/api/v1/holds", c1, `{"items":[{"sku":"A","quantity":1}]}`)
	want(t, r, 429, "rate_limited")
	if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("Retry-After: %q", ra)
	}
	// Another user has their own allowance; reads are not limited.
	want(t, h.do(t, "POST", "/api/v1/checkout", token(t, "c2", api.RoleCustomer), `{"items":[{"sku":"A","quantity":1}]}`), 201, "")
	want(t, h.do(t, "GET", "/api/v1/cart", c1, ""), 200, "")
	if got := h.available(t, "A"); got != 96 {
		t.Fatalf("available: %v", got)
	}
}

// The limit is one counter in Redis: two API replicas share each user's allowance.
func TestRateLimitHoldsAcrossReplicas(t *testing.T) {
	a := newHarness(t, api.Config{RateLimitPerMinute: 3})
	b := a.replica()
	c1 := token(t, "c1", api.RoleCustomer)
	a.product(t, "A", 100, "")
	buy := `{"items":[{"sku":"A","quantity":1}]}`
	want(t, a.do(t, "POST", "/api/v1/checkout", c1, buy), 201, "")
	want(t, b.do(t, "POST", "/api/v1/checkout", c1, buy), 201, "")
	want(t, a.do(t, "POST", "/api/v1/checkout", c1, buy), 201, "")
	want(t, b.do(t, "POST", "/api/v1/checkout", c1, buy), 429, "rate_limited")
	want(t, a.do(t, "POST", "/api/v1/checkout", c1, buy), 429, "rate_limited")
}

func TestCartLinesAndClearing(t *testing.T) {
	h := newHarness(t, api.Config{})
	c1 := token(t, "c1", api.RoleCustomer)
	h.product(t, "A", 10, "")
	h.product(t, "B", 10, "")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/A", c1, `{"quantity":2}`), 200, "")
	want(t, h.do(t, "PUT", "/api/v1/cart/items/B", c1, `{"quantity":1}`), 200, "")
	r := h.do(t, "DELETE", "/api/v1/cart/items/A", c1, "")
	want(t, r, 200, "")
	if items := r.json(t)["items"].([]any); len(items) != 1 || items[0].(map[string]any)["sku"] != "B" {
		t.Fatalf("after removing A: %s", r.body)
	}
	r = h.do(t, "PUT", "/api/v1/cart/items/B", c1, `{"quantity":0}`)
	if items := r.json(t)["items"].([]any); len(items) != 0 {
		t.Fatalf("quantity 0 removes the line: %s", r.body)
	}
	want(t, h.do(t, "PUT", "/api/v1/cart/items/A", c1, `{"quantity":3}`), 200, "")
	if r := h.do(t, "DELETE", "/api/v1/cart", c1, ""); r.status != 204 || len(r.body) != 0 {
		t.Fatalf("clear: %d %s", r.status, r.body)
	}
	if r := h.do(t, "GET", "/api/v1/cart", c1, ""); len(r.json(t)["items"].([]any)) != 0 {
		t.Fatalf("after clearing: %s", r.body)
	}
	if got := h.available(t, "A"); got != 10 {
		t.Fatalf("a cart took stock: %v", got)
	}
}

func TestOrderListsFromMongoDB(t *testing.T) {
	h := newHarness(t, api.Config{})
	c1, c2, admin := token(t, "c1", api.RoleCustomer), token(t, "c2", api.RoleCustomer), token(t, "root", api.RoleAdmin)
	h.product(t, "A", 100, "")
	for _, tok := range []string{c1, c1, c1, c2} {
		want(t, h.do(t, "POST", "/api/v1/checkout", tok, `{"items":[{"sku":"A","quantity":1}]}`), 201, "")
	}
	h.runSyncer(t)
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := h.st.CountOrders(ctx, ""); n < 4 && time.Now().Before(deadline); n, _ = h.st.CountOrders(ctx, "") {
		time.Sleep(20 * time.Millisecond)
	}

	r := h.do(t, "GET", "/api/v1/orders?limit=2", c1, "")
	want(t, r, 200, "")
	page := r.json(t)
	cursor, _ := page["nextCursor"].(string)
	if len(page["items"].([]any)) != 2 || cursor == "" {
		t.Fatalf("page 1: %s", r.body)
	}
	r = h.do(t, "GET", "/api/v1/orders?limit=2&cursor="+cursor, c1, "")
	if p2 := r.json(t); len(p2["items"].([]any)) != 1 || p2["nextCursor"] != nil {
		t.Fatalf("page 2: %s", r.body)
	}
	want(t, h.do(t, "GET", "/api/v1/orders?userId=c2", c1, ""), 403, "forbidden")
	want(t, h.do(t, "GET", "/api/v1/orders?cursor=garbage", c1, ""), 400, "validation_failed")
	if r := h.do(t, "GET", "/api/v1/orders", admin, ""); len(r.json(t)["items"].([]any)) != 4 {
		t.Fatalf("admin, all: %s", r.body)
	}
	r = h.do(t, "GET", "/api/v1/orders?userId=c2", admin, "")
	if items := r.json(t)["items"].([]any); len(items) != 1 || items[0].(map[string]any)["userId"] != "c2" {
		t.Fatalf("admin, c2's: %s", r.body)
	}
}

// A corrupt record is an internal error: 500, code internal, nothing about the cause.
func TestInternalErrorsLeakNothing(t *testing.T) {
	h := newHarness(t, api.Config{})
	if err := h.rdb.Set(context.Background(), "fs:{0}:o:broken", "not an order", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := h.do(t, "GET", "/api/v1/orders/broken", token(t, "root", api.RoleAdmin), "")
	want(t, r, 500, "internal")
	if m := r.json(t); m["detail"] != nil || strings.Contains(string(r.body), "malformed") {
		t.Fatalf("internal error leaked: %s", r.body)
	}
}

// Checkouts and holds count in their own script call, commits through the middleware:
// all three share one allowance.
func TestRateLimitCountsCommitsWithCheckouts(t *testing.T) {
	h := newHarness(t, api.Config{RateLimitPerMinute: 3})
	c1 := token(t, "c1", api.RoleCustomer)
	h.product(t, "A", 100, "")
	buy := `{"items":[{"sku":"A","quantity":1}]}`
	r := h.do(t, "POST", "/api/v1/holds", c1, buy)
	want(t, r, 201, "")
	want(t, h.do(t, "POST", "/api/v1/holds/"+r.json(t)["id"].(string)+"/commit", c1, ""), 201, "")
	want(t, h.do(t, "POST", "/api/v1/checkout", c1, buy), 201, "")
	r = h.do(t, "POST", "/api/v1/checkout", c1, buy)
	want(t, r, 429, "rate_limited")
	if ra := r.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("Retry-After: %q", ra)
	}
	if got := h.available(t, "A"); got != 98 {
		t.Fatalf("available: %v (a refused request took stock?)", got)
	}
}
