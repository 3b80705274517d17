package loadgen

import (
	"reflect"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/flashstock/flashstock/engine"
)

// Server answers as the driver reads them: orders and holds by id, refusals by the
// problem's code with the short lines, everything else a failure.
func TestAnswer(t *testing.T) {
	h := &HTTP{}
	for _, tc := range []struct {
		name    string
		status  int
		body    string
		outcome Outcome
		reason  string
		id      string
		short   []engine.Shortage
	}{
		{"order", 201, `{"id":"o-1","userId":"u","items":[{"sku":"A","quantity":1,"unitPrice":1999}],"total":1999,"status":"confirmed"}`, OK, "", "o-1", nil},
		{"order, id not first", 200, `{"status":"held","id":"h-2"}`, OK, "", "h-2", nil},
		{"order without id", 201, `{"status":"confirmed"}`, Failed, "bad_body", "", nil},
		{"not JSON", 201, `<html>`, Failed, "bad_body", "", nil},
		{"out of stock", 409, `{"type":"t","title":"Conflict","status":409,"detail":"d","code":"out_of_stock","items":[{"sku":"A","requested":2,"available":0},{"sku":"B","requested":1,"available":-3}],"requestId":"r"}`,
			Refused, "out_of_stock", "", []engine.Shortage{{SKU: "A", Requested: 2}, {SKU: "B", Requested: 1, Available: -3}}},
		{"fields in another order", 409, `{"items":[{"available":0,"sku":"A","requested":2}],"code":"out_of_stock"}`,
			Refused, "out_of_stock", "", []engine.Shortage{{SKU: "A", Requested: 2}}},
		{"rate limited", 429, `{"type":"t","title":"Too Many Requests","status":429,"code":"rate_limited","requestId":"r"}`, Refused, "rate_limited", "", nil},
		{"escaped code", 409, `{"code":"out_of_stock\u0021"}`, Failed, "out_of_stock!", "", nil},
		{"contract error that is no refusal", 503, `{"code":"outcome_unknown"}`, Failed, "outcome_unknown", "", nil},
		{"no problem body", 502, `Bad Gateway`, Failed, "502", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := h.answer(tc.status, []byte(tc.body), nil)
			if a.Outcome != tc.outcome || a.Reason != tc.reason || a.ID != tc.id || !reflect.DeepEqual(a.Short, tc.short) {
				t.Fatalf("got %v %q id %q short %v; want %v %q id %q short %v", a.Outcome, a.Reason, a.ID, a.Short, tc.outcome, tc.reason, tc.id, tc.short)
			}
			if a.Outcome == Failed && a.Err == nil {
				t.Fatal("a failure without its cause")
			}
		})
	}
	if a := h.answer(0, nil, fasthttp.ErrTimeout); a.Outcome != Failed || a.Reason != "timeout" {
		t.Fatalf("timeout: got %v %q", a.Outcome, a.Reason)
	}
}

func TestItemsBody(t *testing.T) {
	got := string(itemsBody([]engine.Line{{SKU: "A-1", Quantity: 2}, {SKU: "B", Quantity: 1}}))
	if want := `{"items":[{"sku":"A-1","quantity":2},{"sku":"B","quantity":1}]}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// The driver reads one answer per attempt; a sold-out storm is all refusals.
// go test -run '^$' -bench Answer ./loadgen/
func BenchmarkAnswer(b *testing.B) {
	h := &HTTP{}
	order := []byte(`{"id":"01JDX3Q7ZK8M2N4P6R8T0V2X4Z","userId":"bench-17","items":[{"sku":"B1abc-hot","quantity":1,"unitPrice":1999}],"total":1999,"currency":"USD","status":"confirmed","createdAt":"2026-11-26T14:56:01.123Z"}`)
	problem := []byte(`{"type":"https://flashstock.dev/problems/out_of_stock","title":"Conflict","status":409,"detail":"not enough stock","code":"out_of_stock","items":[{"sku":"B1abc-storm","requested":1,"available":0}],"requestId":"7f3a-12"}`)
	b.Run("order", func(b *testing.B) {
		for b.Loop() {
			if h.answer(201, order, nil).Outcome != OK {
				b.Fatal("not OK")
			}
		}
	})
	b.Run("out_of_stock", func(b *testing.B) {
		for b.Loop() {
			if h.answer(409, problem, nil).Outcome != Refused {
				b.Fatal("not refused")
			}
		}
	})
}
