package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
	"github.com/flashstock/flashstock/internal/testredis"
)

// roomInventory is an inventory on a redis-server of its own with the given options.
func roomInventory(t *testing.T, opts engine.Options) *engine.Redis {
	t.Helper()
	_, c := testredis.Start(t)
	inv := engine.NewRedis(c, opts)
	t.Cleanup(inv.Close)
	return inv
}

// mustRoom creates sku with stock units and a waiting room admitting rate a minute,
// its sale starting in an hour (so that every join until openSale is early).
func mustRoom(tb testing.TB, inv *engine.Redis, sku string, stock, rate int64) {
	tb.Helper()
	start := time.Now().Add(time.Hour)
	mustCreate(tb, inv, engine.Product{SKU: sku, Stock: stock, Price: 100, SaleStartsAt: &start,
		WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: rate}})
}

// openSale starts sku's sale now.
func openSale(tb testing.TB, inv *engine.Redis, sku string) {
	tb.Helper()
	past := time.Now().Add(-time.Millisecond)
	if err := inv.UpdateProduct(context.Background(), sku, engine.ProductPatch{SaleStartsAt: &past}); err != nil {
		tb.Fatal(err)
	}
}

func mustJoin(tb testing.TB, inv *engine.Redis, sku, user string) engine.QueueTicket {
	tb.Helper()
	t, err := inv.JoinQueue(context.Background(), sku, user)
	if err != nil {
		tb.Fatalf("join %s as %s: %v", sku, user, err)
	}
	return t
}

func mustPoll(tb testing.TB, inv *engine.Redis, sku, user string) engine.QueueTicket {
	tb.Helper()
	t, err := inv.QueuePosition(context.Background(), sku, user)
	if err != nil {
		tb.Fatalf("poll %s as %s: %v", sku, user, err)
	}
	return t
}

// joinAll joins users concurrently (the order of arrival does not matter before the
// start: every place is random).
func joinAll(tb testing.TB, inv *engine.Redis, sku string, users []string) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < len(users); i += 64 {
				if _, err := inv.JoinQueue(context.Background(), sku, users[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func buy(inv *engine.Redis, sku, user, pass string) (engine.Order, error) {
	return inv.Checkout(context.Background(), engine.CheckoutRequest{UserID: user, OrderID: engine.NewID(),
		Lines: []engine.Line{{SKU: sku, Quantity: 1}}, QueuePass: pass})
}

func users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// TestQueueFairness: 10,000 buyers join before the start, in the same order each time;
// over repeated openings the place each gets is independent of when they joined. The
// statistic is Pearson's chi-square over a 10x10 table (arrival decile x place decile),
// whose 81 degrees of freedom put the 0.1% critical value at 126.1 (Wilson-Hilferty).
// The places come from a seeded source, so the test is deterministic; a first-come
// order put through the same check fails it by orders of magnitude.
func TestQueueFairness(t *testing.T) {
	const n, openings, bins = 10_000, 5, 10
	const critical = 126.1
	inv := roomInventory(t, engine.Options{Rand: rand.NewChaCha8([32]byte{14})})
	buyers := users("u", n)
	var fair, firstCome [bins][bins]int
	for o := range openings {
		sku := fmt.Sprintf("DROP-%d", o)
		mustRoom(t, inv, sku, 1, 1)
		for _, u := range buyers { // in arrival order, each drawing from the seeded source
			if tk := mustJoin(t, inv, sku, u); tk.Status != engine.QueueWaiting || !tk.Joined {
				t.Fatalf("join %s: got %+v, want waiting and joined", u, tk)
			}
		}
		// Joining again keeps the place (and draws nothing that changes it).
		before := mustJoin(t, inv, sku, buyers[0])
		if again := mustJoin(t, inv, sku, buyers[0]); again.Joined || again.Position != before.Position {
			t.Fatalf("joining twice: got %+v after %+v, want the same place, not joined", again, before)
		}
		openSale(t, inv, sku)
		order, err := inv.Client().ZRange(context.Background(), inv.Keys().Room(sku, "w"), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(order) != n {
			t.Fatalf("queue length before the first admission: got %d, want %d", len(order), n)
		}
		place := make(map[string]int, n)
		for i, u := range order {
			place[u] = i
		}
		// What buyers are told agrees with the queue: the head is admitted at the first
		// call after the start (rate 1: one at once), everyone else moves up one.
		head := mustPoll(t, inv, sku, order[0])
		if head.Status != engine.QueueAdmitted || head.Pass == "" {
			t.Fatalf("head of the queue after the start: got %+v, want admitted with a pass", head)
		}
		for _, i := range []int{1, 2, n / 2, n - 1} {
			if got := mustPoll(t, inv, sku, order[i]); got.Status != engine.QueueWaiting || got.Position != int64(i) {
				t.Fatalf("%s at place %d: got %+v, want waiting at position %d", order[i], i, got, i)
			}
		}
		for i, u := range buyers {
			fair[i*bins/n][place[u]*bins/n]++
			firstCome[i*bins/n][i*bins/n]++
		}
	}
	chi := func(table [bins][bins]int) float64 {
		want := float64(openings*n) / (bins * bins)
		sum := 0.0
		for _, row := range table {
			for _, got := range row {
				d := float64(got) - want
				sum += d * d / want
			}
		}
		return sum
	}
	if x := chi(fair); x > critical {
		t.Fatalf("room order: chi-square %.1f over %d openings, want at most %.1f (uniform places)", x, openings, critical)
	} else {
		t.Logf("room order: chi-square %.1f (critical %.1f)", x, critical)
	}
	if x := chi(firstCome); x <= critical {
		t.Fatalf("first-come order: chi-square %.1f, want above %.1f: the check cannot tell", x, critical)
	}
}

// TestQueueLateArrivals: after the start, arrivals queue behind the early ones in the
// order they came.
func TestQueueLateArrivals(t *testing.T) {
	inv := realRedis(t)
	mustRoom(t, inv, "LATE", 10, 1)
	joinAll(t, inv, "LATE", users("early", 50))
	openSale(t, inv, "LATE")
	for i, u := range users("late", 5) {
		tk := mustJoin(t, inv, "LATE", u)
		// 50 early buyers, one of whom the start admitted.
		if want := int64(49 + i + 1); tk.Status != engine.QueueWaiting || tk.Position != want || !tk.Joined {
			t.Fatalf("late arrival %d: got %+v, want waiting at %d", i, tk, want)
		}
	}
}

// admissions polls sku as user until stop, and returns the admission times of every
// pass the room issued (its expiry less the pass lifetime), on Redis's clock.
func admittedAt(t *testing.T, inv *engine.Redis, sku string, ttl time.Duration) []time.Time {
	t.Helper()
	exps, err := inv.Client().ZRangeWithScores(context.Background(), inv.Keys().Room(sku, "p"), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]time.Time, len(exps))
	for i, z := range exps {
		out[i] = time.UnixMilli(int64(z.Score)).Add(-ttl)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// TestQueueAdmissionRate: polled as fast as it can be, the room admits no more than its
// token bucket allows in any window (at most C + (R-C+1)/60 s per second, which caps
// every minute at R), and does keep admitting at that pace.
func TestQueueAdmissionRate(t *testing.T) {
	const rate, burst = 600, 10 // 10/s; C = 10, refill 591 a minute
	perMs := float64(rate-burst+1) / 60000
	inv := realRedis(t)
	mustRoom(t, inv, "PACED", 1000, rate)
	joinAll(t, inv, "PACED", users("b", 300))
	openSale(t, inv, "PACED")
	start := time.Now()
	for time.Since(start) < 2500*time.Millisecond {
		mustPoll(t, inv, "PACED", "b0")
	}
	elapsed := time.Since(start)
	at := admittedAt(t, inv, "PACED", 120*time.Second)
	for i := range at {
		for j := i; j < len(at); j++ {
			window := float64(at[j].Sub(at[i]).Milliseconds()) + 1
			if n := float64(j - i + 1); n > burst+perMs*window+1e-9 {
				t.Fatalf("%.0f admissions within %.0f ms, want at most %.1f", n, window, burst+perMs*window)
			}
		}
	}
	// Polled continuously, the room keeps pace (less a poll's worth of slack).
	if low := burst + perMs*float64(elapsed.Milliseconds()) - 3; float64(len(at)) < low {
		t.Fatalf("admitted %d in %v, want at least %.0f", len(at), elapsed, low)
	}
}

// TestQueueAdmissionUnits: never more unused passes than available units; a spent pass
// takes its unit with it, an expired one makes room, a returned unit makes room.
func TestQueueAdmissionUnits(t *testing.T) {
	ctx := context.Background()
	inv := roomInventory(t, engine.Options{QueuePassTTL: time.Second})
	mustRoom(t, inv, "FEW", 3, 6000)
	buyers := users("x", 20)
	joinAll(t, inv, "FEW", buyers)
	openSale(t, inv, "FEW")
	passes := map[string]string{}
	poll := func() {
		for _, u := range buyers {
			if tk := mustPoll(t, inv, "FEW", u); tk.Status == engine.QueueAdmitted {
				passes[u] = tk.Pass
			}
		}
	}
	outstanding := func() int64 {
		n, err := inv.Client().ZCard(ctx, inv.Keys().Room("FEW", "p")).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	poll()
	if len(passes) != 3 || outstanding() != 3 {
		t.Fatalf("admitted %d (%d unused passes) for 3 units, want 3", len(passes), outstanding())
	}
	var first string
	for u, p := range passes {
		first = u
		if _, err := buy(inv, "FEW", u, p); err != nil {
			t.Fatalf("buy with a pass: %v", err)
		}
		break
	}
	poll()
	if n := outstanding(); n != 2 {
		t.Fatalf("after one purchase of 3 units: %d unused passes, want 2 (2 units left)", n)
	}
	if tk := mustPoll(t, inv, "FEW", first); tk.Status != engine.QueueAbsent {
		t.Fatalf("a buyer whose pass is spent: got %+v, want absent", tk)
	}
	// The two other passes expire unused: two more buyers are let in.
	time.Sleep(1100 * time.Millisecond)
	expired := 0
	admitted := map[string]bool{}
	for _, u := range buyers {
		switch mustPoll(t, inv, "FEW", u).Status {
		case engine.QueueExpired:
			expired++
		case engine.QueueAdmitted:
			admitted[u] = true
		}
	}
	if expired != 2 || len(admitted) != 2 || outstanding() != 2 {
		t.Fatalf("after the passes expired: %d expired, %d admitted, %d unused passes, want 2, 2, 2", expired, len(admitted), outstanding())
	}
	wantLevel(t, inv, "FEW", 2, 0, 1)
	// A cancelled order gives its unit back, and the room admits one more.
	orders, err := inv.Client().Keys(ctx, "fs:{0}:o:*").Result()
	if err != nil || len(orders) != 1 {
		t.Fatalf("orders: got %v %v, want one", orders, err)
	}
	id := orders[0][len("fs:{0}:o:"):]
	if _, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: id}); err != nil {
		t.Fatal(err)
	}
	poll()
	if n := outstanding(); n != 3 {
		t.Fatalf("after a cancellation: %d unused passes, want 3 (3 units)", n)
	}
	// An expired buyer who joins again queues at the back.
	var gone string
	for _, u := range buyers {
		if mustPoll(t, inv, "FEW", u).Status == engine.QueueExpired {
			gone = u
			break
		}
	}
	if tk := mustJoin(t, inv, "FEW", gone); !tk.Joined || tk.Status != engine.QueueWaiting || tk.Position != tk.Waiting {
		t.Fatalf("an expired buyer joining again: got %+v, want joined at the back", tk)
	}
}

// TestQueuePasses: a checkout or hold of a room's SKU needs the buyer's own unused pass
// of that room; without one it is refused and changes nothing. A refused checkout keeps
// its pass; a successful one spends it; a retry under the same idempotency key replays.
func TestQueuePasses(t *testing.T) {
	ctx := context.Background()
	inv := roomInventory(t, engine.Options{QueuePassTTL: time.Second})
	mustRoom(t, inv, "R1", 5, 6000)
	mustRoom(t, inv, "R2", 5, 6000)
	mustCreate(t, inv, engine.Product{SKU: "FREE", Stock: 5, Price: 10})
	for _, sku := range []string{"R1", "R2"} {
		joinAll(t, inv, sku, []string{"alice", "bob"})
		openSale(t, inv, sku)
	}
	pass := map[string]string{}
	for _, sku := range []string{"R1", "R2"} {
		for _, u := range []string{"alice", "bob"} {
			tk := mustPoll(t, inv, sku, u)
			if tk.Status != engine.QueueAdmitted || !engine.ValidQueuePass(tk.Pass) {
				t.Fatalf("%s in %s: got %+v, want admitted", u, sku, tk)
			}
			pass[sku+u] = tk.Pass
		}
	}
	seq := mustLevel(t, inv, "R1").Version
	obLen := outboxLen(t, inv)
	refused := []struct {
		name, user, pass string
	}{
		{"no pass", "alice", ""},
		{"a malformed pass", "alice", "not-a-pass"},
		{"another user's pass", "alice", pass["R1bob"]},
		{"a pass of another room", "alice", pass["R2alice"]},
	}
	for _, c := range refused {
		if _, err := buy(inv, "R1", c.user, c.pass); !errorsIs(err, engine.ErrQueuePassRequired) {
			t.Fatalf("%s: got %v, want ErrQueuePassRequired", c.name, err)
		}
		_, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: c.user, HoldID: engine.NewID(), TTL: time.Minute,
			Lines: []engine.Line{{SKU: "R1", Quantity: 1}}, QueuePass: c.pass})
		if !errorsIs(err, engine.ErrQueuePassRequired) {
			t.Fatalf("hold with %s: got %v, want ErrQueuePassRequired", c.name, err)
		}
	}
	// Nor does a refusal count against the user's rate limit.
	_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "alice", OrderID: engine.NewID(), RatePerMinute: 5,
		Lines: []engine.Line{{SKU: "R1", Quantity: 1}}})
	wantErr(t, err, engine.ErrQueuePassRequired)
	if n, _ := inv.Client().Exists(ctx, inv.RateLimitKey("alice")).Result(); n != 0 {
		t.Fatal("a refusal for want of a pass counted against the rate limit")
	}
	// A cart mixing a room's SKU and a free one needs the pass too, all or nothing.
	_, err = inv.Checkout(ctx, engine.CheckoutRequest{UserID: "alice", OrderID: engine.NewID(),
		Lines: []engine.Line{{SKU: "FREE", Quantity: 1}, {SKU: "R1", Quantity: 1}}})
	wantErr(t, err, engine.ErrQueuePassRequired)
	if lv := mustLevel(t, inv, "R1"); lv.Version != seq || outboxLen(t, inv) != obLen {
		t.Fatalf("refusals changed something: version %d (was %d), outbox %d (was %d)", lv.Version, seq, outboxLen(t, inv), obLen)
	}
	wantLevel(t, inv, "FREE", 5, 0, 0)

	// A refused checkout (not enough stock) keeps the pass.
	_, err = inv.Checkout(ctx, engine.CheckoutRequest{UserID: "alice", OrderID: engine.NewID(),
		Lines: []engine.Line{{SKU: "R1", Quantity: 6}}, QueuePass: pass["R1alice"]})
	wantErr(t, err, engine.ErrOutOfStock)
	// Passes of several rooms travel together in one header.
	both := pass["R2alice"] + ", " + pass["R1alice"]
	key := "k-1"
	o, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "alice", IdempotencyKey: key,
		Lines: []engine.Line{{SKU: "R1", Quantity: 1}, {SKU: "R2", Quantity: 1}}, QueuePass: both})
	if err != nil {
		t.Fatalf("checkout with both passes: %v", err)
	}
	if slices.Sort(o.PassesSpent); !slices.Equal(o.PassesSpent, []string{"R1", "R2"}) {
		t.Fatalf("passes spent: got %v, want R1 and R2", o.PassesSpent)
	}
	// The same request again under its key replays the order, pass spent or not.
	again, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "alice", IdempotencyKey: key,
		Lines: []engine.Line{{SKU: "R1", Quantity: 1}, {SKU: "R2", Quantity: 1}}, QueuePass: both})
	if err != nil || !again.Replayed || again.ID != o.ID {
		t.Fatalf("retry under the same key: got %+v %v, want the order %s replayed", again, err, o.ID)
	}
	// A spent pass does not buy again.
	_, err = buy(inv, "R1", "alice", pass["R1alice"])
	wantErr(t, err, engine.ErrQueuePassRequired)
	wantLevel(t, inv, "R1", 4, 0, 1)

	// A hold spends a pass the same way; its commit needs none.
	h, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "bob", HoldID: engine.NewID(), TTL: time.Minute,
		Lines: []engine.Line{{SKU: "R1", Quantity: 1}}, QueuePass: pass["R1bob"]})
	if err != nil || !slices.Equal(h.PassesSpent, []string{"R1"}) {
		t.Fatalf("hold with a pass: got %+v %v", h, err)
	}
	if _, err := buy(inv, "R1", "bob", pass["R1bob"]); !errorsIs(err, engine.ErrQueuePassRequired) {
		t.Fatalf("checkout with the pass the hold spent: got %v, want ErrQueuePassRequired", err)
	}
	wantLevel(t, inv, "R1", 3, 1, 1)

	// An expired pass is no pass.
	time.Sleep(1100 * time.Millisecond)
	_, err = buy(inv, "R2", "bob", pass["R2bob"])
	wantErr(t, err, engine.ErrQueuePassRequired)
	if tk := mustPoll(t, inv, "R2", "bob"); tk.Status != engine.QueueExpired {
		t.Fatalf("bob after his pass expired: got %+v, want expired", tk)
	}
	checkLedger(t, inv)
}

func errorsIs(err, target error) bool { return err != nil && errors.Is(err, target) }

// TestQueueSoldOut: once the SKU is sold out every waiting buyer is told so at once;
// units coming back resume admission.
func TestQueueSoldOut(t *testing.T) {
	ctx := context.Background()
	inv := realRedis(t)
	mustRoom(t, inv, "HOT", 2, 6000)
	buyers := users("s", 30)
	joinAll(t, inv, "HOT", buyers)
	openSale(t, inv, "HOT")
	var orders []string
	for _, u := range buyers {
		if tk := mustPoll(t, inv, "HOT", u); tk.Status == engine.QueueAdmitted {
			o, err := buy(inv, "HOT", u, tk.Pass)
			if err != nil {
				t.Fatal(err)
			}
			orders = append(orders, o.ID)
		}
	}
	if len(orders) != 2 {
		t.Fatalf("bought %d, want 2", len(orders))
	}
	waiting := 0
	for _, u := range buyers {
		switch tk := mustPoll(t, inv, "HOT", u); tk.Status {
		case engine.QueueSoldOut:
			waiting++
		case engine.QueueAbsent:
		default:
			t.Fatalf("%s after the sell-out: got %+v, want sold_out", u, tk)
		}
	}
	if waiting != 28 {
		t.Fatalf("%d buyers told sold_out, want 28", waiting)
	}
	if _, err := inv.Cancel(ctx, engine.CancelRequest{OrderID: orders[0]}); err != nil {
		t.Fatal(err)
	}
	admitted, still := 0, 0
	for _, u := range buyers {
		switch mustPoll(t, inv, "HOT", u).Status {
		case engine.QueueAdmitted:
			admitted++
		case engine.QueueWaiting:
			still++
		case engine.QueueSoldOut:
			t.Fatalf("%s sees sold_out with a unit back", u)
		}
	}
	if admitted != 1 || still != 27 {
		t.Fatalf("after one unit came back: %d admitted, %d waiting, want 1 and 27", admitted, still)
	}
}

// TestQueueDisabled: a SKU without a room has no queue and needs no pass; disabling a
// room discards it and frees its SKU.
func TestQueueDisabled(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		mustCreate(t, inv, engine.Product{SKU: "PLAIN", Stock: 3, Price: 1})
		_, err := inv.JoinQueue(ctx, "PLAIN", "u1")
		wantErr(t, err, engine.ErrNotFound)
		_, err = inv.JoinQueue(ctx, "NOPE", "u1")
		wantErr(t, err, engine.ErrNotFound)
		err = inv.UpdateProduct(ctx, "PLAIN", engine.ProductPatch{WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: 0}})
		wantErr(t, err, engine.ErrInvalid)
		err = inv.UpdateProduct(ctx, "PLAIN", engine.ProductPatch{WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: engine.MaxAdmitPerMinute + 1}})
		wantErr(t, err, engine.ErrInvalid)
		if err := inv.UpdateProduct(ctx, "PLAIN", engine.ProductPatch{WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: 60}}); err != nil {
			t.Fatal(err)
		}
		// The sale is open: the first to join is admitted at once.
		tk := mustJoin(t, inv, "PLAIN", "u1")
		if tk.Status != engine.QueueAdmitted {
			t.Fatalf("joining an open room: got %+v, want admitted", tk)
		}
		_, err = buy(inv, "PLAIN", "u2", "")
		wantErr(t, err, engine.ErrQueuePassRequired)
		if _, err := buy(inv, "PLAIN", "u1", tk.Pass); err != nil {
			t.Fatal(err)
		}
		mustJoin(t, inv, "PLAIN", "u2")
		if err := inv.UpdateProduct(ctx, "PLAIN", engine.ProductPatch{WaitingRoom: &engine.WaitingRoom{}}); err != nil {
			t.Fatal(err)
		}
		_, err = inv.QueuePosition(ctx, "PLAIN", "u2")
		wantErr(t, err, engine.ErrNotFound)
		if _, err := buy(inv, "PLAIN", "u2", ""); err != nil {
			t.Fatalf("checkout once the room is disabled: %v", err)
		}
		if n, _ := inv.Client().Exists(ctx, inv.Keys().Room("PLAIN", "w"), inv.Keys().Room("PLAIN", "")).Result(); n != 0 {
			t.Fatalf("a disabled room's keys: %d left, want none", n)
		}
		wantLevel(t, inv, "PLAIN", 1, 0, 2)
	})
}

// TestQueueDrop100k: 100,000 buyers join before the start, then each polls with backoff
// and buys one unit when admitted. Exactly the stock is sold, nobody twice, and no buyer
// holding a valid pass is refused while units remain (passes never outnumber units).
func TestQueueDrop100k(t *testing.T) {
	const n, stock, workers = 100_000, 2_000, 128
	ctx := context.Background()
	inv := realRedis(t)
	mustRoom(t, inv, "DROP", stock, 120_000) // 2,000 a second
	buyers := users("d", n)
	joinAll(t, inv, "DROP", buyers)
	openSale(t, inv, "DROP")

	var mu sync.Mutex
	var bought, soldOut, refused int
	byUser := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			// Each worker serves its buyers round-robin: every pass of its loop polls
			// each of them still waiting once, then backs off.
			var mine []string
			for i := w; i < n; i += workers {
				mine = append(mine, buyers[i])
			}
			backoff := 5 * time.Millisecond
			for len(mine) > 0 {
				left := mine[:0]
				for _, u := range mine {
					tk, err := inv.QueuePosition(ctx, "DROP", u)
					if err != nil {
						errs <- err
						return
					}
					switch tk.Status {
					case engine.QueueWaiting:
						left = append(left, u)
					case engine.QueueSoldOut:
						mu.Lock()
						soldOut++
						mu.Unlock()
					case engine.QueueAdmitted:
						_, err := buy(inv, "DROP", u, tk.Pass)
						mu.Lock()
						if err == nil {
							bought++
							byUser[u]++
						} else {
							refused++
						}
						mu.Unlock()
						if err != nil && !errors.Is(err, engine.ErrOutOfStock) {
							errs <- fmt.Errorf("buyer %s with a pass: %w", u, err)
							return
						}
					default:
						errs <- fmt.Errorf("buyer %s: status %s", u, tk.Status)
						return
					}
				}
				mine = left
				if len(mine) > 0 {
					time.Sleep(backoff)
					backoff = min(2*backoff, 200*time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if bought != stock || refused != 0 || soldOut != n-stock {
		t.Fatalf("bought %d, refused with a pass %d, told sold out %d; want %d, 0, %d", bought, refused, soldOut, stock, n-stock)
	}
	for u, k := range byUser {
		if k != 1 {
			t.Fatalf("%s bought %d times", u, k)
		}
	}
	wantLevel(t, inv, "DROP", 0, 0, stock)
	checkLedger(t, inv)
}

// TestQueueRoomSurvivesRestore: a SKU restored after Redis lost it (rebase.lua's restore
// mode) comes back with its waiting room, so checkouts still need a pass.
func TestQueueRoomSurvivesRestore(t *testing.T) {
	ctx := context.Background()
	inv := realRedis(t)
	p := engine.Product{SKU: "BACK", Price: 100, Currency: "USD",
		WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: 60}}
	_, err := inv.Rebase(ctx, engine.RebaseRequest{SKU: "BACK", Product: &p, Reason: "restore",
		Fold: engine.Level{SKU: "BACK", Available: 4, Version: 1}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = buy(inv, "BACK", "u1", "")
	wantErr(t, err, engine.ErrQueuePassRequired)
	tk := mustJoin(t, inv, "BACK", "u1")
	if tk.Status != engine.QueueAdmitted {
		t.Fatalf("joining the restored room: got %+v, want admitted", tk)
	}
	if _, err := buy(inv, "BACK", "u1", tk.Pass); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, inv, "BACK", 3, 0, 1)
}

// TestQueueOnRedisCluster: a room's keys share its SKU's partition (hash tag), so join,
// admission and a checkout with the pass run on a Redis Cluster as on one Redis.
func TestQueueOnRedisCluster(t *testing.T) {
	c := testcluster.Start(t, rediscluster.Options{})
	inv := engine.NewRedis(c.Client(), engine.Options{Partition: "p7"})
	t.Cleanup(inv.Close)
	mustRoom(t, inv, "CL", 2, 600)
	joinAll(t, inv, "CL", users("c", 20))
	openSale(t, inv, "CL")
	sold := 0
	for _, u := range users("c", 20) {
		if tk := mustPoll(t, inv, "CL", u); tk.Status == engine.QueueAdmitted {
			if _, err := buy(inv, "CL", u, tk.Pass); err != nil {
				t.Fatal(err)
			}
			sold++
		}
	}
	if sold != 2 {
		t.Fatalf("sold %d through the room on the cluster, want 2", sold)
	}
	if tk := mustPoll(t, inv, "CL", "c0"); tk.Status != engine.QueueSoldOut && tk.Status != engine.QueueAbsent {
		t.Fatalf("after the sell-out: got %+v", tk)
	}
	wantLevel(t, inv, "CL", 0, 0, 2)
}

// TestQueuePassSpentOnce: one pass raced by 256 concurrent checkouts and holds of its
// owner (each its own request, released at once, so many share a batch) buys exactly
// one unit.
func TestQueuePassSpentOnce(t *testing.T) {
	ctx := context.Background()
	inv := realRedis(t)
	mustRoom(t, inv, "RACE", 50, 6000)
	joinAll(t, inv, "RACE", []string{"eve"})
	openSale(t, inv, "RACE")
	tk := mustPoll(t, inv, "RACE", "eve")
	if tk.Status != engine.QueueAdmitted {
		t.Fatalf("eve: got %+v, want admitted", tk)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	start := make(chan struct{})
	for i := range 256 {
		wg.Go(func() {
			<-start
			var err error
			if i%2 == 0 {
				_, err = buy(inv, "RACE", "eve", tk.Pass)
			} else {
				_, err = inv.Reserve(ctx, engine.ReserveRequest{UserID: "eve", HoldID: engine.NewID(), TTL: time.Minute,
					Lines: []engine.Line{{SKU: "RACE", Quantity: 1}}, QueuePass: tk.Pass})
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, engine.ErrQueuePassRequired):
				refused++
			default:
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok != 1 || refused != 255 {
		t.Fatalf("256 requests with one pass: %d served, %d refused; want 1 and 255", ok, refused)
	}
	if lv := mustLevel(t, inv, "RACE"); lv.Available != 49 {
		t.Fatalf("available after the race: got %d, want 49", lv.Available)
	}
}

// TestQueueResumesWhenAHoldEnds: a hold's units coming back (released) let the room
// admit again, as a cancellation does.
func TestQueueResumesWhenAHoldEnds(t *testing.T) {
	ctx := context.Background()
	inv := realRedis(t)
	mustRoom(t, inv, "ONE", 1, 6000)
	joinAll(t, inv, "ONE", []string{"a", "b"})
	openSale(t, inv, "ONE")
	var holder, other string
	var pass string
	for _, u := range []string{"a", "b"} {
		if tk := mustPoll(t, inv, "ONE", u); tk.Status == engine.QueueAdmitted {
			holder, pass = u, tk.Pass
		} else {
			other = u
		}
	}
	h, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: holder, HoldID: engine.NewID(), TTL: time.Minute,
		Lines: []engine.Line{{SKU: "ONE", Quantity: 1}}, QueuePass: pass})
	if err != nil {
		t.Fatal(err)
	}
	if tk := mustPoll(t, inv, "ONE", other); tk.Status != engine.QueueSoldOut {
		t.Fatalf("%s while the only unit is held: got %+v, want sold_out", other, tk)
	}
	if _, err := inv.Release(ctx, engine.ReleaseRequest{HoldID: h.ID}); err != nil {
		t.Fatal(err)
	}
	if tk := mustPoll(t, inv, "ONE", other); tk.Status != engine.QueueAdmitted {
		t.Fatalf("%s once the hold is released: got %+v, want admitted", other, tk)
	}
}
