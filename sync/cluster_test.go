package sync_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	gosync "sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/store"
	stocksync "github.com/flashstock/flashstock/sync"
)

// clusterShop is an inventory on a real Redis Cluster with SKUs in groups: each group's
// SKUs share a partition, so a cart of one group is a single-partition cart.
type clusterShop struct {
	c      *testcluster.Cluster
	inv    *engine.Redis
	st     *store.Store
	groups [][]string
	stock  int64

	mu       gosync.Mutex
	orders   map[string][]engine.Line // acknowledged, by id
	canceled map[string]bool
	received map[string]int64 // initial stock plus acknowledged restocks
	short    int              // refusals for want of stock (each checked against its shortage)
	busy     int              // ErrStockBusy answers (stock held by in-flight attempts past the wait), retried
}

func newClusterShop(t *testing.T, opts engine.Options, groups, perGroup int, stock int64) *clusterShop {
	t.Helper()
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	inv := engine.NewRedis(c.Client(), opts)
	t.Cleanup(inv.Close)
	st := store.New(testmongo.Database(t))
	if err := st.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	s := &clusterShop{c: c, inv: inv, st: st, stock: stock, orders: map[string][]engine.Line{},
		canceled: map[string]bool{}, received: map[string]int64{}}
	parts := map[int]bool{}
	for g := range groups {
		var skus []string
		for i := range perGroup {
			sku := fmt.Sprintf("G%d-%d", g, i)
			p := store.Product{SKU: sku, Name: sku, Price: 100, Currency: "USD"}
			if err := st.PutProduct(ctx, p); err != nil {
				t.Fatal(err)
			}
			ep := p.EngineProduct(stock)
			ep.Group = fmt.Sprintf("g%d", g)
			if err := retryUnknown(func() error { _, err := inv.CreateProduct(ctx, ep); return err }); err != nil &&
				!errors.Is(err, engine.ErrAlreadyExists) { // a retry of a creation that was applied
				t.Fatalf("create %s: %v", sku, err)
			}
			s.received[sku] = stock
			skus = append(skus, sku)
		}
		p, err := inv.PartitionOf(ctx, skus[0])
		if err != nil {
			t.Fatal(err)
		}
		parts[p] = true
		s.groups = append(s.groups, skus)
	}
	if len(parts) < 3 {
		t.Fatalf("%d groups landed in partitions %v, want at least 3 partitions", groups, parts)
	}
	return s
}

// cart draws 1-3 distinct SKUs of one group, 1-2 units each.
func (s *clusterShop) cart(rng *rand.Rand) []engine.Line {
	g := s.groups[rng.IntN(len(s.groups))]
	n := 1 + rng.IntN(min(3, len(g)))
	var lines []engine.Line
	for _, i := range rng.Perm(len(g))[:n] {
		lines = append(lines, engine.Line{SKU: g[i], Quantity: int64(1 + rng.IntN(2))})
	}
	return lines
}

// checkout buys lines under key, retrying an unknown outcome with the same key until it
// is known; it reports the order, or nil if refused or not applied.
func (s *clusterShop) checkout(t *testing.T, user, key string, lines []engine.Line, deadline time.Time) (*engine.Order, error) {
	for {
		o, err := s.inv.Checkout(context.Background(), engine.CheckoutRequest{UserID: user, IdempotencyKey: key, Lines: lines})
		switch {
		case err == nil:
			s.mu.Lock()
			s.orders[o.ID] = lines
			s.mu.Unlock()
			return &o, nil
		case errors.Is(err, engine.ErrOutcomeUnknown) || errors.Is(err, engine.ErrUnavailable):
			if errors.Is(err, engine.ErrStockBusy) {
				s.mu.Lock()
				s.busy++
				s.mu.Unlock()
			}
			if time.Now().After(deadline) {
				return nil, err
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		var se *engine.StockError
		if errors.As(err, &se) {
			for _, sh := range se.Short {
				if sh.Available >= sh.Requested {
					t.Errorf("refused %s: requested %d with %d available", sh.SKU, sh.Requested, sh.Available)
				}
			}
			s.mu.Lock()
			s.short++
			s.mu.Unlock()
			return nil, nil
		}
		return nil, err
	}
}

// checkOrdersOnce checks that every acknowledged order is in exactly one outbox event
// and, once sy has caught up, in MongoDB once, with its status and all its items.
func (s *clusterShop) checkOrdersOnce(t *testing.T, sy *stocksync.Syncer) {
	t.Helper()
	ctx := context.Background()
	events := s.outboxOrders(t)
	for id := range s.orders {
		if events[id] != 1 {
			t.Errorf("order %s: %d outbox events, want 1", id, events[id])
		}
	}
	if len(events) != len(s.orders) {
		t.Errorf("outbox has %d orders, acknowledged %d", len(events), len(s.orders))
	}
	waitFor(t, func() bool {
		l, err := sy.Lag(ctx)
		return err == nil && l.Total() == 0
	})
	n, err := s.st.CountOrders(ctx, "")
	if err != nil || n != int64(len(s.orders)) {
		t.Errorf("MongoDB has %d orders (%v), want %d", n, err, len(s.orders))
	}
	for id := range s.orders {
		o, err := s.st.Order(ctx, id)
		want := engine.OrderConfirmed
		if s.canceled[id] {
			want = engine.OrderCancelled
		}
		if err != nil || o.Status != want || len(o.Items) != len(s.orders[id]) {
			t.Errorf("order %s in MongoDB: %+v %v, want %s with %d items", id, o.Status, err, want, len(s.orders[id]))
		}
	}
}

// outboxOrders counts the order events of every partition's outbox, by order id.
func (s *clusterShop) outboxOrders(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, key := range s.inv.OutboxKeys() {
		msgs, err := s.inv.Client().XRange(context.Background(), key, "-", "+").Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		for _, m := range msgs {
			evs, err := engine.DecodeEntry(m.ID, m.Values)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				if e.Kind == engine.EventOrder {
					out[e.ID]++
				}
			}
		}
	}
	return out
}

// TestClusterStorm: 240 buyers on a 3+3 Redis Cluster with 6 partitions and WAIT 1 buy
// single-partition carts of several partitions while others restock and cancel. Every
// SKU's units add up, every acknowledged order is in exactly one outbox event and in
// MongoDB once, and no buyer was refused while the stock was there.
func TestClusterStorm(t *testing.T) {
	s := newClusterShop(t, engine.Options{Partitions: 6, WaitReplicas: 1, WaitTimeout: time.Second}, 6, 3, 150)
	sy := stocksync.NewSyncer(s.inv, s.st, stocksync.SyncerOptions{Consumer: "storm", Block: 50 * time.Millisecond})
	run(t, sy)

	const buyers, rounds = 240, 20
	took := s.storm(t, buyers, rounds, 7, s.cart, nil)
	s.checkUnits(t, nil, true)
	s.checkOrdersOnce(t, sy)
	t.Logf("storm: %d buyers x %d rounds in %v: %d orders (%d cancelled), %d refused for want of stock, partitions %d",
		buyers, rounds, took.Round(time.Millisecond), len(s.orders), len(s.canceled), s.short, s.inv.Partitions())
	if len(s.orders) == 0 || s.short == 0 {
		t.Errorf("want both sales and sell-outs in the storm: %d orders, %d refusals", len(s.orders), s.short)
	}
}

// storm runs buyers goroutines of rounds each, started together: every 20th buyer
// restocks a group's first SKU by 5 every 4th round, the others check out cart(rng) (a
// refusal for want of stock is counted by s.checkout), and every 10th buyer from the
// second cancels its order of every 3rd round. bought, if set, sees each order with its
// lines and whether it was cancelled. It returns how long the buyers took.
func (s *clusterShop) storm(t *testing.T, buyers, rounds int, seed uint64, cart func(*rand.Rand) []engine.Line,
	bought func(o *engine.Order, lines []engine.Line, cancelled bool)) time.Duration {
	t.Helper()
	ctx := context.Background()
	var wg gosync.WaitGroup
	start := make(chan struct{})
	deadline := time.Now().Add(30 * time.Second)
	for b := range buyers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(b), seed))
			<-start
			for r := range rounds {
				if b%20 == 0 && r%4 == 0 { // a restock
					sku := s.groups[rng.IntN(len(s.groups))][0]
					req := engine.AdjustRequest{SKU: sku, Delta: 5, Reason: "restock", Actor: "admin",
						IdempotencyKey: fmt.Sprintf("r-%d-%d", b, r)}
					if err := retryUnknown(func() error { _, err := s.inv.Adjust(ctx, req); return err }); err != nil {
						t.Errorf("restock %s: %v", sku, err)
						continue
					}
					s.mu.Lock()
					s.received[sku] += 5
					s.mu.Unlock()
					continue
				}
				lines := cart(rng)
				o, err := s.checkout(t, fmt.Sprintf("u%d", b), fmt.Sprintf("k-%d-%d", b, r), lines, deadline)
				if err != nil {
					t.Errorf("buyer %d: %v", b, err)
					continue
				}
				if o == nil {
					continue // refused for want of stock
				}
				cancelled := false
				if b%10 == 1 && r%3 == 0 { // some buyers cancel
					err := retryUnknown(func() error {
						_, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID})
						return err
					})
					if err != nil {
						t.Errorf("cancel %s: %v", o.ID, err)
					} else {
						cancelled = true
						s.mu.Lock()
						s.canceled[o.ID] = true
						s.mu.Unlock()
					}
				}
				if bought != nil {
					bought(o, lines, cancelled)
				}
			}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	return time.Since(began)
}

// retryUnknown calls op again while its outcome is unknown or it was not applied (a
// WAIT shortfall on a loaded box, a failover), as a client with an idempotency key
// would, for up to 10 s.
func retryUnknown(op func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := op()
		if !errors.Is(err, engine.ErrOutcomeUnknown) && !errors.Is(err, engine.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
