package api_test

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/api"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/internal/testredis"
	"github.com/flashstock/flashstock/store"
)

// faultHarness is an app whose Redis client gives up on a reply after readTimeout and
// whose requests end after requestTimeout, on a redis-server the test can pause.
func faultHarness(t *testing.T, readTimeout, requestTimeout time.Duration) *harness {
	t.Helper()
	srv, _ := testredis.Start(t)
	rdb := redis.NewClient(engine.NoRetries(&redis.Options{Addr: srv.Addr, ReadTimeout: readTimeout,
		WriteTimeout: readTimeout, PoolSize: 32}))
	t.Cleanup(func() { rdb.Close() })
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	st := store.New(testmongo.Database(t))
	cfg := api.Config{JWTSecret: secret, JWTIssuer: issuer, RequestTimeout: requestTimeout}
	app := api.New(cfg, api.Deps{Inv: inv, Store: st})
	t.Cleanup(func() { _ = syscall.Kill(srv.Pid(), syscall.SIGCONT) })
	return &harness{app: app, inv: inv, st: st, rdb: rdb, srv: srv, cfg: cfg}
}

func (h *harness) pause(t *testing.T, d time.Duration) {
	t.Helper()
	if err := syscall.Kill(h.srv.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	if err := syscall.Kill(h.srv.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// Keyless checkouts over HTTP while Redis stops answering for five read timeouts: no
// order is applied twice (sold == orders that exist), every 201 is an order, and
// nothing is answered 500 or "not applied" for a request that may have been applied.
func TestRedisPausedDuringKeylessCheckouts(t *testing.T) {
	h := faultHarness(t, 200*time.Millisecond, 2*time.Second)
	h.product(t, "HOT", 100_000, "")
	const buyers, each = 32, 30
	var mu sync.Mutex
	count := map[string]int{}
	started := make(chan struct{}, buyers*each)
	var wg sync.WaitGroup
	for b := range buyers {
		wg.Go(func() {
			tok := token(t, "buyer-"+itoa(b), api.RoleCustomer)
			for range each {
				started <- struct{}{}
				r := h.do(t, "POST", "/api/v1/checkout", tok, `{"items":[{"sku":"HOT","quantity":1}]}`)
				key := itoa(r.status)
				if r.status != 201 {
					key += " " + r.code(t)
					if r.header.Get("Retry-After") == "" {
						t.Errorf("%d %s without Retry-After", r.status, key)
					}
				}
				mu.Lock()
				count[key]++
				mu.Unlock()
			}
		})
	}
	for range buyers * each / 4 {
		<-started
	}
	h.pause(t, time.Second)
	go func() {
		for range started {
		}
	}()
	wg.Wait()
	close(started)

	ctx := context.Background()
	orders := 0
	iter := h.rdb.Scan(ctx, 0, "fs:{0}:o:*", 1000).Iterator()
	for iter.Next(ctx) {
		orders++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	lv, err := h.inv.Levels(ctx, []string{"HOT"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("answers %v; %d orders exist, %d sold", count, orders, lv[0].Sold)
	for k := range count {
		if k != "201" && k != "503 outcome_unknown" && k != "503 unavailable" {
			t.Errorf("answer %q: want only 201, 503 outcome_unknown or 503 unavailable", k)
		}
	}
	if int(lv[0].Sold) != orders {
		t.Fatalf("sold %d units for %d orders", lv[0].Sold, orders)
	}
	if orders < count["201"] || orders > count["201"]+count["503 outcome_unknown"] {
		t.Fatalf("%d orders exist for %d answered 201 and %d outcome_unknown", orders, count["201"], count["503 outcome_unknown"])
	}
	if count["503 outcome_unknown"] == 0 {
		t.Fatal("no request met the fault: the test did not exercise a lost reply")
	}
}

// A keyed checkout answered outcome_unknown is resolved by retrying with its key: the
// retry finds the order Redis applied after all, and nothing is sold twice.
func TestOutcomeUnknownIsResolvedByRetryingWithTheKey(t *testing.T) {
	h := faultHarness(t, 5*time.Second, 300*time.Millisecond)
	h.product(t, "A", 10, "")
	tok := token(t, "u1", api.RoleCustomer)
	body := `{"items":[{"sku":"A","quantity":2}]}`
	done := make(chan resp, 1)
	if err := syscall.Kill(h.srv.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	go func() { done <- h.do(t, "POST", "/api/v1/checkout", tok, body, "Idempotency-Key", "k-1") }()
	r := <-done
	if err := syscall.Kill(h.srv.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	want(t, r, 503, "outcome_unknown")
	if r.header.Get("Retry-After") == "" || !strings.Contains(string(r.body), "Idempotency-Key") {
		t.Fatalf("outcome_unknown must say how to learn the outcome: %s %v", r.body, r.header)
	}
	// Redis runs what it was sent once it resumes; wait for that, so that the retry
	// below meets the order (a retry that got there first would simply be the sale).
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := h.inv.Order(context.Background(), engine.OrderIDForKey("u1", "k-1")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first request never ran: the test did not exercise a lost reply")
		}
		time.Sleep(5 * time.Millisecond)
	}
	again := h.do(t, "POST", "/api/v1/checkout", tok, body, "Idempotency-Key", "k-1")
	want(t, again, 201, "")
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the retry created a new order instead of finding the first: %s", again.body)
	}
	if got := h.available(t, "A"); got != 8 {
		t.Fatalf("available: got %v, want 8", got)
	}
}

func TestNumbersOutOfBoundsAreValidationFailed(t *testing.T) {
	h := newHarness(t, api.Config{})
	h.product(t, "A", 10, "")
	admin := token(t, "root", api.RoleAdmin)
	for _, tc := range []struct{ name, method, path, body string }{
		{"delta 1e14", "POST", "/api/v1/inventory/A/adjustments", `{"delta":100000000000000,"reason":"x"}`},
		{"delta beyond int64", "POST", "/api/v1/inventory/A/adjustments", `{"delta":100000000000000000000,"reason":"x"}`},
		{"delta in exponent form", "POST", "/api/v1/inventory/A/adjustments", `{"delta":1e3,"reason":"x"}`},
		{"level above 1e9", "PUT", "/api/v1/inventory/A", `{"available":1000000001,"expectedVersion":1}`},
		{"stock above 1e9", "POST", "/api/v1/products", `{"sku":"B","name":"B","price":1,"currency":"USD","stock":1000000001}`},
		{"price above 1e12", "POST", "/api/v1/products", `{"sku":"B","name":"B","price":1000000000001,"currency":"USD","stock":1}`},
		{"price patch above 1e12", "PATCH", "/api/v1/products/A", `{"price":1000000000001}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want(t, h.do(t, tc.method, tc.path, admin, tc.body, "Idempotency-Key", "k-"+tc.name[:5]), 400, "validation_failed")
			if got := h.available(t, "A"); got != 10 {
				t.Fatalf("available: got %v, want 10", got)
			}
		})
	}
	want(t, h.do(t, "GET", "/api/v1/products/B", admin, ""), 404, "not_found")
}
