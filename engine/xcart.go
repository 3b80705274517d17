package engine

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/scripts/lua"
)

// Cross-partition checkout: a cart whose SKUs live in several partitions. No Redis
// Cluster script can touch two slots, so the cart is bought in steps
// (scripts/lua/xcart.lua; docs/ARCHITECTURE.md, "Partitions on Redis Cluster"):
//
//  1. reserve the lines of every secondary partition (in parallel), under an attempt id
//     T drawn for this call: available -> reserved, counted as in flight;
//  2. decide at the primary partition (the cart's lowest-numbered one): the commit
//     point. It sells the primary's own lines, writes the order record (the idempotency
//     record of the key) and the order's one outbox event, and records the decision for
//     T, once: committed, or aborted if the primary refuses;
//  3. commit (reserved -> sold) or abort (reserved -> available) the reservations.
//
// Presumed abort: an attempt without a decision is aborted by whoever resolves it first
// (resolve writes 'aborted' at the primary, so a decide arriving later fails). A
// reservation that ended stays as a tombstone, so a late or duplicate reserve takes
// nothing. The sweeper (sweepLoop, and lazily any buyer who waits) resolves reservations
// older than CrossAttemptTTL through the primary's decision, so no units stay reserved.

// ErrStockBusy is the answer to a buyer who met stock held only by in-flight
// cross-partition attempts for longer than CrossWait: not a refusal for want of stock
// (it wraps ErrUnavailable: nothing was applied; try again).
var ErrStockBusy = fmt.Errorf("%w: the stock asked for is held by in-flight checkouts", ErrUnavailable)

var scriptXCart = newScript(lua.XCart)

type crossOptions struct {
	ttl        time.Duration
	wait       time.Duration
	sweepEvery time.Duration
	stop, done chan struct{}
	closeOnce  *sync.Once
	// hook, set by tests, is called at each step of the coordinator; true stops the
	// coordinator there, as a crash would (the call returns errCoordinatorStopped).
	hook func(step, attempt string) bool
}

func newCrossOptions(o Options) crossOptions {
	x := crossOptions{ttl: o.CrossAttemptTTL, wait: o.CrossWait, sweepEvery: o.CrossSweepEvery}
	if x.ttl <= 0 {
		x.ttl = 2 * time.Second
	}
	if x.wait <= 0 {
		x.wait = 500 * time.Millisecond
	}
	if x.sweepEvery == 0 {
		x.sweepEvery = 500 * time.Millisecond
	}
	return x
}

// errCoordinatorStopped is what a coordinator stopped by the test hook returns.
var errCoordinatorStopped = fmt.Errorf("%w: coordinator stopped (test hook)", ErrOutcomeUnknown)

func (r *Redis) crashAt(step, t string) bool { return r.x.hook != nil && r.x.hook(step, t) }

// tombTTL is how long ended attempts (tombstones) and decisions are remembered,
// seconds: an hour, far longer than any coordinator call that could still send a late
// step of its attempt (each call draws its own attempt id), and than the sweeper needs
// to resolve a reservation. A retry with the idempotency key finds the order record,
// not these. One hour, not the idempotency window: there is one per attempt and
// partition, and a day of them would be most of Redis's memory at a flash sale's rate.
func (r *Redis) tombTTL() string { return "3600" }

// xPart is one partition's share of a cross-partition cart.
type xPart struct {
	p     *partition
	lines []Line
}

// splitLines groups lines by partition, the primary (lowest number) first; nil if they
// all live in one partition.
func (r *Redis) splitLines(ctx context.Context, lines []Line) ([]xPart, error) {
	if len(r.parts) == 1 {
		return nil, nil
	}
	skus := make([]string, len(lines))
	for i, l := range lines {
		skus[i] = l.SKU
	}
	ps, err := r.partitionsOf(ctx, skus)
	if err != nil {
		return nil, err
	}
	by := map[*partition][]Line{}
	for i, l := range lines {
		by[ps[i]] = append(by[ps[i]], l)
	}
	if len(by) == 1 {
		return nil, nil
	}
	out := make([]xPart, 0, len(by))
	for p, ls := range by {
		out = append(out, xPart{p: p, lines: ls})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].p.n < out[j].p.n })
	return out, nil
}

// lineKeys are the keys of a cross-partition step's lines in partition k: per line its
// stock hash, per-user counters, waiting-room passes and passes held by reservations.
func lineKeys(k Keys, lines []Line) []string {
	out := make([]string, 0, 4*len(lines))
	for _, l := range lines {
		out = append(out, k.Stock(l.SKU), k.Bought(l.SKU), k.Room(l.SKU, "p"), k.Room(l.SKU, "h"))
	}
	return out
}

func lineArgs(lines []Line) []any {
	out := make([]any, 0, 2*len(lines))
	for _, l := range lines {
		out = append(out, l.SKU, l.Quantity)
	}
	return out
}

// xstep is the outcome of one reserve or decide that did not go through.
type xstep struct {
	busy bool  // stock held by in-flight attempts: wait and try again
	err  error // a refusal or an error
	// decided says the attempt's decide ran, which counted the request against the
	// buyer's rate limit: the attempts that follow while waiting do not count again.
	decided bool
}

// crossCheckout buys a cart spanning partitions (parts from splitLines), with the
// errors of Checkout.
func (r *Redis) crossCheckout(ctx context.Context, req CheckoutRequest, lines []Line, parts []xPart, id, fp string) (Order, error) {
	// A retry of a key that made its order is found by decide (the order record is at
	// the primary), or, if a line is refused or busy meanwhile, by xReplay below: no read
	// ahead of the first attempt.
	primary := parts[0].p
	deadline := time.Now().Add(r.x.wait)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		o, st := r.xAttempt(ctx, req, parts, id, fp)
		if st.decided {
			req.RatePerMinute = 0 // one checkout, counted once however long it waits
		}
		if !st.busy {
			if st.err != nil && req.IdempotencyKey != "" && isRefusal(st.err) {
				// Another attempt with this key (a double click) may have won meanwhile.
				if o, err, ok := r.xReplay(ctx, primary, id, fp); ok {
					return o, err
				}
			}
			return o, st.err
		}
		if time.Now().After(deadline) {
			if req.IdempotencyKey != "" {
				if o, err, ok := r.xReplay(ctx, primary, id, fp); ok {
					return o, err
				}
			}
			return Order{}, ErrStockBusy
		}
		// Units held by an attempt whose coordinator died come back once the sweeper
		// resolves it: sweep the partitions involved while waiting.
		for _, xp := range parts {
			_, _ = r.sweepPartition(ctx, xp.p)
		}
		select {
		case <-ctx.Done():
			return Order{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// isRefusal says whether err refuses the cart for what it asks (stock, a limit, a
// waiting-room pass, a SKU or its sale window): a retry with the key may meet it
// because its first call won (and spent the pass).
func isRefusal(err error) bool {
	var se *StockError
	var le *LimitError
	return errors.As(err, &se) || errors.As(err, &le) || errors.Is(err, ErrQueuePassRequired) ||
		errors.Is(err, ErrNotFound) || errors.Is(err, ErrSaleNotActive)
}

// xReplay answers a retry whose key already made an order (ok true). The record is read
// by a step that writes it again at the primary, so with WaitReplicas the answer waits
// for a replica to have it: the decide that made it may have been answered "unknown"
// for want of one, and a replayed order must survive a failover like a new one.
func (r *Redis) xReplay(ctx context.Context, primary *partition, id, fp string) (Order, error, bool) {
	rep, err := r.xrun(ctx, primary, []string{primary.k.Order(id)}, "confirm")
	if err != nil {
		// Whether the key made an order is not known: nor is what the retry must say.
		if !errors.Is(err, ErrOutcomeUnknown) {
			err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		return Order{}, fmt.Errorf("replay: %w", err), true
	}
	if rep.status() != "ok" {
		return Order{}, nil, false // no order yet
	}
	o, err := parseOrder(id, rep.str(1))
	if err != nil {
		return Order{}, fmt.Errorf("replay: %w", err), true
	}
	o.part = primary
	if o.fp != fp && o.fp != RecordedFingerprint {
		return Order{}, ErrIdempotencyKeyReused, true
	}
	o.Replayed = true
	return o, nil, true
}

func (r *Redis) newAttempt(id string) string {
	var b [8]byte
	if _, err := io.ReadFull(r.rand, b[:]); err != nil {
		return id + "~" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return id + "~" + hex.EncodeToString(b[:])
}

// xAttempt is one attempt: reserve, decide, commit or abort.
func (r *Redis) xAttempt(ctx context.Context, req CheckoutRequest, parts []xPart, id, fp string) (Order, xstep) {
	t := r.newAttempt(id)
	primary, secs := parts[0], parts[1:]
	pass := normalizePass(req.QueuePass)
	if r.crashAt("before-reserve", t) {
		return Order{}, xstep{err: errCoordinatorStopped}
	}
	type res struct {
		rep reply
		err error
	}
	out := make([]res, len(secs))
	parallel(len(secs), func(i int) {
		s := secs[i]
		k := s.p.k
		keys := append([]string{k.XAttempt(t)}, lineKeys(k, s.lines)...)
		args := append([]any{"reserve", t, primary.p.n, id, r.x.ttl.Milliseconds(), req.UserID, pass}, lineArgs(s.lines)...)
		rep, err := r.xrun(ctx, s.p, keys, args...)
		out[i] = res{rep, err}
	})
	var fail xstep
	currency, others, spent := "", []string{}, []string{}
	for _, o := range out {
		switch {
		case o.err != nil:
			if fail.err == nil || fail.busy {
				fail = xstep{err: o.err}
			}
		case o.rep.status() == "ok":
			if currency != "" && o.rep.str(1) != currency && fail.err == nil {
				fail = xstep{err: invalid("items", "the cart's SKUs are sold in different currencies")}
			}
			currency = o.rep.str(1)
			others = append(others, o.rep.str(2))
			spent = append(spent, spentPasses(o.rep.str(3))...)
		case o.rep.status() == "busy":
			if fail.err == nil {
				fail = xstep{busy: true, err: ErrStockBusy}
			}
		default:
			if fail.err == nil || fail.busy {
				fail = xstep{err: takeError(o.rep)}
			}
		}
	}
	if r.crashAt("after-reserve", t) {
		return Order{}, xstep{err: errCoordinatorStopped}
	}
	if fail.err != nil {
		r.xEnd(ctx, t, id, parts)
		return Order{}, fail
	}
	k := primary.p.k
	keys := append([]string{k.Order(id), k.RateLimit(req.UserID)}, lineKeys(k, primary.lines)...)
	args := append([]any{"decide", t, id, req.UserID, fp, max(req.RatePerMinute, 0), currency,
		strings.Join(others, ","), pass}, lineArgs(primary.lines)...)
	rep, err := r.xrun(ctx, primary.p, keys, args...)
	if r.crashAt("after-decide", t) {
		return Order{}, xstep{err: errCoordinatorStopped}
	}
	if err != nil {
		if errors.Is(err, ErrOutcomeUnknown) {
			// It may have been decided: the sweeper (or a retry with the key) resolves it
			// through the primary; the reservations must not be released before.
			return Order{}, xstep{err: fmt.Errorf("decide: %w", err)}
		}
		r.xEnd(ctx, t, id, parts)
		return Order{}, xstep{err: fmt.Errorf("decide: %w", err)}
	}
	switch rep.status() {
	case "ok":
		r.xFinish(ctx, t, secs, "commit")
		items, err := parseItems(rep.str(3))
		if err != nil {
			return Order{}, xstep{err: err}
		}
		o := newOrder(id, req.UserID, OrderConfirmed, rep.str(2), items, rep.num(1), "")
		o.part = primary.p
		o.PassesSpent = append(spent, spentPasses(rep.str(4))...)
		return o, xstep{}
	case "decided":
		if rep.str(1) == "c" { // a duplicate of this very decide ran: read what it made
			r.xFinish(ctx, t, secs, "commit")
			o, err := r.Order(ctx, id)
			return o, xstep{err: err}
		}
		// Resolved meanwhile (this attempt was slower than CrossAttemptTTL): try again.
		r.xFinish(ctx, t, secs, "abort")
		return Order{}, xstep{busy: true, err: ErrStockBusy}
	case "replay":
		r.xFinish(ctx, t, secs, "abort")
		o, err := r.Order(ctx, id)
		if err != nil {
			return Order{}, xstep{err: fmt.Errorf("replay: %w", replayReadErr(err))}
		}
		o.Replayed = true
		return o, xstep{}
	case "busy": // after the rate limit counted it
		r.xFinish(ctx, t, secs, "abort")
		return Order{}, xstep{busy: true, err: ErrStockBusy, decided: true}
	}
	r.xFinish(ctx, t, secs, "abort")
	return Order{}, xstep{err: takeError(rep)}
}

// xop is one step of a cross-partition checkout (xcart.lua) waiting for its
// partition's batch: its keys and values as the step reads them.
type xop struct {
	pending
	keys []string
	args []any
}

func (op *xop) call() *pending { return &op.pending }
func (op *xop) keyCount() int  { return len(op.keys) }
func (op *xop) argCount() int  { return 2 + len(op.args) }

// appendTo appends the step to a batch: its keys, then its key count, value count and
// values (the keys already carry the partition's tag).
func (op *xop) appendTo(_ Keys, keys []string, args []any) ([]string, []any) {
	return append(keys, op.keys...), append(append(args, len(op.keys), len(op.args)), op.args...)
}

// newXBatcher makes partition k's batcher of cross-partition steps.
func newXBatcher(r *Redis, k Keys, workers int) *batcher[*xop] {
	// The batch's head: the outbox, the in-flight hash, the attempts index, the ended
	// and decisions sets, and how long the last two keep their entries.
	head := func() ([]string, []any) {
		return []string{k.Outbox(), k.XInFlight(), k.XAttempts(), k.XEnded(), k.XDecisions()}, []any{r.tombTTL()}
	}
	return newBatcher[*xop](r, k, scriptXCart, head, workers)
}

// xrun runs one step of xcart.lua at partition p, batched with other checkouts' steps
// there (at most once, as every script: see batcher.submit).
func (r *Redis) xrun(ctx context.Context, p *partition, keys []string, args ...any) (reply, error) {
	rep, err := p.xbatch.submit(&xop{pending: pending{ctx: ctx}, keys: keys, args: args})
	if err != nil {
		if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrOutcomeUnknown) {
			// The call failed after it ran (a failed write behind the steps): the
			// batch's steps may have made their records. Unknown, never "not applied".
			err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		return nil, err
	}
	if rep.status() == "error" {
		return nil, fmt.Errorf("script: %s", rep.str(1))
	}
	return rep, nil
}

// xEnd ends an undecided attempt t of order id: resolve at the primary (presumed abort), then commit
// or abort at every secondary as the decision says. An error leaves it to the sweeper.
func (r *Redis) xEnd(ctx context.Context, t, id string, parts []xPart) {
	d, err := r.xResolve(ctx, parts[0].p, t, id, false)
	if err != nil {
		return
	}
	step := "abort"
	if d == "c" {
		step = "commit"
	}
	r.xFinish(ctx, t, parts[1:], step)
}

// xResolve returns attempt t (of order id)'s decision at its primary p: committed if
// the order record names t, aborted if the decisions set says so, and otherwise made
// aborted (presumed abort). old says the attempt was made by the previous format (a
// hash attempt record), whose decide reads its own decision key: the abort is written
// there too.
func (r *Redis) xResolve(ctx context.Context, p *partition, t, id string, old bool) (string, error) {
	legacy := "0"
	if old {
		legacy = "1"
	}
	rep, err := r.xrun(ctx, p, []string{p.k.XDecision(t), p.k.Order(id)}, "resolve", t, legacy, r.tombTTL())
	if err != nil {
		return "", err
	}
	return rep.status(), nil
}

// xFinish commits or aborts attempt t at each secondary, in parallel; failures are left
// to the sweeper.
func (r *Redis) xFinish(ctx context.Context, t string, secs []xPart, step string) {
	n := len(secs)
	for i := 1; i < len(secs); i++ {
		if step == "commit" && r.crashAt("mid-commit", t) {
			n = i // the coordinator stops after committing the first i
			break
		}
	}
	parallel(n, func(i int) {
		s := secs[i]
		skus := make([]string, len(s.lines))
		for j, l := range s.lines {
			skus[j] = l.SKU
		}
		_, _ = r.xSettle(ctx, s.p, t, step, skus)
	})
}

// parallel runs f(0) ... f(n-1) at once and waits for them; one runs on the caller's
// goroutine (most cross-partition carts have one secondary partition).
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() { f(i) })
	}
	if n > 0 {
		f(0)
	}
	wg.Wait()
}

// xSettle runs commit or abort of attempt t at partition p, whose record lists skus.
func (r *Redis) xSettle(ctx context.Context, p *partition, t, step string, skus []string) (string, error) {
	k := p.k
	keys := []string{k.XAttempt(t)}
	args := []any{step, t}
	for _, s := range skus {
		keys = append(keys, k.Stock(s), k.Bought(s), k.Room(s, "p"), k.Room(s, "h"))
		args = append(args, s)
	}
	rep, err := r.xrun(ctx, p, keys, args...)
	if err != nil {
		return "", err
	}
	return rep.status(), nil
}

// SweepCrossPartition resolves every cross-partition reservation older than
// CrossAttemptTTL, in every partition, through its primary's decision (committed: sell
// the units; none or aborted: give them back). It returns how many it resolved. Any
// process may run it at any time: every step is idempotent.
func (r *Redis) SweepCrossPartition(ctx context.Context) (int, error) {
	n := 0
	var errs []error
	for _, p := range r.parts {
		m, err := r.sweepPartition(ctx, p)
		n += m
		if err != nil {
			errs = append(errs, err)
		}
	}
	m, err := r.SweepCrossCancels(ctx) // and the restores of cross-partition cancels (xcancel.go)
	n, errs = n+m, append(errs, err)
	return n, errors.Join(errs...)
}

func (r *Redis) sweepPartition(ctx context.Context, p *partition) (int, error) {
	if len(r.parts) == 1 {
		return 0, nil
	}
	now := time.Now().UnixMilli()
	ts, err := r.rdb.ZRangeByScore(ctx, p.k.XAttempts(), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now, 10), Count: 100}).Result()
	if err != nil {
		return 0, readErr("sweep cross-partition attempts", err)
	}
	n := 0
	var errs []error
	for _, t := range ts {
		rec, err := r.readAttempt(ctx, p, t)
		if err != nil {
			errs = append(errs, err)
			r.sweepLater(ctx, p.k.XAttempts(), t)
			continue
		}
		if !rec.held || rec.primary < 0 || rec.primary >= len(r.parts) || len(rec.skus) == 0 {
			// Ended (or not a record this version reads): it has no units to give back.
			r.rdb.ZRem(ctx, p.k.XAttempts(), t)
			continue
		}
		prim, skus := rec.primary, rec.skus
		d, err := r.xResolve(ctx, r.parts[prim], t, rec.order, rec.old)
		if err == nil {
			step := "abort"
			if d == "c" {
				step = "commit"
			}
			_, err = r.xSettle(ctx, p, t, step, skus)
		}
		if err != nil {
			errs = append(errs, err)
			r.sweepLater(ctx, p.k.XAttempts(), t)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// xRecord is what the sweeper reads of an attempt record.
type xRecord struct {
	held    bool // the reservation is held (the record exists and is not a tombstone)
	old     bool // the previous format's record (a hash): its primary's decide reads xd:T
	primary int
	order   string   // the order id
	skus    []string // the SKUs of its lines, in order
}

// readAttempt reads attempt t's record at partition p: a string
// "h\n<primary>\n<order id>\n<expiry ms>\n<lines>\n<passes>\n<user>" (xcart.lua), or a hash of
// the previous format (st, p, l), kept readable so that an upgrade during a sale leaves
// no attempt the sweeper cannot end.
func (r *Redis) readAttempt(ctx context.Context, p *partition, t string) (xRecord, error) {
	key := p.k.XAttempt(t)
	var st, prim, order, lines string
	old := false
	v, err := r.rdb.Get(ctx, key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return xRecord{}, nil
	case err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE"):
		hv, herr := r.rdb.HMGet(ctx, key, "st", "p", "l", "o").Result()
		if herr != nil {
			return xRecord{}, herr
		}
		st, _ = hv[0].(string)
		prim, _ = hv[1].(string)
		lines, _ = hv[2].(string)
		order, _ = hv[3].(string)
		old = true
	case err != nil:
		return xRecord{}, err
	default:
		f := strings.SplitN(v, "\n", 7) // 6 fields before records kept their passes
		if len(f) < 6 {
			return xRecord{}, fmt.Errorf("attempt record %s does not parse", key)
		}
		st, prim, order, lines = f[0], f[1], f[2], f[4]
	}
	n, err := strconv.Atoi(prim)
	if err != nil {
		n = -1
	}
	rec := xRecord{held: st == "h", old: old, primary: n, order: order}
	for item := range strings.SplitSeq(lines, ",") {
		if sku, _, ok := strings.Cut(item, ":"); ok {
			rec.skus = append(rec.skus, sku)
		}
	}
	return rec, nil
}

// sweepRetry is how long a sweeper leaves an entry it could not resolve before trying
// it again, so that a few entries failing every time (a corrupt record) do not keep the
// others, behind them in the index, from being swept.
const sweepRetry = 5 * time.Second

// sweepLater moves member of a sweeper's index (a sorted set by due time) sweepRetry
// ahead; a member the index no longer has stays out of it.
func (r *Redis) sweepLater(ctx context.Context, index, member string) {
	due := float64(time.Now().Add(sweepRetry).UnixMilli())
	r.rdb.ZAddXX(ctx, index, redis.Z{Score: due, Member: member})
}

func (r *Redis) sweepLoop() {
	defer close(r.x.done)
	tk := time.NewTicker(r.x.sweepEvery)
	defer tk.Stop()
	for {
		select {
		case <-r.x.stop:
			return
		case <-tk.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = r.SweepCrossPartition(ctx)
			cancel()
		}
	}
}

// xHeldShortage says whether every short line of se is short only because of units
// held by in-flight cross-partition attempts (so the buyer should wait).
func (r *Redis) xHeldShortage(ctx context.Context, p *partition, se *StockError) bool {
	fields := make([]string, len(se.Short))
	for i, s := range se.Short {
		fields[i] = s.SKU
	}
	vs, err := r.rdb.HMGet(ctx, p.k.XInFlight(), fields...).Result()
	if err != nil {
		return false
	}
	for i, s := range se.Short {
		str, _ := vs[i].(string)
		held, _ := strconv.ParseInt(str, 10, 64)
		if held <= 0 || s.Available+held < s.Requested {
			return false
		}
	}
	return true
}
