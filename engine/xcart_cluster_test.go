package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
)

// xShop is an inventory on a real cluster with one SKU per group in distinct
// partitions: skus[i] lives in partition parts[i], and parts are sorted.
type xShop struct {
	inv   *engine.Redis
	skus  []string
	parts []int
	stock int64

	mu      gosync.Mutex
	crashAt string            // the step the next attempt stops at ("" none)
	crashed map[string]string // attempt id -> step it stopped at
}

const xTTL = 300 * time.Millisecond

func newXShop(t *testing.T, c *testcluster.Cluster, tag string, n int, stock int64) *xShop {
	t.Helper()
	s := &xShop{stock: stock, crashed: map[string]string{}}
	s.inv = engine.NewRedis(c.Client(), engine.Options{Partition: tag, Partitions: 6, WaitReplicas: 1, WaitTimeout: time.Second,
		CrossAttemptTTL: xTTL, CrossWait: time.Second, CrossSweepEvery: -1})
	t.Cleanup(s.inv.Close)
	engine.SetCrossHook(s.inv, func(step, attempt string) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.crashAt == step {
			s.crashAt = ""
			s.crashed[attempt] = step
			return true
		}
		return false
	})
	ctx := context.Background()
	seen := map[int]bool{}
	for g := 0; len(s.skus) < n && g < 200; g++ {
		sku := fmt.Sprintf("X%d", g)
		mustCreate(t, s.inv, engine.Product{SKU: sku, Price: int64(10 + g), Stock: stock, Group: fmt.Sprintf("x%d", g)})
		p, err := s.inv.PartitionOf(ctx, sku)
		if err != nil {
			t.Fatal(err)
		}
		if !seen[p] {
			seen[p] = true
			s.skus, s.parts = append(s.skus, sku), append(s.parts, p)
		}
	}
	if len(s.skus) < n {
		t.Fatalf("found %d partitions, want %d", len(s.skus), n)
	}
	return s
}

func (s *xShop) crashNext(step string) {
	s.mu.Lock()
	s.crashAt = step
	s.mu.Unlock()
}

func (s *xShop) levels(t *testing.T) map[string]engine.Level {
	t.Helper()
	lv, err := s.inv.Lookup(context.Background(), s.skus)
	if err != nil {
		t.Fatal(err)
	}
	return lv
}

// settled checks that nothing is reserved or in flight any more and that each SKU's
// units add up to its stock with sold[sku] sold.
func (s *xShop) settled(t *testing.T, sold map[string]int64) {
	t.Helper()
	lv := s.levels(t)
	for _, sku := range s.skus {
		l := lv[sku]
		if l.Reserved != 0 || l.Sold != sold[sku] || l.Available+l.Sold != s.stock {
			t.Errorf("%s: available %d reserved %d sold %d, want reserved 0, sold %d, total %d", sku, l.Available, l.Reserved, l.Sold, sold[sku], s.stock)
		}
	}
	for p := range 6 {
		in, err := engine.InFlight(context.Background(), s.inv, p)
		if err != nil || len(in) != 0 {
			t.Errorf("partition %d: in flight %v (%v), want none", p, in, err)
		}
	}
}

func sweepAfterTTL(t *testing.T, inv *engine.Redis) int {
	t.Helper()
	time.Sleep(xTTL + 50*time.Millisecond)
	n, err := inv.SweepCrossPartition(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCrossPartitionCheckout: a cart over three partitions is bought whole, its order
// is in the primary's outbox once, a retry with the key replays it, and a cart with a
// short line takes nothing anywhere.
func TestCrossPartitionCheckout(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	s := newXShop(t, c, "xc", 3, 5)
	lines := []engine.Line{{SKU: s.skus[0], Quantity: 2}, {SKU: s.skus[1], Quantity: 1}, {SKU: s.skus[2], Quantity: 3}}
	o, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u1", IdempotencyKey: "k1", Lines: lines})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Items) != 3 || o.ID != engine.OrderIDForKey("u1", "k1") {
		t.Errorf("order %+v", o)
	}
	again, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u1", IdempotencyKey: "k1", Lines: lines})
	if err != nil || again.ID != o.ID || !again.Replayed || len(again.Items) != 3 {
		t.Errorf("retry: %+v %v, want order %s replayed", again, err, o.ID)
	}
	s.settled(t, map[string]int64{s.skus[0]: 2, s.skus[1]: 1, s.skus[2]: 3})
	// Only 2 of skus[2] left: nothing of the cart is taken.
	_, err = s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u2", IdempotencyKey: "k2", Lines: lines})
	var se *engine.StockError
	if !errors.As(err, &se) || len(se.Short) != 1 || se.Short[0].SKU != s.skus[2] {
		t.Fatalf("short cart: %v, want out of stock on %s", err, s.skus[2])
	}
	s.settled(t, map[string]int64{s.skus[0]: 2, s.skus[1]: 1, s.skus[2]: 3})
	orders := 0
	for p, evs := range partitionEvents(t, s.inv) {
		for _, e := range evs {
			if e.Kind == engine.EventOrder {
				orders++
				if p != s.parts[0] || e.ID != o.ID || len(e.Items) != 3 {
					t.Errorf("order event in partition %d: %+v, want %s in %d with 3 items", p, e, o.ID, s.parts[0])
				}
			}
		}
	}
	if orders != 1 {
		t.Errorf("%d order events, want 1", orders)
	}
}

// TestCrossPartitionCrashes stops the coordinator before the decision, after it, and
// midway through the commits, and sends late duplicate reserves: after the sweeper,
// no units are held, no aborted attempt's units are sold, decided attempts are fully
// committed, and a retry with the key returns the one order.
func TestCrossPartitionCrashes(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	s := newXShop(t, c, "xk", 3, 10)
	lines := []engine.Line{{SKU: s.skus[0], Quantity: 1}, {SKU: s.skus[1], Quantity: 2}, {SKU: s.skus[2], Quantity: 1}}
	sold := map[string]int64{}
	buy := func(key string) (engine.Order, error) {
		return s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: key, Lines: lines})
	}
	attempt := func(step string) string {
		s.mu.Lock()
		defer s.mu.Unlock()
		for a, st := range s.crashed {
			if st == step {
				return a
			}
		}
		t.Fatalf("no attempt stopped at %s", step)
		return ""
	}

	// Before the decision: the reservations are held until the sweeper aborts them.
	s.crashNext("after-reserve")
	if _, err := buy("before"); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("stopped coordinator: %v", err)
	}
	lv := s.levels(t)
	if lv[s.skus[1]].Reserved != 2 || lv[s.skus[0]].Sold != 0 {
		t.Errorf("after the reserves: %+v", lv)
	}
	// A rollback must not take these reserved units for a lost hold's.
	if held, err := s.inv.HeldUnits(ctx); err != nil || held[s.skus[1]] != 2 || held[s.skus[2]] != 1 {
		t.Errorf("held units with reservations in flight: %v %v, want %s 2 and %s 1", held, err, s.skus[1], s.skus[2])
	}
	if n := sweepAfterTTL(t, s.inv); n != 2 {
		t.Errorf("sweeper resolved %d attempts, want 2", n)
	}
	s.settled(t, sold)
	aborted := attempt("after-reserve")
	// A late duplicate reserve of the aborted attempt takes nothing.
	st, state, err := engine.ReserveAgain(ctx, s.inv, aborted, s.parts[0], s.skus[1], 2)
	if err != nil || st != "state" || state != "a" {
		t.Errorf("late reserve: %s %s %v, want the aborted tombstone", st, state, err)
	}

	// After the decision: the order exists; a retry returns it; the sweeper commits.
	s.crashNext("after-decide")
	if _, err := buy("after"); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("stopped coordinator: %v", err)
	}
	o, err := buy("after")
	if err != nil || !o.Replayed {
		t.Fatalf("retry after the decision: %+v %v, want the order replayed", o, err)
	}
	if n := sweepAfterTTL(t, s.inv); n != 2 {
		t.Errorf("sweeper resolved %d attempts, want 2", n)
	}
	for _, l := range lines {
		sold[l.SKU] += l.Quantity
	}
	s.settled(t, sold)
	committed := attempt("after-decide")
	st, state, err = engine.ReserveAgain(ctx, s.inv, committed, s.parts[0], s.skus[1], 2)
	if err != nil || st != "state" || state != "c" {
		t.Errorf("late reserve of a committed attempt: %s %s %v", st, state, err)
	}

	// Midway through the commits: the first secondary committed, the rest by the sweeper.
	s.crashNext("mid-commit")
	if o, err := buy("mid"); err != nil || o.ID == "" {
		t.Fatalf("checkout stopped mid-commit (acknowledged after the decision): %+v %v", o, err)
	}
	for _, l := range lines {
		sold[l.SKU] += l.Quantity
	}
	if n := sweepAfterTTL(t, s.inv); n != 1 {
		t.Errorf("sweeper resolved %d attempts, want 1", n)
	}
	s.settled(t, sold)

	// Before any reserve: nothing to resolve.
	s.crashNext("before-reserve")
	if _, err := buy("none"); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("stopped coordinator: %v", err)
	}
	if n := sweepAfterTTL(t, s.inv); n != 0 {
		t.Errorf("sweeper resolved %d attempts, want 0", n)
	}
	s.settled(t, sold)
}

// TestCrossPartitionBusyWaits: buyers who meet stock held only by an abandoned attempt
// (single-partition and cross-partition carts) wait for the sweeper, which they run
// lazily while waiting, instead of being refused.
func TestCrossPartitionBusyWaits(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	s := newXShop(t, c, "xb", 3, 1)
	s.crashNext("after-reserve")
	_, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "a",
		Lines: []engine.Line{{SKU: s.skus[0], Quantity: 1}, {SKU: s.skus[1], Quantity: 1}, {SKU: s.skus[2], Quantity: 1}}})
	if !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("stopped coordinator: %v", err)
	}
	began := time.Now()
	var wg gosync.WaitGroup
	for i, lines := range [][]engine.Line{
		{{SKU: s.skus[1], Quantity: 1}},                                // single-partition
		{{SKU: s.skus[0], Quantity: 1}, {SKU: s.skus[2], Quantity: 1}}, // cross-partition
	} {
		wg.Go(func() {
			_, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "v", IdempotencyKey: fmt.Sprint("b", i), Lines: lines})
			if err != nil {
				t.Errorf("buyer %d of held stock: %v, want to wait and buy it", i, err)
			}
		})
	}
	wg.Wait()
	if waited := time.Since(began); waited < xTTL/2 {
		t.Errorf("bought after %v: the units were held for %v", waited, xTTL)
	}
	s.settled(t, map[string]int64{s.skus[0]: 1, s.skus[1]: 1, s.skus[2]: 1})
}

// TestCrossPartitionPerUserLimits: SKUs with a per-user limit in a cart spanning
// partitions, as the primary's line and as a secondary's: units count against the
// buyer's limit wherever the SKU lives, a cart over the limit takes nothing anywhere,
// an aborted attempt gives its counted units back, and other buyers are not affected.
func TestCrossPartitionPerUserLimits(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	s := newXShop(t, c, "xl", 2, 100)
	// One limited SKU in each of the two partitions, grouped with the shop's SKUs.
	limited := make([]string, 2)
	for i := range 2 {
		limited[i] = fmt.Sprintf("L%d", i)
		mustCreate(t, s.inv, engine.Product{SKU: limited[i], Price: 5, Stock: 100, MaxPerUser: 2, Group: fmt.Sprintf("x%s", s.skus[i][1:])})
		if p, err := s.inv.PartitionOf(ctx, limited[i]); err != nil || p != s.parts[i] {
			t.Fatalf("%s in partition %d (%v), want %d", limited[i], p, err, s.parts[i])
		}
	}
	buy := func(user, key string, lines ...engine.Line) error {
		_, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: user, IdempotencyKey: key, Lines: lines})
		return err
	}
	// The primary's line limited (L0 with X in the other partition), then a secondary's.
	primaryCart := []engine.Line{{SKU: limited[0], Quantity: 1}, {SKU: s.skus[1], Quantity: 1}}
	secondaryCart := []engine.Line{{SKU: s.skus[0], Quantity: 1}, {SKU: limited[1], Quantity: 2}}
	for i := range 2 {
		if err := buy("ann", fmt.Sprintf("p%d", i), primaryCart...); err != nil {
			t.Fatalf("ann's cart %d with L0: %v", i, err)
		}
	}
	if err := buy("ann", "secondary", secondaryCart...); err != nil {
		t.Fatalf("ann's cart with L1 x2: %v", err)
	}
	// A retry of a cart whose limited SKU is at the secondary replays the order: the
	// reserve's limit refusal is not the answer for a key that already bought.
	if o, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "ann", IdempotencyKey: "secondary", Lines: secondaryCart}); err != nil || !o.Replayed {
		t.Fatalf("retry of ann's cart with L1: %+v %v, want the order replayed", o, err)
	}
	before, _ := s.inv.Lookup(ctx, append([]string{limited[0], limited[1]}, s.skus...))
	for _, cart := range [][]engine.Line{primaryCart, secondaryCart} {
		var le *engine.LimitError
		err := buy("ann", "over-"+cart[0].SKU, cart...)
		if !errors.Is(err, engine.ErrLimitExceeded) || !errors.As(err, &le) || le.Limit != 2 || le.Already != 2 {
			t.Fatalf("ann over her limit: got %v, want a LimitError (limit 2, already 2)", err)
		}
	}
	after, _ := s.inv.Lookup(ctx, append([]string{limited[0], limited[1]}, s.skus...))
	for sku, l := range before {
		if a := after[sku]; a.Available != l.Available || a.Reserved != 0 || a.Sold != l.Sold {
			t.Errorf("%s changed by refused carts: %+v -> %+v", sku, l, a)
		}
	}
	// Another buyer has her own allowance.
	if err := buy("bob", "bob", secondaryCart...); err != nil {
		t.Fatalf("bob: %v", err)
	}
	// An attempt stopped after its reserves is aborted by the sweeper, which gives
	// cat's counted L1 units back: she can then buy her full allowance.
	s.crashNext("after-reserve")
	if err := buy("cat", "stopped", secondaryCart...); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("stopped coordinator: %v", err)
	}
	if n := sweepAfterTTL(t, s.inv); n != 1 {
		t.Errorf("sweeper resolved %d attempts, want 1", n)
	}
	if err := buy("cat", "again", secondaryCart...); err != nil {
		t.Fatalf("cat after her aborted attempt: %v", err)
	}
	lv, _ := s.inv.Lookup(ctx, limited)
	if lv[limited[0]].Sold != 2 || lv[limited[1]].Sold != 6 || lv[limited[1]].Reserved != 0 {
		t.Errorf("limited SKUs: %+v, want L0 sold 2, L1 sold 6, nothing reserved", lv)
	}
	// Cancelling ann's orders gives her counted units back in both partitions (the
	// primary's line and the other partition's, restored there): she can buy again.
	for _, key := range []string{"p0", "secondary"} {
		id := engine.OrderIDForKey("ann", key)
		if _, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: id, Owner: "ann"}); err != nil {
			t.Fatalf("cancel ann's order %s: %v", key, err)
		}
	}
	if err := buy("ann", "after-cancel-primary", primaryCart...); err != nil {
		t.Errorf("ann after cancelling one L0 unit: %v", err)
	}
	if err := buy("ann", "after-cancel-secondary", secondaryCart...); err != nil {
		t.Errorf("ann after cancelling her L1 units: %v", err)
	}
}

// TestCrossPartitionWaitCountsOnce: a buyer who waits for units held by an in-flight
// checkout is one request to the rate limit, however many times the engine looks
// again meanwhile: with a limit of one a minute, the waiting buyers still buy, on the
// cross-partition path (held units at the cart's primary partition, met by decide) and
// on the single-partition one.
func TestCrossPartitionWaitCountsOnce(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	s := newXShop(t, c, "xr", 3, 2)
	s.crashNext("after-reserve") // holds both units of skus[1]
	_, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "a",
		Lines: []engine.Line{{SKU: s.skus[0], Quantity: 1}, {SKU: s.skus[1], Quantity: 2}}})
	if !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("stopped coordinator: %v", err)
	}
	var wg gosync.WaitGroup
	for i, lines := range [][]engine.Line{
		{{SKU: s.skus[1], Quantity: 1}, {SKU: s.skus[2], Quantity: 1}}, // skus[1] at the primary
		{{SKU: s.skus[1], Quantity: 1}},                                // single-partition
	} {
		wg.Go(func() {
			_, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: fmt.Sprint("w", i), IdempotencyKey: "k",
				Lines: lines, RatePerMinute: 1})
			if err != nil {
				t.Errorf("waiting buyer %d with a limit of 1 a minute: %v, want the units once released", i, err)
			}
		})
	}
	wg.Wait()
	s.settled(t, map[string]int64{s.skus[1]: 2, s.skus[2]: 1})
}

// roomAcross creates, in inv (6 partitions), a SKU with a waiting room (its sale
// starting in an hour) in one of the middle partitions and plain SKUs in a lower and in
// a higher one, 10 units each; it returns their names.
func roomAcross(t *testing.T, inv *engine.Redis, prefix string) (room, low, high string) {
	t.Helper()
	partOf := func(sku string) int {
		p, err := inv.PartitionOf(context.Background(), sku)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	start := time.Now().Add(time.Hour)
	for i := 0; room == ""; i++ {
		sku := fmt.Sprintf("%sR%d", prefix, i)
		mustCreate(t, inv, engine.Product{SKU: sku, Stock: 10, Price: 100, SaleStartsAt: &start,
			WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: 6000}})
		if p := partOf(sku); p > 0 && p < 5 {
			room = sku
		}
	}
	pr := partOf(room)
	for i := 0; low == "" || high == ""; i++ {
		sku := fmt.Sprintf("%sP%d", prefix, i)
		mustCreate(t, inv, engine.Product{SKU: sku, Stock: 10, Price: 10})
		switch p := partOf(sku); {
		case p < pr && low == "":
			low = sku
		case p > pr && high == "":
			high = sku
		}
	}
	return room, low, high
}

// TestCrossPartitionCartWithAWaitingRoom: a cart whose lines span partitions may hold a
// SKU with a waiting room, in a secondary partition or at the primary. It needs the
// buyer's pass, spends it once, and gives it back when the cart is refused after the
// reserve spent it.
func TestCrossPartitionCartWithAWaitingRoom(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	inv := engine.NewRedis(c.Client(), engine.Options{Partition: "xw", Partitions: 6, CrossSweepEvery: -1})
	t.Cleanup(inv.Close)
	room, low, high := roomAcross(t, inv, "W")
	buyers := []string{"alice", "bob", "carol", "dave"}
	joinAll(t, inv, room, buyers)
	openSale(t, inv, room)
	pass := map[string]string{}
	for _, u := range buyers {
		tk := mustPoll(t, inv, room, u)
		if tk.Status != engine.QueueAdmitted {
			t.Fatalf("%s: %+v, want admitted", u, tk)
		}
		pass[u] = tk.Pass
	}
	cart := func(user, pass string, skus ...string) (engine.Order, error) {
		var lines []engine.Line
		for _, s := range skus {
			lines = append(lines, engine.Line{SKU: s, Quantity: 1})
		}
		if user == "bob" && len(skus) == 2 { // more of the primary's SKU than there is
			lines[0].Quantity = 100
		}
		return inv.Checkout(ctx, engine.CheckoutRequest{UserID: user, OrderID: engine.NewID(), Lines: lines, QueuePass: pass})
	}

	// The room's SKU in a secondary partition: the reserve checks and spends the pass;
	// a retry with the key replays the order, though the pass is spent.
	keyed := engine.CheckoutRequest{UserID: "alice", IdempotencyKey: "k-alice", QueuePass: pass["alice"],
		Lines: []engine.Line{{SKU: low, Quantity: 1}, {SKU: room, Quantity: 1}}}
	o, err := inv.Checkout(ctx, keyed)
	if err != nil || !slices.Equal(o.PassesSpent, []string{room}) {
		t.Fatalf("alice's cart: %+v %v, want an order that spent the %s pass", o, err, room)
	}
	if again, err := inv.Checkout(ctx, keyed); err != nil || !again.Replayed || again.ID != o.ID {
		t.Errorf("alice's retry with the key: %+v %v, want order %s replayed", again, err, o.ID)
	}
	if _, err := cart("alice", pass["alice"], low, room); !errors.Is(err, engine.ErrQueuePassRequired) {
		t.Errorf("alice's spent pass again: %v, want ErrQueuePassRequired", err)
	}
	// Refused at the primary after the reserve spent bob's pass: the abort gives it back.
	var se *engine.StockError
	if _, err := cart("bob", pass["bob"], low, room); !errors.As(err, &se) {
		t.Fatalf("bob's cart with a sold-out line: %v, want out of stock", err)
	}
	if _, err := cart("bob", pass["bob"], room); err != nil {
		t.Errorf("bob's pass after the refused cart: %v, want it usable (given back)", err)
	}
	// The room's SKU at the primary: the decide checks and spends the pass.
	if o, err := cart("carol", pass["carol"], room, high); err != nil || !slices.Equal(o.PassesSpent, []string{room}) {
		t.Errorf("carol's cart: %+v %v, want an order that spent the %s pass", o, err, room)
	}
	// Without a pass, or with another buyer's: refused, nothing taken.
	for _, p := range []string{"", pass["carol"]} {
		if _, err := cart("dave", p, low, room); !errors.Is(err, engine.ErrQueuePassRequired) {
			t.Errorf("dave with pass %q: %v, want ErrQueuePassRequired", p, err)
		}
		if _, err := cart("dave", p, room, high); !errors.Is(err, engine.ErrQueuePassRequired) {
			t.Errorf("dave with pass %q, the room at the primary: %v, want ErrQueuePassRequired", p, err)
		}
	}
	lv, err := inv.Lookup(ctx, []string{room, low, high})
	if err != nil {
		t.Fatal(err)
	}
	for sku, sold := range map[string]int64{room: 3, low: 1, high: 1} {
		if l := lv[sku]; l.Sold != sold || l.Reserved != 0 {
			t.Errorf("%s: %+v, want %d sold, none reserved", sku, l, sold)
		}
	}
	for p := range 6 {
		if in, err := engine.InFlight(ctx, inv, p); err != nil || len(in) != 0 {
			t.Errorf("partition %d: in flight %v (%v), want none", p, in, err)
		}
	}
}

// TestCrossPartitionCommitOutlivesDecisions: a reservation left held by a coordinator
// that stopped after the decision is committed by the sweeper however late it comes:
// the order record names the attempt that made it, so the commit decision lasts as long
// as the order, not as long as the decisions set keeps its entries (here emptied, as an
// outage of a partition longer than their hour would see it). So too after the order was
// cancelled meanwhile: committed, then given back by the cancel, never given back twice.
func TestCrossPartitionCommitOutlivesDecisions(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	s := newXShop(t, c, "xo", 2, 10)
	lines := []engine.Line{{SKU: s.skus[0], Quantity: 1}, {SKU: s.skus[1], Quantity: 2}}
	forget := func() { // the primary's decisions, all gone
		key := s.inv.PartitionKeys(s.parts[0]).XDecisions()
		if err := c.Client().Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
	}
	sold := map[string]int64{}

	s.crashNext("after-decide")
	if _, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "late", Lines: lines}); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("stopped coordinator: %v", err)
	}
	forget()
	if n := sweepAfterTTL(t, s.inv); n != 1 {
		t.Errorf("sweeper resolved %d attempts, want 1", n)
	}
	for _, l := range lines {
		sold[l.SKU] += l.Quantity
	}
	s.settled(t, sold) // committed, not presumed aborted

	s.crashNext("after-decide")
	if _, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "cancelled", Lines: lines}); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("stopped coordinator: %v", err)
	}
	o, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "cancelled", Lines: lines})
	if err != nil || !o.Replayed {
		t.Fatalf("retry: %+v %v, want the order replayed", o, err)
	}
	if _, err := s.inv.Cancel(ctx, engine.CancelRequest{OrderID: o.ID, Owner: "u"}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	forget()
	time.Sleep(xTTL + 50*time.Millisecond)
	for range 3 { // the reservation, then the cancel's restore it waited for
		if _, err := s.inv.SweepCrossPartition(ctx); err != nil {
			t.Log(err)
		}
	}
	s.settled(t, sold)          // the cancelled order's units all back, none twice
	wantPendingCancels(t, s, 0) // its restores all made (none waits for a commit that never comes)
}

// TestCrossPartitionRetryWhileItsPassIsHeld: a keyed retry of a cart whose first attempt
// spent the buyer's waiting-room pass at a reserve and is still in flight is not refused
// for that pass (the first attempt may yet commit: a 403 would say nothing happened). It
// waits for the first attempt's outcome: aborted, the pass comes back and the retry buys;
// committed, the retry replays the order. Another order of the buyer's meanwhile is
// refused: the pass is spent.
func TestCrossPartitionRetryWhileItsPassIsHeld(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	s := newXShop(t, c, "xh", 1, 10) // for its test hook, which stops the coordinator
	inv := s.inv
	room, low, _ := roomAcross(t, inv, "H")
	joinAll(t, inv, room, []string{"frank", "gina"})
	openSale(t, inv, room)
	cart := func(user, key, pass string) engine.CheckoutRequest {
		req := engine.CheckoutRequest{UserID: user, IdempotencyKey: key, QueuePass: pass,
			Lines: []engine.Line{{SKU: low, Quantity: 1}, {SKU: room, Quantity: 1}}}
		if key == "" {
			req.OrderID = engine.NewID()
		}
		return req
	}
	for _, c := range []struct {
		user, crash string
		replayed    bool
	}{
		{"frank", "after-reserve", false}, // undecided: presumed aborted, the pass given back
		{"gina", "after-decide", true},    // decided: committed, the order replayed
	} {
		tk := mustPoll(t, inv, room, c.user)
		if tk.Status != engine.QueueAdmitted {
			t.Fatalf("%s: %+v, want admitted", c.user, tk)
		}
		s.crashNext(c.crash)
		if _, err := inv.Checkout(ctx, cart(c.user, "k-"+c.user, tk.Pass)); !errors.Is(err, engine.ErrOutcomeUnknown) {
			t.Fatalf("%s, stopped coordinator: %v", c.user, err)
		}
		if _, err := inv.Checkout(ctx, cart(c.user, "", tk.Pass)); !errors.Is(err, engine.ErrQueuePassRequired) {
			t.Errorf("%s, another order while the pass is held: %v, want ErrQueuePassRequired", c.user, err)
		}
		o, err := inv.Checkout(ctx, cart(c.user, "k-"+c.user, tk.Pass))
		if err != nil || o.Replayed != c.replayed {
			t.Errorf("%s, retry with the key: %+v %v, want an order (replayed %v)", c.user, o, err, c.replayed)
		}
	}
	lv, err := inv.Lookup(ctx, []string{room, low})
	if err != nil {
		t.Fatal(err)
	}
	for _, sku := range []string{room, low} {
		if l := lv[sku]; l.Sold != 2 || l.Reserved != 0 || l.Available != 8 {
			t.Errorf("%s: %+v, want 2 sold (one order each), none reserved", sku, l)
		}
	}
}
