package api_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/flashstock/flashstock/api"
)

// The simulation's report agrees with the stock measured before and after.
func TestBulkCheckoutReportMatchesStock(t *testing.T) {
	h := newHarness(t, api.Config{RateLimitPerMinute: 1}) // synthetic buyers are not rate limited
	admin := token(t, "root", api.RoleAdmin)
	h.product(t, "HOT", 150, "")
	h.product(t, "SIDE", 1000, `,"maxPerUser":1`)
	r := h.do(t, "POST", "/api/v1/carts/bulk-checkout", admin,
		`{"items":[{"sku":"HOT","quantity":2},{"sku":"SIDE","quantity":1}],"buyers":500,"concurrency":64}`)
	want(t, r, 200, "")
	m := r.json(t)
	num := func(k string) float64 { return m[k].(float64) }
	if num("buyers") != 500 || num("succeeded") != 75 || num("outOfStock") != 425 || num("failed") != 0 || num("oversold") != 0 {
		t.Fatalf("report: %s", r.body)
	}
	before, after := m["stockBefore"].(map[string]any), m["stockAfter"].(map[string]any)
	if before["HOT"].(float64) != 150 || after["HOT"].(float64) != 0 || after["SIDE"].(float64) != 925 {
		t.Fatalf("stock figures: %s", r.body)
	}
	if got := h.available(t, "HOT"); got != after["HOT"].(float64) {
		t.Fatalf("measured HOT %v, report says %v", got, after["HOT"])
	}
	lat := m["latencyMs"].(map[string]any)
	if lat["p50"].(float64) <= 0 || lat["max"].(float64) < lat["p99"].(float64) || num("checkoutsPerSecond") <= 0 {
		t.Fatalf("latency: %s", r.body)
	}
	want(t, h.do(t, "POST", "/api/v1/carts/bulk-checkout", admin, `{"items":[{"sku":"HOT","quantity":1}],"buyers":0,"concurrency":1}`), 400, "validation_failed")
	want(t, h.do(t, "POST", "/api/v1/carts/bulk-checkout", admin, `{"items":[{"sku":"HOT","quantity":1}],"buyers":1,"concurrency":1001}`), 400, "validation_failed")
	want(t, h.do(t, "POST", "/api/v1/carts/bulk-checkout", token(t, "c", api.RoleCustomer), `{}`), 403, "forbidden")
}

func TestReconcileEndpoints(t *testing.T) {
	h := newHarness(t, api.Config{})
	admin := token(t, "root", api.RoleAdmin)
	want(t, h.do(t, "GET", "/api/v1/admin/reconcile/last", admin, ""), 404, "not_found")
	h.product(t, "A", 10, "")
	h.runSyncer(t)
	h.rdb.HIncrBy(context.Background(), "fs:{0}:s:A", "a", 3) // drift by hand
	r := h.do(t, "POST", "/api/v1/admin/reconcile", admin, "")
	want(t, r, 200, "")
	m := r.json(t)
	drift := m["drift"].([]any)
	if m["checkedSkus"].(float64) != 1 || len(drift) != 1 || m["repaired"] != true || m["at"] == nil {
		t.Fatalf("report: %s", r.body)
	}
	d := drift[0].(map[string]any)
	if d["sku"] != "A" || d["delta"].(map[string]any)["available"].(float64) != 3 ||
		d["redis"].(map[string]any)["available"].(float64) != 13 || d["expected"].(map[string]any)["available"].(float64) != 10 {
		t.Fatalf("drift: %s", r.body)
	}
	if got := h.available(t, "A"); got != 10 {
		t.Fatalf("after repair: %v", got)
	}
	r = h.do(t, "GET", "/api/v1/admin/reconcile/last", admin, "")
	want(t, r, 200, "")
	if len(r.json(t)["drift"].([]any)) != 1 {
		t.Fatalf("last: %s", r.body)
	}
}

func TestHealthAndUnknownRoutes(t *testing.T) {
	h := newHarness(t, api.Config{})
	r := h.do(t, "GET", "/healthz", "", "")
	if r.status != 200 || r.json(t)["status"] != "ok" {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}
	want(t, h.do(t, "GET", "/readyz", "", ""), 200, "")
	want(t, h.do(t, "GET", "/api/v1/nope", token(t, "c", api.RoleCustomer), ""), 404, "not_found")
	r = h.do(t, "GET", "/healthz", "", "", "X-Request-Id", "abc-123")
	if r.header.Get("X-Request-Id") != "abc-123" {
		t.Fatalf("request id: %v", r.header)
	}
	if r := h.do(t, "GET", "/api/v1/cart", "", ""); r.header.Get("X-Request-Id") == "" || r.json(t)["requestId"] == nil {
		t.Fatalf("error without a request id: %v %s", r.header, r.body)
	}
}

// With Redis gone, requests get 503 unavailable (no internals), and the log line for it
// carries the request id the client saw.
func TestRedisDownIsUnavailableAndLoggedWithTheRequestID(t *testing.T) {
	var logs bytes.Buffer
	h := newHarnessLogging(t, api.Config{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	h.product(t, "A", 1, "")
	h.srv.Stop()
	r := h.do(t, "POST", "/api/v1/checkout", token(t, "c", api.RoleCustomer), `{"items":[{"sku":"A","quantity":1}]}`)
	want(t, r, 503, "unavailable")
	if strings.Contains(string(r.body), "127.0.0.1") || strings.Contains(string(r.body), "dial") {
		t.Fatalf("internals leaked: %s", r.body)
	}
	id := r.header.Get("X-Request-Id")
	if id == "" || !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
		t.Fatalf("no log line with request id %q:\n%s", id, logs.String())
	}
}
