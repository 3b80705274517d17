package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/webhook"
)

func TestSubscriptionsCreateListDelete(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))

	a := mustSubscribe(t, s, "https://a.example.com/hook", webhook.OrderConfirmed, webhook.SoldOut, webhook.OrderConfirmed)
	clk.Add(time.Second)
	b := mustSubscribe(t, s, "http://b.example.com/", webhook.LowStock)
	if !strings.HasPrefix(a.Secret, "whsec_") || a.Secret == b.Secret || a.ID == b.ID {
		t.Fatalf("secrets %q %q, ids %q %q: want distinct whsec_ secrets and ids", a.Secret, b.Secret, a.ID, b.ID)
	}
	if len(a.Events) != 2 {
		t.Fatalf("events: got %v, want duplicates dropped", a.Events)
	}
	list, err := s.Subscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID || list[0].URL != a.URL || !list[1].CreatedAt.Equal(b.CreatedAt) {
		t.Fatalf("list: got %+v, want a then b", list)
	}
	for _, sub := range list {
		if sub.Secret != "" {
			t.Fatalf("list shows a secret: %+v", sub)
		}
	}
	if err := s.DeleteSubscription(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubscription(ctx, a.ID); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("delete again: got %v, want ErrNotFound", err)
	}
	if list, _ = s.Subscriptions(ctx); len(list) != 1 || list[0].ID != b.ID {
		t.Fatalf("after delete: got %+v, want only b", list)
	}

	for name, req := range map[string]webhook.NewSubscription{
		"no events":     {URL: "https://x.example.com/", Events: nil},
		"unknown event": {URL: "https://x.example.com/", Events: []string{"order.shipped"}},
		"ftp":           {URL: "ftp://x.example.com/", Events: []string{webhook.SoldOut}},
		"no host":       {URL: "https:///path", Events: []string{webhook.SoldOut}},
		"credentials":   {URL: "https://u:p@x.example.com/", Events: []string{webhook.SoldOut}},
		"long desc":     {URL: "https://x.example.com/", Events: []string{webhook.SoldOut}, Description: strings.Repeat("x", 501)},
	} {
		var ve *engine.ValidationError
		if _, err := s.CreateSubscription(ctx, req); !errors.As(err, &ve) || !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("%s: got %v, want a validation error", name, err)
		}
	}
}

func TestSecretsAreNotStoredInTheClear(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := testmongo.Database(t)
	s := mustService(t, db, testConfig(t, clk))
	sub := mustSubscribe(t, s, "https://a.example.com/hook")
	raw, err := db.Collection("webhook_subscriptions").FindOne(ctx, bson.M{"_id": sub.ID}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sub.Secret, "whsec_"))
	b64 := strings.TrimPrefix(sub.Secret, "whsec_")
	if bytes.Contains(raw, key) || bytes.Contains(raw, []byte(b64)) || bytes.Contains(raw, []byte(b64[:16])) {
		t.Fatalf("the stored document holds the secret: %s", raw.String())
	}
	if v, err := raw.LookupErr("secret"); err != nil || !strings.HasPrefix(v.StringValue(), "v1:") {
		t.Fatalf("stored secret: got %v (%v), want a sealed v1 value", v, err)
	}
	// Another key cannot use it: signing needs the key as well as the database.
	other := mustService(t, db, testConfig(t, clk))
	r := newReceiver(t, clk, nil)
	if _, err := db.Collection("webhook_subscriptions").UpdateOne(ctx, bson.M{"_id": sub.ID}, bson.M{"$set": bson.M{"url": r.URL()}}); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, other, orderEvents(clk, 1)...)
	round(t, webhook.NewWorker(other, webhook.WorkerConfig{}))
	if r.total() != 0 {
		t.Fatal("a service with another key delivered")
	}
	for _, d := range mustDeliveries(t, other, sub.ID) {
		if d.Status != webhook.StatusPending || !strings.Contains(d.LastError, "key") {
			t.Fatalf("delivery: got %+v, want pending with an error about the key", d)
		}
	}
}

func TestRewrapMovesSecretsToTheNewKey(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	db := testmongo.Database(t)
	oldKey, newKey := make([]byte, 32), make([]byte, 32)
	newKey[31] = 7
	oldRing, _ := webhook.NewKeyring(oldKey)
	cfg := testConfig(t, clk)
	cfg.Keys = oldRing
	s := mustService(t, db, cfg)
	r := newReceiver(t, clk, nil)
	sub := mustSubscribe(t, s, r.URL())
	r.setSecret(sub.Secret)

	rotating, _ := webhook.NewKeyring(newKey, oldKey)
	cfg.Keys = rotating
	s2 := mustService(t, db, cfg)
	if n, err := s2.Rewrap(ctx); err != nil || n != 1 {
		t.Fatalf("rewrap: got %d, %v; want 1", n, err)
	}
	if n, err := s2.Rewrap(ctx); err != nil || n != 0 {
		t.Fatalf("rewrap again: got %d, %v; want 0", n, err)
	}
	newOnly, _ := webhook.NewKeyring(newKey)
	cfg.Keys = newOnly
	s3 := mustService(t, db, cfg)
	mustEnqueue(t, s3, orderEvents(clk, 1)...)
	round(t, webhook.NewWorker(s3, webhook.WorkerConfig{}))
	if _, oks, bad := r.counts(); len(oks) != 1 || len(bad) != 0 {
		t.Fatalf("after rotation: delivered %v, refused %v; want one delivery with the same secret", oks, bad)
	}
}

// Enqueue handed the same events again (the outbox redelivers an entry whose
// acknowledgement was lost) adds nothing.
func TestEnqueueIsIdempotentAndDeliveriesListNewestFirst(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	orders := mustSubscribe(t, s, "https://a.example.com/hook", webhook.OrderConfirmed)
	stock := mustSubscribe(t, s, "https://b.example.com/hook", webhook.SoldOut)
	evs := orderEvents(clk, 5)
	for i := range evs {
		mustEnqueue(t, s, evs[i])
		clk.Add(time.Second)
		mustEnqueue(t, s, evs[i]) // handed again (a lost acknowledgement), later: nothing new
	}
	ds, err := s.Deliveries(ctx, orders.ID, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 {
		t.Fatalf("limit 3: got %d deliveries", len(ds))
	}
	for i, d := range ds {
		want := evs[4-i]
		if d.EventID != want.ID || d.Type != webhook.OrderConfirmed || d.Status != webhook.StatusPending || d.Attempts != 0 ||
			d.NextAttemptAt == nil || d.DeliveredAt != nil {
			t.Fatalf("delivery %d: got %+v, want pending %s", i, d, want.ID)
		}
	}
	if all := mustDeliveries(t, s, orders.ID); len(all) != 5 {
		t.Fatalf("deliveries: got %d, want 5 (one per event)", len(all))
	}
	if other := mustDeliveries(t, s, stock.ID); len(other) != 0 {
		t.Fatalf("a sold_out subscription got %d order deliveries", len(other))
	}
	if _, err := s.Deliveries(ctx, "wh_nope", 10); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("unknown subscription: got %v, want ErrNotFound", err)
	}
}
