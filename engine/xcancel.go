package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/scripts/lua"
)

// Cross-partition cancel: an order whose lines live in several partitions (made by a
// cross-partition checkout, xcart.go) has its record, with every line, in one partition,
// its home (the cart's primary); the other partitions' lines were sold there. No script
// can touch two slots, so the cancel runs in steps (scripts/lua/xcancel.lua):
//
//  1. cancel at the home partition: the decision, once. It marks the record cancelled,
//     returns the home's own lines sold -> available, lists the order in the home's
//     pending-restores index (XCancels, scored by when a sweeper may re-drive it) and
//     emits the order's one 'cancel' event. A repeat answers 'replay'.
//  2. restore at every other partition, in parallel: that partition's lines sold ->
//     available and an 'xrestore' event, once per order and partition (a marker,
//     XRestored, makes a repeat restore nothing). A line whose checkout commit there has
//     not run yet (fewer units sold than the line's) is not restored yet: 'busy', and the
//     sweeper, which commits the checkout first, tries again.
//  3. once every restore answered (restored now or before), the order leaves the index.
//
// A crash (or an error) after step 1 leaves the order in the index: the sweeper
// (SweepCrossCancels, run with SweepCrossPartition) and any repeated Cancel re-drive
// the restores. Restores are only ever driven for an order in its home's index, and the
// marker outlives the index entry by far (RecordTTL + an hour from the restore, and
// RetireOrders gives it the record's own TTL), so each partition's units return once.

var scriptXCancel = newScript(lua.XCancel)

// restoredTTL is how long a restore's marker is kept, seconds: longer than the order
// record it answers for (RecordTTL, from when MongoDB has the order; RetireOrders sets
// both alike when it does).
func (r *Redis) restoredTTL() string {
	ttl, _ := strconv.ParseInt(r.recTTL, 10, 64)
	return strconv.FormatInt(ttl+3600, 10)
}

// crossCancel cancels order o, read at its home partition, whose lines live in the
// partitions ps (ps[i] holds o.Items[i]), not all home: step 1, then the restores.
// Errors: those of cancel. An error means the order was not cancelled, or (ErrOutcomeUnknown)
// that it may have been; once step 1 is done the answer is the cancelled order, the
// restores that failed being left to the sweeper.
func (r *Redis) crossCancel(ctx context.Context, o Order, home *partition, ps []*partition) (Order, error) {
	raw := strings.Split(o.lines, ",")
	if len(raw) != len(o.Items) || len(ps) != len(o.Items) {
		return Order{}, fmt.Errorf("cancel %s: malformed record lines", o.ID)
	}
	k := home.k
	keys := []string{k.Outbox(), k.Order(o.ID), k.XCancels()}
	var pos []any
	var local []string
	for i, it := range o.Items {
		if ps[i] == home {
			keys = append(keys, k.Stock(it.SKU), k.Bought(it.SKU))
			pos = append(pos, i+1)
			local = append(local, it.SKU)
		}
	}
	if len(pos) == 0 {
		return Order{}, fmt.Errorf("cancel %s: the record's partition holds none of its lines", o.ID)
	}
	keys = append(keys, k.RestockChannel())
	due := time.Now().Add(r.x.ttl).UnixMilli()
	rep, err := run(ctx, r.sc, scriptXCancel, keys, append([]any{"cancel", o.ID, o.lines, due}, pos...)...)
	if err == nil && r.crashAt("after-cancel", o.ID) {
		err = errCoordinatorStopped
	}
	if err == nil {
		switch rep.status() {
		case "ok":
			r.restocked(local...)
			_, _ = r.xRestore(ctx, o, home, ps) // what fails is the sweeper's
			o.Status = OrderCancelled
			return o, nil
		case "replay":
			// Cancelled before: finish its restores now if they may still be owed (a
			// retry after a lost reply need not wait for the sweeper).
			if _, zerr := r.rdb.ZScore(ctx, k.XCancels(), o.ID).Result(); zerr == nil {
				_, _ = r.xRestore(ctx, o, home, ps)
			}
			o.Status, o.Replayed = OrderCancelled, true
			return o, nil
		case "not_found":
			err = ErrNotFound
		default:
			err = rep.expect("ok")
		}
	}
	return Order{}, fmt.Errorf("cancel %s: %w", o.ID, err)
}

// xRestore runs, in parallel, the restores order o's other partitions owe (o is read at
// home; ps[i] holds o.Items[i]) and takes the order out of home's pending index once
// every one answered 'ok' or 'replay'. It returns how many partitions restored units now.
func (r *Redis) xRestore(ctx context.Context, o Order, home *partition, ps []*partition) (int, error) {
	raw := strings.Split(o.lines, ",")
	if len(raw) != len(o.Items) || len(ps) != len(o.Items) {
		return 0, fmt.Errorf("restore %s: malformed record lines", o.ID)
	}
	var secs []*partition
	at := map[*partition][]int{}
	for i, p := range ps {
		if p == home {
			continue
		}
		if at[p] == nil {
			secs = append(secs, p)
		}
		at[p] = append(at[p], i)
	}
	errs := make([]error, len(secs))
	restored := make([]bool, len(secs))
	var wg sync.WaitGroup
	for j, p := range secs {
		if j > 0 && r.crashAt("mid-restore", o.ID) {
			errs[j] = errCoordinatorStopped
			break
		}
		wg.Go(func() {
			k := p.k
			keys := []string{k.Outbox(), k.XRestored(o.ID)}
			args := []any{"restore", o.ID, o.UserID, r.restoredTTL()}
			var skus []string
			for _, i := range at[p] {
				keys = append(keys, k.Stock(o.Items[i].SKU), k.Bought(o.Items[i].SKU))
				args = append(args, raw[i])
				skus = append(skus, o.Items[i].SKU)
			}
			keys = append(keys, k.RestockChannel())
			rep, err := run(ctx, r.sc, scriptXCancel, keys, args...)
			switch {
			case err != nil:
			case rep.status() == "ok":
				restored[j] = true
				r.restocked(skus...)
			case rep.status() == "replay":
			case rep.status() == "not_found":
				err = fmt.Errorf("sku %s: %w", rep.str(1), ErrNotFound)
			case rep.status() == "busy":
				// The checkout's commit of this line has not run yet (its attempt is the
				// cross-partition sweeper's): the cancel sweeper tries again later.
				err = fmt.Errorf("sku %s: not committed yet: %w", rep.str(1), ErrStockBusy)
			case rep.status() == "error":
				err = fmt.Errorf("script: %s", rep.str(1))
			default:
				err = rep.expect("ok")
			}
			if err != nil {
				errs[j] = fmt.Errorf("restore %s at partition %d: %w", o.ID, p.n, err)
			}
		})
	}
	wg.Wait()
	n := 0
	for _, ok := range restored {
		if ok {
			n++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, err
	}
	if err := r.rdb.ZRem(ctx, home.k.XCancels(), o.ID).Err(); err != nil {
		return n, readErr("restore "+o.ID+": done", err)
	}
	return n, nil
}

// SweepCrossCancels re-drives the restores of cross-partition cancellations still
// pending past their due time (CrossAttemptTTL after the cancel), in every partition,
// and returns how many partitions' restores it made. SweepCrossPartition runs it; any
// process may run it at any time: every restore is idempotent.
func (r *Redis) SweepCrossCancels(ctx context.Context) (int, error) {
	if len(r.parts) == 1 {
		return 0, nil
	}
	n := 0
	var errs []error
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	for _, p := range r.parts {
		ids, err := r.rdb.ZRangeByScore(ctx, p.k.XCancels(), &redis.ZRangeBy{Min: "-inf", Max: now, Count: 100}).Result()
		if err != nil {
			errs = append(errs, readErr("sweep cross-partition cancels", err))
			continue
		}
		for _, id := range ids {
			m, err := r.sweepCancel(ctx, p, id)
			n += m
			if err != nil {
				errs = append(errs, err)
				r.sweepLater(ctx, p.k.XCancels(), id)
			}
		}
	}
	return n, errors.Join(errs...)
}

// sweepCancel re-drives the restores of order id, pending in partition p's index.
func (r *Redis) sweepCancel(ctx context.Context, p *partition, id string) (int, error) {
	// Read by a step that writes the record again, so that with WaitReplicas a replica
	// has the cancel before any other partition gives units back for it: a cancel whose
	// own call was answered "unknown" may exist on this master alone.
	rep, err := r.xrun(ctx, p, []string{p.k.Order(id)}, "confirm")
	if err != nil {
		return 0, fmt.Errorf("sweep cancel %s: %w", id, err)
	}
	if rep.status() != "ok" {
		// No record (it expired, long after its restores were due): nothing to drive.
		return 0, r.rdb.ZRem(ctx, p.k.XCancels(), id).Err()
	}
	v := rep.str(1)
	o, err := parseOrder(id, v)
	if err != nil {
		return 0, fmt.Errorf("sweep cancel: %w", err)
	}
	if o.Status != OrderCancelled {
		// Not this version's entry (the cancel lists an order only as it marks it cancelled).
		return 0, r.rdb.ZRem(ctx, p.k.XCancels(), id).Err()
	}
	o.part = p
	defer r.restocking()()
	ps, err := r.partitionsOf(ctx, itemSKUs(o.Items))
	if err != nil {
		return 0, fmt.Errorf("sweep cancel %s: %w", id, err)
	}
	return r.xRestore(ctx, o, p, ps)
}
