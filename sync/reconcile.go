package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
)

// Levels are the three stock levels of a SKU.
type Levels struct {
	Available int64 `json:"available" bson:"available"`
	Reserved  int64 `json:"reserved" bson:"reserved"`
	Sold      int64 `json:"sold" bson:"sold"`
}

func (l Levels) minus(o Levels) Levels {
	return Levels{l.Available - o.Available, l.Reserved - o.Reserved, l.Sold - o.Sold}
}

// Drift is a SKU whose live levels differ from what its ledger implies.
type Drift struct {
	SKU      string `json:"sku" bson:"sku"`
	Version  int64  `json:"version" bson:"version"` // the movement sequence both sides were compared at
	Redis    Levels `json:"redis" bson:"redis"`
	Expected Levels `json:"expected" bson:"expected"`
	Delta    Levels `json:"delta" bson:"delta"` // redis minus expected
	Repaired bool   `json:"repaired" bson:"repaired"`
}

// Report is the outcome of one reconciliation.
type Report struct {
	At          time.Time `json:"at" bson:"at"`
	CheckedSKUs int       `json:"checkedSkus" bson:"checkedSkus"`
	Drift       []Drift   `json:"drift" bson:"drift"`
	// Repaired is true when repair was asked for and every drift was compensated.
	Repaired bool `json:"repaired" bson:"repaired"`
	// Behind lists SKUs whose ledger had not caught up with Redis within the wait;
	// they were not compared, and a later run will.
	Behind []string `json:"behind" bson:"behind"`
	// Rebuilt lists SKUs missing from Redis that were restored from MongoDB.
	Rebuilt []string `json:"rebuilt" bson:"rebuilt"`
	// RolledBack lists SKUs whose MongoDB history was ahead of Redis (a Redis rollback),
	// restored from MongoDB (see Rollback).
	RolledBack []Rollback `json:"rolledBack" bson:"rolledBack"`
}

// Clean reports whether the run found nothing to correct.
func (r Report) Clean() bool {
	return len(r.Drift) == 0 && len(r.Rebuilt) == 0 && len(r.RolledBack) == 0
}

// Reconciler compares Redis with MongoDB (invariant 9). It is the one implementation
// behind the admin endpoint, the scheduled job and `flashstock reconcile`.
type Reconciler struct {
	Inv   *engine.Redis
	Store *store.Store
	// Wait is how long to wait for the syncer when MongoDB is behind a SKU (default 10 s).
	Wait   time.Duration
	Logger *slog.Logger
	Now    func() time.Time

	rolledBack atomic.Int64
}

// RolledBack counts the SKUs this reconciler's runs found rolled back: MongoDB ahead of
// Redis (see Rollback). Export it as a counter and alert on any increase.
func (rc *Reconciler) RolledBack() int64 { return rc.rolledBack.Load() }

// Run checks every SKU of the catalog and of Redis. Each SKU is compared at one point:
// its live levels and movement sequence, read together, against the ledger folded up to
// exactly that sequence. With repair, each drift is compensated by a movement through
// the normal script path, which the ledger records; nothing is overwritten. Missing
// live stock is rebuilt from MongoDB first, and reported.
func (rc *Reconciler) Run(ctx context.Context, repair bool) (Report, error) {
	now, log := rc.now(), rc.logger()
	rb, err := Rebuild(ctx, rc.Inv, rc.Store, log)
	if err != nil {
		return Report{}, err
	}
	rc.rolledBack.Add(int64(rb.Restorations()))
	rep := Report{At: now, Drift: []Drift{}, Behind: []string{}, Rebuilt: append([]string{}, rb.Restored...),
		RolledBack: append([]Rollback{}, rb.RolledBack...)}
	skus, err := rc.Inv.SKUs(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("reconcile: %w", err)
	}
	slices.Sort(skus)
	rep.CheckedSKUs = len(skus)
	for _, sku := range skus {
		d, ok, err := rc.check(ctx, sku)
		if errors.Is(err, store.ErrBehind) {
			rep.Behind = append(rep.Behind, sku)
			continue
		}
		if err != nil {
			return Report{}, fmt.Errorf("reconcile %s: %w", sku, err)
		}
		if !ok {
			continue
		}
		if repair {
			comp := d.Expected.minus(d.Redis)
			_, err := rc.Inv.Repair(ctx, sku, d.Version, comp.Available, comp.Reserved, comp.Sold, "reconciliation")
			// A version conflict means the SKU moved since it was read: it stays
			// unrepaired in this report, and the next run compares it afresh.
			if err != nil && !errors.Is(err, engine.ErrVersionConflict) {
				return Report{}, fmt.Errorf("reconcile %s: %w", sku, err)
			}
			d.Repaired = err == nil
		}
		log.Warn("stock drift", "sku", sku, "version", d.Version, "redis", d.Redis, "expected", d.Expected,
			"delta", d.Delta, "repaired", d.Repaired)
		rep.Drift = append(rep.Drift, d)
	}
	rep.Repaired = repair && !slices.ContainsFunc(rep.Drift, func(d Drift) bool { return !d.Repaired })
	if err := rc.Store.SaveReport(ctx, rep.At, rep); err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	return rep, nil
}

// check compares one SKU; ok is true when it drifted.
func (rc *Reconciler) check(ctx context.Context, sku string) (Drift, bool, error) {
	lvs, err := rc.Inv.Levels(ctx, []string{sku})
	if err != nil {
		return Drift{}, false, err
	}
	lv := lvs[0]
	deadline := time.Now().Add(rc.wait())
	var f store.Fold
	for {
		f, err = rc.Store.FoldAt(ctx, sku, lv.Version)
		if !errors.Is(err, store.ErrBehind) || time.Now().After(deadline) {
			break
		}
		sleep(ctx, 50*time.Millisecond) // the syncer is catching up
	}
	if err != nil {
		return Drift{}, false, err
	}
	live := Levels{lv.Available, lv.Reserved, lv.Sold}
	want := Levels{f.Available, f.Reserved, f.Sold}
	if live == want {
		return Drift{}, false, nil
	}
	return Drift{SKU: sku, Version: lv.Version, Redis: live, Expected: want, Delta: live.minus(want)}, true, nil
}

// LastReport returns the newest stored report. Errors: engine.ErrNotFound.
func (rc *Reconciler) LastReport(ctx context.Context) (Report, error) {
	var r Report
	err := rc.Store.LastReport(ctx, &r)
	return r, err
}

func (rc *Reconciler) wait() time.Duration {
	if rc.Wait <= 0 {
		return 10 * time.Second
	}
	return rc.Wait
}

func (rc *Reconciler) now() time.Time {
	if rc.Now == nil {
		return time.Now().UTC()
	}
	return rc.Now().UTC()
}

func (rc *Reconciler) logger() *slog.Logger {
	if rc.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return rc.Logger
}

// RebuildReport says what Rebuild restored.
type RebuildReport struct {
	Restored []string // SKUs written back into Redis
	// Lost counts movements that MongoDB never received (they were lost with Redis's
	// data) and that the rebuilt levels therefore cannot account for: the gaps in the
	// ledger. Movements lost after the last persisted one leave no trace to count.
	Lost int64
	// ReleasedHolds counts reserved units returned to available: their holds were lost.
	ReleasedHolds int64
	// RolledBack lists SKUs Redis has whose MongoDB history was ahead (a Redis
	// rollback), restored from MongoDB.
	RolledBack []Rollback
	// RestoredRecords counts order records written back after a loss: the orders of the
	// idempotency window, so that a retry with a key replays instead of buying again.
	RestoredRecords int
}

// Restorations counts the rolled-back SKUs this run restored (not those it found but
// left, such as one another process was restoring), for the rollback metric.
func (r RebuildReport) Restorations() int {
	n := 0
	for _, rb := range r.RolledBack {
		if rb.Restored {
			n++
		}
	}
	return n
}

// Rebuild restores the live stock of every catalog SKU that Redis does not have, from
// the MongoDB ledger, and restores every SKU whose MongoDB history is ahead of Redis (a
// Redis rollback: see Rollback), before the service takes traffic and in every
// reconciliation. Redis losing data is recoverable, and never hidden: Rebuild logs what
// it found (a rollback at error level) and returns it.
func Rebuild(ctx context.Context, inv *engine.Redis, st *store.Store, log *slog.Logger) (RebuildReport, error) {
	return rebuild(ctx, inv, st, log, true)
}

// RebuildAtStart is Rebuild for a process about to take traffic: it writes the outbox
// backlog to MongoDB only when a SKU is missing from Redis (whose ledger the backlog
// may complete), so that a start never waits for a backlog the syncers will write anyway
// (MongoDB down for an hour during a sale leaves one of millions of entries). What it
// skips is the detection of a rollback whose renumbered movements match in number the
// ones Redis lost: the syncers find those as conflicts, and every reconciliation, which
// runs Rebuild, catches up first.
func RebuildAtStart(ctx context.Context, inv *engine.Redis, st *store.Store, log *slog.Logger) (RebuildReport, error) {
	return rebuild(ctx, inv, st, log, false)
}

func rebuild(ctx context.Context, inv *engine.Redis, st *store.Store, log *slog.Logger, catchUpAlways bool) (RebuildReport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var rep RebuildReport
	present, err := liveSKUs(ctx, inv)
	if err != nil {
		return rep, fmt.Errorf("rebuild: %w", err)
	}
	var missing []store.Product
	caught := "" // the outbox entry up to which MongoDB has been caught up in this run
	for after := ""; ; {
		page, err := st.Products(ctx, after, 200)
		if err != nil {
			return rep, fmt.Errorf("rebuild: %w", err)
		}
		for _, p := range page {
			if _, ok := present[p.SKU]; !ok {
				missing = append(missing, p)
			}
		}
		if len(page) < 200 {
			break
		}
		after = page[len(page)-1].SKU
	}
	if len(missing) > 0 || catchUpAlways {
		// What Redis did up to the levels read is brought into MongoDB first (the
		// backlog the syncers have not written yet; at start-up none runs yet). Then a
		// lost SKU's ledger has no gap that the outbox could still fill, and movements
		// Redis numbered again are conflicts even where no syncer runs: otherwise a
		// Redis that handed out as many numbers again as it lost would compare clean.
		last, err := lastEntry(ctx, inv)
		if err != nil {
			return rep, fmt.Errorf("rebuild: %w", err)
		}
		if err := catchUp(ctx, inv, st, last); err != nil {
			return rep, fmt.Errorf("rebuild: %w", err)
		}
		caught = last
		conflicts, err := st.OpenConflicts(ctx)
		if err != nil {
			return rep, fmt.Errorf("rebuild: %w", err)
		}
		for _, p := range missing {
			if err := rebuildSKU(ctx, inv, st, p, conflicts[p.SKU], &rep); err != nil {
				return rep, err
			}
		}
	}
	if len(rep.Restored) > 0 {
		// Redis lost data: the order records of the idempotency window went with it.
		if rep.RestoredRecords, err = restoreRecentRecords(ctx, inv, st); err != nil {
			return rep, fmt.Errorf("rebuild: %w", err)
		}
		log.Warn("rebuilt live stock from MongoDB: Redis had lost it", "skus", len(rep.Restored),
			"lost_movements", rep.Lost, "released_hold_units", rep.ReleasedHolds,
			"restored_order_records", rep.RestoredRecords)
	}
	if rep.RolledBack, err = findRollbacks(ctx, inv, st, present, log, &caught); err != nil {
		return rep, fmt.Errorf("rebuild: %w", err)
	}
	return rep, nil
}

// liveSKUs returns the levels of the SKUs whose stock hash Redis has: the SKU index,
// confirmed by one pipelined read of the hashes (an index entry can outlive its hash).
func liveSKUs(ctx context.Context, inv *engine.Redis) (map[string]engine.Level, error) {
	skus, err := inv.SKUs(ctx)
	if err != nil {
		return nil, err
	}
	return inv.Lookup(ctx, skus)
}

// rebuildSKU writes a lost SKU back from its ledger's fold, with the movements kept as
// conflicts recorded again and the units of lost holds released, in one atomic step
// (so no checkout can land between the restore and the release).
func rebuildSKU(ctx context.Context, inv *engine.Redis, st *store.Store, p store.Product, cs []store.Conflict, rep *RebuildReport) error {
	_, lost, err := st.FillGaps(ctx, p.SKU)
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", p.SKU, err)
	}
	f, err := st.Advance(ctx, p.SKU, nil)
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", p.SKU, err)
	}
	if f.Seq == 0 {
		return nil // never had stock movements: nothing to restore
	}
	if cs, err = unapplied(ctx, st, p.SKU, cs); err != nil {
		return fmt.Errorf("rebuild %s: %w", p.SKU, err)
	}
	ep := p.EngineProduct(0)
	req := engine.RebaseRequest{SKU: p.SKU, Product: &ep,
		Fold:   engine.Level{SKU: p.SKU, Available: f.Available, Reserved: f.Reserved, Sold: f.Sold, Version: f.Seq},
		Reason: "rebuilt from MongoDB: Redis had lost the SKU"}
	for _, c := range cs {
		req.Again.Available += c.Movement.Available
		req.Again.Reserved += c.Movement.Reserved
		req.Again.Sold += c.Movement.Sold
	}
	if req.Release, err = lostHoldUnits(ctx, inv, p.SKU, f.Reserved+req.Again.Reserved); err != nil {
		return err
	}
	if err := markApplying(ctx, st, &req, cs); err != nil {
		return fmt.Errorf("rebuild %s: %w", p.SKU, err)
	}
	if rebaseHook != nil {
		rebaseHook(p.SKU)
	}
	_, err = inv.Rebase(ctx, req)
	if errors.Is(err, engine.ErrAlreadyExists) {
		return nil // someone else restored it meanwhile
	}
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", p.SKU, err)
	}
	if err := st.ResolveConflicts(ctx, cs, f.Seq+1); err != nil {
		return fmt.Errorf("rebuild %s: %w", p.SKU, err)
	}
	rep.Restored = append(rep.Restored, p.SKU)
	rep.Lost += lost
	rep.ReleasedHolds += req.Release
	return nil
}

// restoreRecentRecords writes back the order records of the idempotency window that
// Redis lacks (engine.RestoreOrderRecords), in batches.
func restoreRecentRecords(ctx context.Context, inv *engine.Redis, st *store.Store) (int, error) {
	const batch = 500
	var pending []engine.RestoredOrder
	n := 0
	flush := func() error {
		k, err := inv.RestoreOrderRecords(ctx, pending)
		n += k
		pending = pending[:0]
		return err
	}
	err := st.RecentOrders(ctx, time.Now().Add(-inv.IdempotencyWindow()), func(o engine.Order, lines string) error {
		pending = append(pending, engine.RestoredOrder{Order: o, Lines: lines})
		if len(pending) == batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return n, fmt.Errorf("restore order records: %w", err)
	}
	return n, nil
}
