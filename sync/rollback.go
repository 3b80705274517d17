package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

// Rollback is a SKU whose MongoDB history was ahead of Redis (invariant 12): Redis
// handed out sequence numbers MongoDB already held, because it lost writes MongoDB had
// received (a crash with appendfsync everysec, a failover to a lagging replica).
type Rollback struct {
	SKU string `json:"sku" bson:"sku"`
	// RedisVersion is the SKU's live sequence when the rollback was found, and
	// LedgerVersion how far MongoDB's contiguous ledger reached.
	RedisVersion  int64 `json:"redisVersion" bson:"redisVersion"`
	LedgerVersion int64 `json:"ledgerVersion" bson:"ledgerVersion"`
	// Renumbered counts movements Redis made under sequence numbers MongoDB already
	// held (kept in the conflicts collection), recorded again by the restore.
	Renumbered int `json:"renumbered" bson:"renumbered"`
	// RestoredOrders counts order records MongoDB had and Redis had lost, written back.
	RestoredOrders int `json:"restoredOrders" bson:"restoredOrders"`
	// ReleasedHolds counts reserved units returned to available: their holds were lost.
	ReleasedHolds int64 `json:"releasedHolds" bson:"releasedHolds"`
	// Restored is true when the SKU's levels and sequence were written back from
	// MongoDB; false when it could not be yet (the next run tries again).
	Restored bool `json:"restored" bson:"restored"`
	// Version is the SKU's sequence after the restore.
	Version int64 `json:"version" bson:"version"`
	// Error says why it was not restored, if it was not.
	Error string `json:"error,omitempty" bson:"error,omitempty"`
}

// rebaseHook, when set (tests), runs just before a restore is written.
var rebaseHook func(sku string)

// rebaseAttempts bounds the retries of a restore whose SKU moved meanwhile.
const rebaseAttempts = 5

// findRollbacks checks every SKU Redis has for a rollback: MongoDB's fold past the live
// sequence, or movements kept as conflicts. Each one found is restored from MongoDB.
// The caller has brought MongoDB up to the outbox entries behind live (catchUp).
func findRollbacks(ctx context.Context, inv *engine.Redis, st *store.Store, live map[string]engine.Level,
	log *slog.Logger, caught *string) ([]Rollback, error) {
	folds, err := st.Folds(ctx)
	if err != nil {
		return nil, err
	}
	conflicts, err := st.OpenConflicts(ctx)
	if err != nil {
		return nil, err
	}
	var out []Rollback
	for sku, lv := range live {
		if folds[sku].Seq <= lv.Version && len(conflicts[sku]) == 0 {
			continue
		}
		rb, err := rebaseSKU(ctx, inv, st, sku, caught)
		if err != nil {
			if ctx.Err() != nil {
				return out, err
			}
			// One SKU that cannot be restored now must not stop the others (nor a
			// start-up): it is reported, and the next run tries again.
			rb = &Rollback{SKU: sku, RedisVersion: lv.Version, LedgerVersion: folds[sku].Seq, Error: err.Error()}
		}
		if rb == nil {
			continue
		}
		log.Error("Redis was rolled back: MongoDB holds movements Redis has lost or numbered again",
			"sku", sku, "redis_version", rb.RedisVersion, "ledger_version", rb.LedgerVersion,
			"renumbered", rb.Renumbered, "restored_orders", rb.RestoredOrders, "released_hold_units", rb.ReleasedHolds,
			"restored", rb.Restored, "version", rb.Version, "error", rb.Error)
		out = append(out, *rb)
	}
	return out, nil
}

// rebaseSKU restores one SKU that Redis has from MongoDB: the fold's levels and
// sequence, plus the movements Redis numbered again, minus the units of lost holds,
// with the order records Redis lost, under compare-and-set on the live sequence (a
// SKU that moves meanwhile is read again). It returns nil if the SKU was not rolled
// back after all.
//
// caught is the last outbox entry a catch-up of this run wrote ("" for none): SKUs
// restored one after another catch up only what came since, not the whole backlog each.
func rebaseSKU(ctx context.Context, inv *engine.Redis, st *store.Store, sku string, caught *string) (*Rollback, error) {
	// One restorer per SKU at a time (syncers, scheduled and admin reconciliations):
	// two could both count the same conflicts before either marks them resolved.
	// The TTL only matters if this process dies holding it: long enough for a restore
	// behind a large backlog, short enough that a crash does not block restores for long.
	lock, err := Acquire(ctx, inv.Client(), inv.Keys().Rebase(sku), 5*time.Minute)
	if errors.Is(err, ErrLocked) {
		return &Rollback{SKU: sku, Error: "another process is restoring it"}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rollback %s: %w", sku, err)
	}
	defer lock.Release(context.WithoutCancel(ctx))
	var cs []store.Conflict
	var rb *Rollback
	for range rebaseAttempts {
		lvs, err := inv.Lookup(ctx, []string{sku})
		if err != nil {
			return nil, fmt.Errorf("rollback %s: %w", sku, err)
		}
		lv, ok := lvs[sku]
		if !ok {
			return rb, nil // lost altogether meanwhile: Rebuild's job
		}
		// Every movement up to lv is in an outbox entry up to last: once those are in
		// MongoDB, the movements Redis numbered again are all kept as conflicts.
		last, err := lastEntry(ctx, inv)
		if err != nil {
			return nil, fmt.Errorf("rollback %s: %w", sku, err)
		}
		if last != *caught {
			if err := catchUp(ctx, inv, st, last); err != nil {
				return nil, fmt.Errorf("rollback %s: %w", sku, err)
			}
			*caught = last
		}
		open, err := st.OpenConflicts(ctx)
		if err != nil {
			return nil, fmt.Errorf("rollback %s: %w", sku, err)
		}
		if cs, err = unapplied(ctx, st, sku, open[sku]); err != nil {
			return nil, fmt.Errorf("rollback %s: %w", sku, err)
		}
		f, err := st.Advance(ctx, sku, nil)
		if err != nil {
			return nil, fmt.Errorf("rollback %s: %w", sku, err)
		}
		if f.Seq <= lv.Version && len(cs) == 0 {
			return rb, nil
		}
		rb = &Rollback{SKU: sku, RedisVersion: lv.Version, LedgerVersion: f.Seq, Renumbered: len(cs)}
		if f.Seq < lv.Version {
			// A gap in the ledger below Redis's sequence (an entry another syncer is
			// still writing): restoring now could drop movements. The next run retries.
			rb.Error = "the ledger has a gap below Redis's sequence"
			return rb, nil
		}
		req, err := rebaseRequest(ctx, inv, st, sku, lv, f, cs)
		if err != nil {
			return nil, err
		}
		if err := markApplying(ctx, st, &req, cs); err != nil {
			return nil, fmt.Errorf("rollback %s: %w", sku, err)
		}
		if rebaseHook != nil {
			rebaseHook(sku)
		}
		res, err := inv.Rebase(ctx, req)
		if errors.Is(err, engine.ErrVersionConflict) {
			continue // the SKU moved since it was read: read it again
		}
		if errors.Is(err, engine.ErrInvalid) {
			rb.Error = err.Error()
			return rb, nil
		}
		if err != nil {
			return nil, fmt.Errorf("rollback %s: %w", sku, err)
		}
		if err := st.ResolveConflicts(ctx, cs, f.Seq+1); err != nil {
			return nil, fmt.Errorf("rollback %s: %w", sku, err)
		}
		rb.Restored, rb.Version = true, res.Level.Version
		rb.RestoredOrders, rb.ReleasedHolds = res.RestoredOrders, req.Release
		return rb, nil
	}
	rb.Error = fmt.Sprintf("the SKU kept moving through %d attempts", rebaseAttempts)
	return rb, nil
}

// rebaseRequest builds the restore of a rolled-back SKU whose live level is lv.
func rebaseRequest(ctx context.Context, inv *engine.Redis, st *store.Store, sku string, lv engine.Level,
	f store.Fold, cs []store.Conflict) (engine.RebaseRequest, error) {
	req := engine.RebaseRequest{SKU: sku, ExpectedVersion: lv.Version,
		Fold:   engine.Level{SKU: sku, Available: f.Available, Reserved: f.Reserved, Sold: f.Sold, Version: f.Seq},
		Reason: fmt.Sprintf("Redis rolled back to %d; MongoDB had %d", lv.Version, f.Seq)}
	// The rollback point: Redis's sequence, or below the first number it gave out again.
	from := lv.Version
	for _, c := range cs {
		from = min(from, c.Seq-1)
	}
	tail, err := st.LedgerAfter(ctx, sku, from, f.Seq)
	if err != nil {
		return req, fmt.Errorf("rollback %s: %w", sku, err)
	}
	// A movement Redis made again for an order MongoDB has past the rollback point is
	// the same order run twice (a keyed retry after Redis lost its record, a hold
	// committed again: commits are named by their hold): it counts once. The re-run is
	// a conflict when it took a number MongoDB held, or a second ledger entry when it
	// took a new one; the fold holds the latter, so its deltas are taken back out.
	ledgered := map[string]bool{}
	for _, e := range tail {
		if e.Ref == "" {
			continue
		}
		if k := e.Kind + "\n" + e.Ref; ledgered[k] {
			req.Again.Available -= e.Available
			req.Again.Reserved -= e.Reserved
			req.Again.Sold -= e.Sold
		} else {
			ledgered[k] = true
		}
	}
	for _, c := range cs {
		if m := c.Movement; m.Ref != "" && ledgered[m.Kind+"\n"+m.Ref] {
			continue
		}
		req.Again.Available += c.Movement.Available
		req.Again.Reserved += c.Movement.Reserved
		req.Again.Sold += c.Movement.Sold
	}
	// Orders MongoDB has past the rollback point may be gone from Redis, and holds it
	// settled there may still be active in Redis.
	seen := map[string]bool{}
	settled := map[string]engine.SettledHold{}
	for _, e := range tail {
		if e.Ref == "" || seen[e.Kind+e.Ref] {
			continue
		}
		seen[e.Kind+e.Ref] = true
		switch e.Kind {
		case "release":
			settled[e.Ref] = engine.SettledHold{Status: engine.HoldReleased}
		case "expire":
			settled[e.Ref] = engine.SettledHold{Status: engine.HoldExpired}
		case "sale", "commit", "cancel":
			o, lines, err := st.OrderRecord(ctx, e.Ref)
			if errors.Is(err, engine.ErrNotFound) {
				continue
			}
			if err != nil {
				return req, fmt.Errorf("rollback %s: %w", sku, err)
			}
			ro := engine.RestoredOrder{Order: o, Lines: lines, Uncounted: true}
			if o.HoldID != "" {
				settled[o.HoldID] = engine.SettledHold{Status: engine.HoldCommitted, OrderID: o.ID}
				// A hold Redis still has counts the units already.
				_, err := inv.Hold(ctx, o.HoldID)
				if err != nil && !errors.Is(err, engine.ErrNotFound) {
					return req, fmt.Errorf("rollback %s: %w", sku, err)
				}
				ro.Uncounted = err != nil
			}
			req.Orders = append(req.Orders, ro)
		}
	}
	// What the settled holds still reserve in Redis is not held any more.
	var unheld int64
	for id, sh := range settled {
		h, err := inv.Hold(ctx, id)
		if errors.Is(err, engine.ErrNotFound) {
			continue
		}
		if err != nil {
			return req, fmt.Errorf("rollback %s: %w", sku, err)
		}
		if h.Status != engine.HoldActive {
			continue
		}
		sh.Hold = h
		req.Settled = append(req.Settled, sh)
		for _, it := range h.Items {
			if it.SKU == sku {
				unheld += it.Quantity
			}
		}
	}
	release, err := lostHoldUnits(ctx, inv, sku, f.Reserved+req.Again.Reserved+unheld)
	req.Release = release
	return req, err
}

// lostHoldUnits is how many of reserved units no hold in Redis accounts for: their holds
// were lost with Redis's data and can never be settled.
func lostHoldUnits(ctx context.Context, inv *engine.Redis, sku string, reserved int64) (int64, error) {
	if reserved <= 0 {
		return 0, nil
	}
	held, err := inv.HeldUnits(ctx)
	if err != nil {
		return 0, fmt.Errorf("rollback %s: %w", sku, err)
	}
	return max(reserved-held[sku], 0), nil
}

// catchUp writes every outbox entry not yet persisted, up to and including entry upTo,
// to MongoDB, as a syncer would (the same idempotent writes; nothing is acknowledged,
// so the syncers still process them, harmlessly). After it, every movement Redis made
// up to upTo is in the ledger or kept as a conflict: a restore may rely on it even
// before the syncers have caught up (at start-up none runs yet).
//
// upTo is lastEntry's answer: one entry id per partition's stream, joined by ",".
func catchUp(ctx context.Context, inv *engine.Redis, st *store.Store, upTo string) error {
	ids := strings.Split(upTo, ",")
	streams := inv.OutboxKeys()
	if len(ids) != len(streams) {
		return fmt.Errorf("catch up: %d entry ids for %d outbox streams", len(ids), len(streams))
	}
	for i, stream := range streams {
		if err := catchUpStream(ctx, inv, st, stream, ids[i]); err != nil {
			return err
		}
	}
	return nil
}

func catchUpStream(ctx context.Context, inv *engine.Redis, st *store.Store, stream, upTo string) error {
	rdb := inv.Client()
	start := "-"
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil && !isNoStream(err) {
		return fmt.Errorf("catch up: %w", err)
	}
	for _, g := range groups {
		if g.Name != Group {
			continue
		}
		start = "(" + g.LastDeliveredID
		p, err := rdb.XPending(ctx, stream, Group).Result()
		if err != nil {
			return fmt.Errorf("catch up: %w", err)
		}
		if p.Count > 0 {
			start = p.Lower
		}
	}
	for {
		msgs, err := rdb.XRangeN(ctx, stream, start, upTo, 100).Result()
		if err != nil {
			return fmt.Errorf("catch up: %w", err)
		}
		var events []engine.Event
		lines := map[string]string{}
		for _, m := range msgs {
			evs, err := engine.DecodeEntry(m.ID, m.Values)
			if err != nil {
				continue // the syncer parks it
			}
			events = append(events, evs...)
			for id, l := range engine.RecordedLines(m.Values) {
				lines[id] = l
			}
		}
		if _, err := st.ApplyBatch(ctx, events, lines); err != nil {
			return fmt.Errorf("catch up: %w", err)
		}
		if len(msgs) < 100 {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

func isNoStream(err error) bool {
	return err != nil && (strings.HasPrefix(err.Error(), "ERR no such key") || strings.Contains(err.Error(), "no such key"))
}

// lastEntry is the id of each partition's outbox stream's newest entry ("0" when it is
// empty), joined by "," in partition order.
func lastEntry(ctx context.Context, inv *engine.Redis) (string, error) {
	streams := inv.OutboxKeys()
	ids := make([]string, len(streams))
	for i, stream := range streams {
		msgs, err := inv.Client().XRevRangeN(ctx, stream, "+", "-", 1).Result()
		if err != nil {
			return "", fmt.Errorf("outbox: %w", err)
		}
		ids[i] = "0"
		if len(msgs) > 0 {
			ids[i] = msgs[0].ID
		}
	}
	return strings.Join(ids, ","), nil
}

// unapplied returns the conflicts a restore has not yet recorded again. A conflict
// marked by a restore whose outcome was never seen (the process died, the reply was
// lost) was applied if that restore's rebase movement is in the ledger (the caller has
// caught MongoDB up with the outbox): it is resolved now instead of applied twice.
func unapplied(ctx context.Context, st *store.Store, sku string, cs []store.Conflict) ([]store.Conflict, error) {
	out := make([]store.Conflict, 0, len(cs))
	byToken := map[string][]store.Conflict{}
	for _, c := range cs {
		if c.Pending == "" {
			out = append(out, c)
		} else {
			byToken[c.Pending] = append(byToken[c.Pending], c)
		}
	}
	for token, group := range byToken {
		seq, found, err := st.RebaseMovement(ctx, sku, token)
		if err != nil {
			return nil, err
		}
		if !found {
			out = append(out, group...)
			continue
		}
		if err := st.ResolveConflicts(ctx, group, seq); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// markApplying names the restore req in its reason and on the conflicts it records
// again, before it is written (see unapplied).
func markApplying(ctx context.Context, st *store.Store, req *engine.RebaseRequest, cs []store.Conflict) error {
	if len(cs) == 0 {
		return nil
	}
	token := "rebase-" + engine.NewID()
	req.Reason += " (" + token + ")"
	return st.MarkConflicts(ctx, cs, token)
}
