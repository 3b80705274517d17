package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// FuzzFastItems: whatever the fast parser accepts, encoding/json (the strict decoder it
// stands in for) decodes to the same lines.
func FuzzFastItems(f *testing.F) {
	for _, s := range []string{
		`{"items":[{"sku":"A","quantity":1}]}`, ` { "items" : [ {"sku":"A-1.x_2","quantity":12} , {"sku":"B","quantity":3} ] } `,
		`{"items":null}`, `{"items":[]}`, `{"Items":[{"sku":"A","quantity":1}]}`, `{"items":[{"sku":"A","quantity":1.0}]}`,
		`{"items":[{"sku":"A","quantity":01}]}`, `{"items":[{"sku":"\u0041","quantity":1}]}`, `{"items":[{"quantity":1,"sku":"A"}]}`,
		`{"items":[{"sku":"A","quantity":1}]}x`, `{"items":[{"sku":"A","quantity":99999999999999999999}]}`, `{"items":[{"sku":"A","quantity":-1}]}`,
		`{"items":[{"sku":"A","quantity":1}],"items":[]}`, `{"items":[{"sku":"A","quantity":1e3}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		lines, present, ok := parseItems(body)
		if !ok {
			return
		}
		var in itemsInput
		if _, err := decodeStrict(body, &in, true); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", body, err)
		}
		if present != (in.Items != nil) {
			t.Fatalf("%q: present %v, encoding/json %v", body, present, in.Items != nil)
		}
		if present && !reflect.DeepEqual(lines, *in.Items) {
			t.Fatalf("%q: fast %v, encoding/json %v", body, lines, *in.Items)
		}
	})
}

// The fast path must take the bodies clients send, or it is no faster.
func TestFastItemsTakesPlainBodies(t *testing.T) {
	for _, s := range []string{`{"items":[{"sku":"A","quantity":1}]}`, "{\n  \"items\": [ {\"sku\": \"B-2\", \"quantity\": 1000} ]\n}\n"} {
		if _, present, ok := parseItems([]byte(s)); !ok || !present {
			t.Errorf("%q declined", s)
		}
	}
}

func TestAppendOrderMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 26, 13, 4, 5, 123456789, time.UTC)
	for _, o := range []engine.Order{
		{ID: "o1", UserID: "u1", Items: []engine.Item{{SKU: "A", Quantity: 2, UnitPrice: 1999}, {SKU: "B", Quantity: 1}},
			Total: 3998, Currency: "USD", Status: engine.OrderConfirmed, CreatedAt: at},
		{ID: "o2", UserID: `we<ird>&"user"\é`, Items: []engine.Item{}, Status: engine.OrderCancelled, CreatedAt: at.Truncate(time.Second), HoldID: "h1"},
		{ID: "o3", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))},
		{},
	} {
		want, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendOrder(nil, &o); !bytes.Equal(got, want) {
			t.Errorf("order\n got %s\nwant %s", got, want)
		}
	}
}

func TestAppendProblemMatchesEncodingJSON(t *testing.T) {
	for _, p := range []Problem{
		{Type: "https://flashstock.dev/problems/out_of_stock", Title: "Conflict", Status: 409, Detail: "not enough stock for every line",
			Code: "out_of_stock", Items: []engine.Shortage{{SKU: "A", Requested: 2, Available: 1}, {SKU: "B", Requested: 1}}, RequestID: "r-1"},
		{Type: "t", Title: "Bad Request", Status: 400, Detail: `sku: must match [A-Za-z0-9._-] & be <64 "chars"`, Code: "validation_failed", Field: "items[0].sku"},
		{Status: 500, Code: "internal"},
	} {
		want, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendProblem(nil, &p); !bytes.Equal(got, want) {
			t.Errorf("problem\n got %s\nwant %s", got, want)
		}
	}
}
