package sync_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	gosync "sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/flashstock/flashstock/engine"
	stocksync "github.com/flashstock/flashstock/sync"
	"github.com/flashstock/flashstock/webhook"
)

// A receiver that verifies every delivery with the Standard Webhooks reference library
// and counts events by webhook-id and type.
type hookReceiver struct {
	mu     gosync.Mutex
	secret string
	ids    map[string]int             // deliveries per webhook-id
	orders map[string]map[string]bool // order id -> the event types seen for it
	skus   map[string]map[string]int  // sku -> inventory event type -> deliveries
	bad    []string
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	wh, err := standardwebhooks.NewWebhook(r.secret)
	if err == nil {
		err = wh.Verify(body, req.Header)
	}
	if err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			ID  string `json:"id"`
			SKU string `json:"sku"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.ids[req.Header.Get("webhook-id")]++
	if ev.Data.SKU != "" {
		if r.skus[ev.Data.SKU] == nil {
			r.skus[ev.Data.SKU] = map[string]int{}
		}
		r.skus[ev.Data.SKU][ev.Type]++
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.orders[ev.Data.ID] == nil {
		r.orders[ev.Data.ID] = map[string]bool{}
	}
	r.orders[ev.Data.ID][ev.Type] = true
	w.WriteHeader(http.StatusNoContent)
}

// Orders confirmed and cancelled, and a SKU's crossings (low stock, sold out, back in
// stock), reach a subscribed receiver signed, each event once under its webhook-id,
// through the feeder (its own consumer group) and the delivery worker. The crossings
// come from the levels the outbox entries carry.
func TestOutboxEventsReachWebhookReceivers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys, err := webhook.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := webhook.New(e.st.Database(), webhook.Config{Keys: keys, Guard: webhook.Guard{AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	recv := &hookReceiver{ids: map[string]int{}, orders: map[string]map[string]bool{}, skus: map[string]map[string]int{}}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	sub, err := svc.CreateSubscription(ctx, webhook.NewSubscription{URL: srv.URL,
		Events: []string{webhook.OrderConfirmed, webhook.OrderCancelled, webhook.SoldOut, webhook.BackInStock, webhook.LowStock}})
	if err != nil {
		t.Fatal(err)
	}
	recv.mu.Lock()
	recv.secret = sub.Secret
	recv.mu.Unlock()

	e.product(t, "A", 20)
	runCtx, stop := context.WithCancel(ctx)
	var wg gosync.WaitGroup
	feeder := stocksync.NewFeeder(e.inv, svc, nil)
	feeder.Block = 50 * time.Millisecond
	feeder.LowStock = 5
	wg.Go(func() { _ = feeder.Run(runCtx) })
	wg.Go(func() { _ = webhook.NewWorker(svc, webhook.WorkerConfig{PollEvery: 50 * time.Millisecond}).Run(runCtx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	waitFor(t, func() bool { // the feeder's group exists before the first sale
		groups, _ := e.rdb.XInfoGroups(ctx, e.inv.OutboxKey()).Result()
		return len(groups) > 0
	})

	ids := e.buy(t, 20, "A")
	if _, err := e.inv.Cancel(ctx, engine.CancelRequest{OrderID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	// 20 sales sell A out (low stock at 5 left, sold out at 0), the cancel brings one
	// unit back: 20 confirmations, 1 cancellation, 3 crossings.
	waitFor(t, func() bool {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		return len(recv.ids) == 24
	})
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.bad) > 0 {
		t.Fatalf("deliveries that failed verification: %v", recv.bad)
	}
	for _, id := range ids[1:] {
		if got := recv.orders[id]; len(got) != 1 || !got[webhook.OrderConfirmed] {
			t.Fatalf("order %s: events %v, want order.confirmed alone", id, got)
		}
	}
	if got := recv.orders[ids[0]]; len(got) != 2 || !got[webhook.OrderConfirmed] || !got[webhook.OrderCancelled] {
		t.Fatalf("cancelled order: events %v, want order.confirmed and order.cancelled", got)
	}
	if got := recv.skus["A"]; len(got) != 3 || got[webhook.LowStock] != 1 || got[webhook.SoldOut] != 1 || got[webhook.BackInStock] != 1 {
		t.Fatalf("inventory events of A: %v, want low_stock, sold_out and back_in_stock once each", got)
	}
	for id, n := range recv.ids {
		if n != 1 {
			t.Fatalf("event %s delivered %d times to a receiver that always answered 204", id, n)
		}
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
