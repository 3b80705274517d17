package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashstock/flashstock/api"
	stocksync "github.com/flashstock/flashstock/sync"
)

func waitSyncedAPI(t *testing.T, sy *stocksync.Syncer) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		lag, err := sy.Lag(context.Background())
		if err == nil && lag.Total() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("syncer did not catch up: %+v, %v", lag, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Issue 10, fault 5: POST /orders/{id}/cancel after Redis has let the order go (its
// record expires 7 days after MongoDB has it) cancels from MongoDB's copy: the units
// return once, a retry replays, and another user still cannot see the order.
func TestCancelAfterTheOrderLeftRedis(t *testing.T) {
	h := newHarness(t, api.Config{})
	ctx := context.Background()
	c1 := token(t, "c1", api.RoleCustomer)
	h.product(t, "A", 10, `,"maxPerUser":5`)
	sy := h.runSyncer(t)
	r := h.do(t, "POST", "/api/v1/checkout", c1, `{"items":[{"sku":"A","quantity":4}]}`)
	want(t, r, 201, "")
	id := r.json(t)["id"].(string)
	waitSyncedAPI(t, sy)
	if err := h.rdb.Del(ctx, "fs:{0}:o:"+id).Err(); err != nil { // the record's TTL ran out
		t.Fatal(err)
	}
	h.wantCancelledOnce(t, id, c1)
	if n, _ := h.rdb.HGet(ctx, "fs:{0}:b:A", "c1").Int64(); n != 0 {
		t.Fatalf("c1's count of A after the cancel: got %d, want 0", n)
	}
	// The limit counts again from zero: five units fit.
	want(t, h.do(t, "POST", "/api/v1/checkout", c1, `{"items":[{"sku":"A","quantity":5}]}`), 201, "")
}
