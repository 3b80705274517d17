package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/metrics"
)

// A drop through the waiting room over HTTP: the product's waitingRoom field, joining
// (201, then 200), the position, admission with a pass, checkout and hold gated by
// Queue-Pass (403 queue_pass_required changing nothing), and the metrics.
func TestWaitingRoomOverHTTP(t *testing.T) {
	h := newHarnessMetrics(t, metrics.New())
	admin := token(t, "root", api.RoleAdmin)
	start := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	h.product(t, "DROP", 2, `,"saleStartsAt":"`+start+`","waitingRoom":{"enabled":true,"admitPerMinute":600}`)
	r := h.do(t, "GET", "/api/v1/products/DROP", admin, "")
	want(t, r, 200, "")
	if room := r.json(t)["waitingRoom"].(map[string]any); room["enabled"] != true || room["admitPerMinute"] != 600.0 {
		t.Fatalf("waitingRoom: got %v", room)
	}

	alice, bob, carol := token(t, "alice", api.RoleCustomer), token(t, "bob", api.RoleCustomer), token(t, "carol", api.RoleCustomer)
	want(t, h.do(t, "GET", "/api/v1/queue/DROP", alice, ""), 404, "not_found")
	for _, tok := range []string{alice, bob, carol} {
		r := h.do(t, "POST", "/api/v1/queue/DROP", tok, "")
		want(t, r, 201, "")
		if j := r.json(t); j["sku"] != "DROP" || j["status"] != "waiting" || j["position"].(float64) < 1 || j["estimatedWaitSeconds"].(float64) < 3500 {
			t.Fatalf("join before the start: got %s", r.body)
		}
	}
	want(t, h.do(t, "POST", "/api/v1/queue/DROP", alice, ""), 200, "")

	// Open the sale: a queue of three, two units, so two are admitted.
	want(t, h.do(t, "PATCH", "/api/v1/products/DROP", admin, `{"saleStartsAt":null}`), 200, "")
	passes := map[string]string{}
	waiting := ""
	for name, tok := range map[string]string{"alice": alice, "bob": bob, "carol": carol} {
		r := h.do(t, "GET", "/api/v1/queue/DROP", tok, "")
		want(t, r, 200, "")
		j := r.json(t)
		switch j["status"] {
		case "admitted":
			exp, err := time.Parse(time.RFC3339, j["passExpiresAt"].(string))
			if err != nil || time.Until(exp) < 100*time.Second || j["pass"] == "" {
				t.Fatalf("admitted: got %s", r.body)
			}
			passes[name] = j["pass"].(string)
		case "waiting":
			if j["position"] != 1.0 || j["pass"] != nil {
				t.Fatalf("waiting behind two admitted: got %s", r.body)
			}
			waiting = name
		default:
			t.Fatalf("after the start: got %s", r.body)
		}
	}
	if len(passes) != 2 || waiting == "" {
		t.Fatalf("admitted %v, waiting %q: want two admitted and one waiting", passes, waiting)
	}
	toks := map[string]string{"alice": alice, "bob": bob, "carol": carol}
	var first, second string
	for u := range passes {
		if first == "" {
			first = u
		} else {
			second = u
		}
	}
	buyNow := `{"items":[{"sku":"DROP","quantity":1}]}`
	// Without a pass, with someone else's, or with a garbled one: 403, nothing changes.
	for _, pass := range []string{"", passes[second], "garbage"} {
		hdr := []string{}
		if pass != "" {
			hdr = []string{"Queue-Pass", pass}
		}
		want(t, h.do(t, "POST", "/api/v1/checkout", toks[first], buyNow, hdr...), 403, "queue_pass_required")
		want(t, h.do(t, "POST", "/api/v1/holds", toks[first], buyNow, hdr...), 403, "queue_pass_required")
	}
	if got := h.available(t, "DROP"); got != 2 {
		t.Fatalf("available after refusals: got %v, want 2", got)
	}
	r = h.do(t, "POST", "/api/v1/checkout", toks[first], buyNow, "Queue-Pass", passes[first], "Idempotency-Key", "q-1")
	want(t, r, 201, "")
	orderID := r.json(t)["id"]
	// The same request again under its key is the same order, though the pass is spent.
	r = h.do(t, "POST", "/api/v1/checkout", toks[first], buyNow, "Queue-Pass", passes[first], "Idempotency-Key", "q-1")
	want(t, r, 201, "")
	if r.json(t)["id"] != orderID || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: got %s", r.body)
	}
	want(t, h.do(t, "POST", "/api/v1/checkout", toks[first], buyNow, "Queue-Pass", passes[first]), 403, "queue_pass_required")
	want(t, h.do(t, "GET", "/api/v1/queue/DROP", toks[first], ""), 404, "not_found")
	want(t, h.do(t, "POST", "/api/v1/holds", toks[second], buyNow, "Queue-Pass", passes[second]), 201, "")

	// Sold out: the one still waiting is told so.
	r = h.do(t, "GET", "/api/v1/queue/DROP", toks[waiting], "")
	want(t, r, 200, "")
	if r.json(t)["status"] != "sold_out" {
		t.Fatalf("waiting buyer after the sell-out: got %s", r.body)
	}

	out := h.do(t, "GET", "/metrics", "", "")
	want(t, out, 200, "")
	for _, line := range []string{`flashstock_queue_admitted_total{sku="DROP"} 2`,
		`flashstock_queue_passes_total{outcome="used",sku="DROP"} 2`} {
		if !strings.Contains(string(out.body), line) {
			var got []string
			for l := range strings.SplitSeq(string(out.body), "\n") {
				if strings.HasPrefix(l, "flashstock_queue_") {
					got = append(got, l)
				}
			}
			t.Errorf("metrics lack %q; queue metrics: %q", line, got)
		}
	}
}

// waitingRoom input: bounds and types are validation_failed and change nothing;
// disabling the room lifts the pass requirement.
func TestWaitingRoomValidation(t *testing.T) {
	h := newHarness(t, api.Config{})
	admin := token(t, "root", api.RoleAdmin)
	for _, room := range []string{`{"enabled":true}`, `{"enabled":true,"admitPerMinute":0}`,
		`{"enabled":true,"admitPerMinute":1000001}`, `{"enabled":false,"admitPerMinute":-1}`, `{"admitPerMinute":5}`,
		`{"enabled":"yes","admitPerMinute":5}`, `{"enabled":true,"admitPerMinute":5,"extra":1}`, `true`} {
		body := `{"sku":"V","name":"V","price":1,"currency":"USD","stock":1,"waitingRoom":` + room + `}`
		want(t, h.do(t, "POST", "/api/v1/products", admin, body), 400, "validation_failed")
	}
	want(t, h.do(t, "GET", "/api/v1/products/V", admin, ""), 404, "not_found")
	h.product(t, "V", 1, "")
	r := h.do(t, "GET", "/api/v1/products/V", admin, "")
	if room := r.json(t)["waitingRoom"].(map[string]any); room["enabled"] != false || room["admitPerMinute"] != 0.0 {
		t.Fatalf("default waitingRoom: got %v", room)
	}
	want(t, h.do(t, "PATCH", "/api/v1/products/V", admin, `{"waitingRoom":{"enabled":true,"admitPerMinute":0}}`), 400, "validation_failed")
	cust := token(t, "c", api.RoleCustomer)
	want(t, h.do(t, "POST", "/api/v1/queue/V", cust, ""), 404, "not_found")
	want(t, h.do(t, "POST", "/api/v1/queue/bad%20sku", cust, ""), 400, "validation_failed")
	want(t, h.do(t, "PATCH", "/api/v1/products/V", admin, `{"waitingRoom":{"enabled":true,"admitPerMinute":60}}`), 200, "")
	want(t, h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"V","quantity":1}]}`), 403, "queue_pass_required")
	// The flash-sale simulation's synthetic buyers hold no passes: the run is refused.
	want(t, h.do(t, "POST", "/api/v1/carts/bulk-checkout", admin, `{"items":[{"sku":"V","quantity":1}],"buyers":3,"concurrency":2}`),
		403, "queue_pass_required")
	r = h.do(t, "PATCH", "/api/v1/products/V", admin, `{"waitingRoom":{"enabled":false}}`)
	want(t, r, 200, "")
	if room := r.json(t)["waitingRoom"].(map[string]any); room["enabled"] != false {
		t.Fatalf("disabled waitingRoom: got %v", room)
	}
	want(t, h.do(t, "POST", "/api/v1/checkout", cust, `{"items":[{"sku":"V","quantity":1}]}`), 201, "")
}

// newHarnessMetrics is newHarness with metrics served at /metrics.
func newHarnessMetrics(t *testing.T, m *metrics.Metrics) *harness {
	t.Helper()
	h := newHarness(t, api.Config{})
	h.app = api.New(h.cfg, api.Deps{Inv: h.inv, Store: h.st, Metrics: m})
	return h
}
