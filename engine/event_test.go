package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// Outbox entries outlive deploys: an entry written in format version 1 (the
// newline-joined list, before events had names) must decode to the same event as
// version 2 does.
func TestEventFormatsDecodeAlike(t *testing.T) {
	v1 := strings.Join([]string{"order", "o-1", "user 1", "1764633600123", "USD", "A:2:500:L,B:1:100", "A:7:-2:0:2,B:3:-1:0:1",
		"", "h-1", "", "", ""}, "\n")
	v2 := "2\n" + v1
	var got [2]engine.Event
	for i, raw := range []string{v1, v2} {
		evs, err := engine.DecodeEntry("1-0", map[string]any{"0": raw})
		if err != nil || len(evs) != 1 {
			t.Fatalf("format %d: %v %v", i+1, evs, err)
		}
		got[i] = evs[0]
	}
	e := got[1]
	if e.Kind != engine.EventOrder || e.ID != "o-1" || e.UserID != "user 1" || e.HoldID != "h-1" ||
		!e.At.Equal(time.UnixMilli(1764633600123)) || len(e.Items) != 2 || e.Items[0].UnitPrice != 500 ||
		len(e.Movements) != 2 || e.Movements[1].Seq != 3 || e.Movements[1].Sold != 1 || e.Movements[0].Kind != "commit" {
		t.Fatalf("version 2 decoded as %+v", e)
	}
	if got[0].At != got[1].At || got[0].ID != got[1].ID || len(got[0].Movements) != len(got[1].Movements) ||
		got[0].Movements[0] != got[1].Movements[0] || got[0].Items[1] != got[1].Items[1] {
		t.Fatalf("the formats decode differently:\n v1 %+v\n v2 %+v", got[0], got[1])
	}
	for name, raw := range map[string]string{
		"a future version":       "3\n" + v1,
		"a short version 2 list": "2\norder\no-1",
		"a short version 1 list": "order\no-1",
		"a ts that is no number": strings.Replace(v2, "1764633600123", "soon", 1),
	} {
		if _, err := engine.DecodeEntry("1-0", map[string]any{"0": raw}); err == nil {
			t.Errorf("%s decoded without an error", name)
		}
	}
}

// What the scripts write is version 2, and free text (a reason with quotes and slashes)
// comes back as it went in, on both backends.
func TestScriptsWriteNamedEvents(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 5, Price: 5})
		if _, err := inv.Adjust(ctx, engine.AdjustRequest{SKU: "A", Delta: 1, Reason: `a "quoted" / reason`, Actor: "ops"}); err != nil {
			t.Fatal(err)
		}
		msgs, err := inv.Client().XRange(ctx, inv.OutboxKey(), "-", "+").Result()
		if err != nil || len(msgs) != 2 {
			t.Fatalf("outbox: %v %v", msgs, err)
		}
		raw, _ := msgs[1].Values["0"].(string)
		if !strings.HasPrefix(raw, "2\nadjust\n") {
			t.Fatalf("event as written: %s", raw)
		}
		evs := checkLedger(t, inv)
		if last := evs[len(evs)-1]; last.Reason != `a "quoted" / reason` || last.Actor != "ops" || last.SKU != "A" {
			t.Fatalf("decoded: %+v", last)
		}
	})
}

// Order records written before records had names (version 1, newline-joined) are still
// read, replayed and cancelled, on both backends.
func TestVersionOneOrderRecordsStillWork(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "A", Stock: 10, Price: 5})
		req := engine.CheckoutRequest{UserID: "u 1", IdempotencyKey: "k", Lines: []engine.Line{{SKU: "A", Quantity: 2}}}
		o, err := inv.Checkout(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		key := inv.Keys().Order(o.ID)
		raw, err := inv.Client().Get(ctx, key).Result()
		if err != nil || !strings.HasPrefix(raw, "2\nconfirmed\n") {
			t.Fatalf("record as written: %q, %v", raw, err)
		}
		v1 := strings.TrimPrefix(raw, "2\n")
		if err := inv.Client().Set(ctx, key, v1, 0).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := inv.Order(ctx, o.ID)
		if err != nil || got.UserID != "u 1" || got.Total != o.Total || !got.CreatedAt.Equal(o.CreatedAt) {
			t.Fatalf("version 1 record read as %+v, %v; want %+v", got, err, o)
		}
		if again, err := inv.Checkout(ctx, req); err != nil || !again.Replayed || again.ID != o.ID {
			t.Fatalf("replay on a version 1 record: %+v, %v", again, err)
		}
		if c, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID}); err != nil || c.Status != engine.OrderCancelled {
			t.Fatalf("cancel of a version 1 record: %+v, %v", c, err)
		}
		wantLevel(t, inv, "A", 10, 0, 0)
	})
}
