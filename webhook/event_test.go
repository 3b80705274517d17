package webhook_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/webhook"
)

func types(evs []webhook.Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func TestStockEventsFireOnTheCrossingOnly(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name          string
		before, after int64
		threshold     int64
		want          []string
	}{
		{"above to above", 20, 10, 5, []string{}},
		{"above to threshold", 6, 5, 5, []string{webhook.LowStock}},
		{"above to below", 8, 2, 5, []string{webhook.LowStock}},
		{"below to below", 4, 2, 5, []string{}},
		{"threshold to below", 5, 4, 5, []string{}},
		{"below to zero", 3, 0, 5, []string{webhook.SoldOut}},
		{"above to zero", 20, 0, 5, []string{webhook.LowStock, webhook.SoldOut}},
		{"zero to zero", 0, 0, 5, []string{}},
		{"zero to below", 0, 3, 5, []string{webhook.BackInStock}},
		{"zero to above", 0, 30, 5, []string{webhook.BackInStock}},
		{"below to above", 2, 30, 5, []string{}},
		{"threshold 0, to zero", 3, 0, 0, []string{webhook.SoldOut}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := webhook.LevelChange{SKU: "TV", Seq: 7, AvailableBefore: tc.before, Available: tc.after, Reserved: 1, Sold: 9, Version: 7}
			got := types(webhook.StockEvents(c, tc.threshold, at))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("%d -> %d (threshold %d): got %v, want %v", tc.before, tc.after, tc.threshold, got, tc.want)
			}
		})
	}
}

func TestDeriveIsDeterministicAndKeyedByIdentity(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	order := engine.Event{Kind: engine.EventOrder, ID: "o1", UserID: "u1", At: at, Currency: "EUR",
		Items:     []engine.Item{{SKU: "TV", Quantity: 2, UnitPrice: 100}},
		Movements: []engine.Movement{{SKU: "TV", Seq: 11, Available: -8, Sold: 8}}}
	changes := []webhook.LevelChange{webhook.ChangeOf(order.Movements[0], engine.Level{SKU: "TV", Available: 0, Sold: 20, Version: 11})}
	a := webhook.Derive(webhook.Source{Event: order, Changes: changes}, 5)
	b := webhook.Derive(webhook.Source{Event: order, Changes: changes}, 5)
	if got, want := types(a), []string{webhook.OrderConfirmed, webhook.LowStock, webhook.SoldOut}; !slices.Equal(got, want) {
		t.Fatalf("types: got %v, want %v", got, want)
	}
	seen := map[string]bool{}
	for i := range a {
		if a[i].ID != b[i].ID {
			t.Fatalf("event %d: ids %s and %s differ between two derivations", i, a[i].ID, b[i].ID)
		}
		if seen[a[i].ID] {
			t.Fatalf("id %s twice", a[i].ID)
		}
		seen[a[i].ID] = true
		ba, _ := a[i].Body()
		bb, _ := b[i].Body()
		if string(ba) != string(bb) {
			t.Fatalf("bodies differ: %s and %s", ba, bb)
		}
	}
	if a[0].ID != webhook.EventID(webhook.OrderConfirmed, "o1") {
		t.Fatalf("order id: got %s, want the id of (order.confirmed, o1)", a[0].ID)
	}
	// The same crossing on another movement is another event.
	other := webhook.StockEvents(webhook.LevelChange{SKU: "TV", Seq: 12, AvailableBefore: 2, Available: 0}, 5, at)
	if len(other) != 1 || other[0].ID == a[2].ID {
		t.Fatalf("sold_out of seq 12: got %+v, want one event with an id other than seq 11's", other)
	}

	var body struct {
		Type      string            `json:"type"`
		Timestamp time.Time         `json:"timestamp"`
		Data      webhook.StockData `json:"data"`
	}
	raw, err := a[2].Body()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	want := webhook.StockData{SKU: "TV", Available: 0, Reserved: 0, Sold: 20, Version: 11}
	if body.Type != webhook.SoldOut || !body.Timestamp.Equal(at) || body.Data != want {
		t.Fatalf("body: got %s, want sold_out at %v with %+v", raw, at, want)
	}
}

func TestDeriveOrderAndHoldData(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	items := []engine.Item{{SKU: "TV", Quantity: 2, UnitPrice: 100}}
	confirmed := webhook.Derive(webhook.Source{Event: engine.Event{Kind: engine.EventOrder, ID: "o1", UserID: "u1", At: at,
		Currency: "EUR", Items: items}}, 5)
	o, ok := confirmed[0].Data.(engine.Order)
	if !ok || o.ID != "o1" || o.Total != 200 || o.Status != engine.OrderConfirmed || o.Currency != "EUR" {
		t.Fatalf("order.confirmed data: got %+v", confirmed[0].Data)
	}

	cancel := engine.Event{Kind: engine.EventCancel, ID: "o1", UserID: "u1", At: at,
		Movements: []engine.Movement{{SKU: "TV", Seq: 12, Available: 2, Sold: -2}}}
	c := webhook.Derive(webhook.Source{Event: cancel}, 5)
	o = c[0].Data.(engine.Order)
	if c[0].Type != webhook.OrderCancelled || o.Status != engine.OrderCancelled || len(o.Items) != 1 || o.Items[0].Quantity != 2 {
		t.Fatalf("order.cancelled from the event alone: got %+v", c[0])
	}
	stored := engine.Order{ID: "o1", UserID: "u1", Items: items, Total: 200, Currency: "EUR", Status: engine.OrderConfirmed}
	c = webhook.Derive(webhook.Source{Event: cancel, Order: &stored}, 5)
	if o = c[0].Data.(engine.Order); o.Total != 200 || o.Status != engine.OrderCancelled {
		t.Fatalf("order.cancelled with the stored order: got %+v", o)
	}

	exp := webhook.Derive(webhook.Source{Event: engine.Event{Kind: engine.EventExpire, ID: "h1", At: at, Items: items}}, 5)
	if h, ok := exp[0].Data.(webhook.HoldData); len(exp) != 1 || exp[0].Type != webhook.HoldExpired || !ok || h.ID != "h1" || len(h.Items) != 1 {
		t.Fatalf("hold.expired: got %+v", exp)
	}
	for _, kind := range []string{engine.EventHold, engine.EventRelease, engine.EventAdjust} {
		if got := webhook.Derive(webhook.Source{Event: engine.Event{Kind: kind, ID: "x", At: at}}, 5); len(got) != 0 {
			t.Fatalf("%s without level changes: got %v, want no events", kind, types(got))
		}
	}
}
