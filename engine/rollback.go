package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/scripts/lua"
)

// scriptRebase restores a SKU from MongoDB after Redis lost it or rolled back. (It is
// loaded on first use; add it to allScripts so LoadScripts loads it too.)
var scriptRebase = newScript(lua.Rebase)

// EventRebase is the event of a rebase: movements Redis numbered again after a
// rollback, recorded again under a fresh sequence number.
const EventRebase = "rebase"

// RecordedFingerprint is the fingerprint of an order record restored from MongoDB: the
// request's fingerprint is unknown, so a retry with any request under the same
// idempotency key is answered with the order.
const RecordedFingerprint = "*"

// RecordedLines returns, for each order event in an outbox entry, the order's lines as
// the script recorded them ("sku:qty:price", ":L" marking units counted against a
// per-user limit), by order id (Event.Lines); an entry that does not decode has none.
func RecordedLines(values map[string]any) map[string]string {
	out := map[string]string{}
	evs, err := DecodeEntry("", values)
	if err != nil {
		return out
	}
	for _, e := range evs {
		if e.Kind == EventOrder {
			out[e.ID] = e.Lines
		}
	}
	return out
}

// RestoredOrder is an order record to write back into Redis: the order as MongoDB has it
// and its lines as recorded (see RecordedLines).
type RestoredOrder struct {
	Order Order
	Lines string
	// Uncounted says the order's counted lines (":L") are missing from the users'
	// counters and are added when the record is written back. It is false for an order
	// committed from a hold Redis still has: the hold counts them already.
	Uncounted bool
}

func (o RestoredOrder) record() string {
	return orderRecord{Status: string(o.Order.Status), TS: strconv.FormatInt(o.Order.CreatedAt.UnixMilli(), 10),
		Currency: o.Order.Currency, Hold: o.Order.HoldID, Lines: o.Lines, FP: RecordedFingerprint,
		User: o.Order.UserID}.encode()
}

// RebaseRequest restores a SKU's live stock from MongoDB's fold of its ledger.
type RebaseRequest struct {
	SKU string
	// Product, when set, means Redis has no stock record for the SKU: it is created with
	// these attributes (ErrAlreadyExists if it appeared meanwhile). Otherwise the SKU's
	// live sequence must still be ExpectedVersion (ErrVersionConflict).
	Product         *Product
	ExpectedVersion int64
	// Fold is MongoDB's fold: levels and sequence (Version) written as they are.
	Fold Level
	// Again are the deltas of movements Redis made under sequence numbers MongoDB held
	// already: applied on top of Fold and recorded as one movement of kind rebase.
	Again Level
	// Release is how many reserved units to return to available because their holds
	// were lost (a movement of kind rebuild).
	Release int64
	Reason  string
	// Orders are records Redis lost, written back only where Redis has none (see
	// rebase.lua for the per-user counters).
	Orders []RestoredOrder
	// Settled are holds Redis has as active that MongoDB's ledger settled after the
	// rollback point: they are settled the same way (see rebase.lua).
	Settled []SettledHold
}

// SettledHold is a hold, as read with Hold, to settle as MongoDB's ledger did.
type SettledHold struct {
	Hold    Hold
	Status  HoldStatus // committed, released or expired
	OrderID string     // committed: the order it became
}

// RebaseResult is what Rebase wrote.
type RebaseResult struct {
	Level Level
	// RestoredOrders counts order records written back.
	RestoredOrders int
}

// Rebase writes a SKU's levels and sequence from MongoDB, with the movements recorded
// again, the release of lost holds and the lost order records, in one atomic step.
// Errors: ErrInvalid, ErrAlreadyExists, ErrNotFound, ErrVersionConflict.
func (r *Redis) Rebase(ctx context.Context, req RebaseRequest) (RebaseResult, error) {
	mode, p := "rebase", Product{SKU: req.SKU, Currency: "USD"}
	if req.Product != nil {
		mode, p = "restore", *req.Product
		if err := checkProduct(p); err != nil {
			return RebaseResult{}, fmt.Errorf("rebase %s: %w", req.SKU, err)
		}
	}
	if err := checkAdmin(req.SKU, req.Reason, "reconcile", ""); err != nil {
		return RebaseResult{}, fmt.Errorf("rebase: %w", err)
	}
	var part *partition
	var err error
	if mode == "restore" {
		part, err = r.assign(ctx, req.SKU, p.Group)
	} else {
		part, err = r.partitionOf(ctx, req.SKU)
	}
	if err != nil {
		return RebaseResult{}, fmt.Errorf("rebase %s: %w", req.SKU, err)
	}
	k := part.k // the SKU's partition holds its orders and holds too
	keys := []string{k.Outbox(), k.Stock(req.SKU), k.SKUs(), k.HoldIndex()}
	args := []any{mode, req.SKU, req.ExpectedVersion, req.Fold.Available, req.Fold.Reserved, req.Fold.Sold, req.Fold.Version,
		req.Again.Available, req.Again.Reserved, req.Again.Sold, req.Release, req.Reason,
		p.Price, p.Currency, p.MaxPerUser, unixMs(p.SaleStartsAt), unixMs(p.SaleEndsAt), r.recTTL, len(req.Orders)}
	for _, o := range req.Orders {
		if err := checkID("id", o.Order.ID); err != nil {
			return RebaseResult{}, fmt.Errorf("rebase %s: %w", req.SKU, err)
		}
		items, err := parseItems(o.Lines)
		if err != nil {
			return RebaseResult{}, fmt.Errorf("rebase %s: order %s: %w", req.SKU, o.Order.ID, err)
		}
		keys = append(keys, k.Order(o.Order.ID))
		for _, it := range items {
			keys = append(keys, k.Bought(it.SKU))
		}
		uncounted := "0"
		if o.Uncounted {
			uncounted = "1"
		}
		args = append(args, o.record(), uncounted)
	}
	args = append(args, len(req.Settled))
	for _, h := range req.Settled {
		if err := checkID("id", h.Hold.ID); err != nil {
			return RebaseResult{}, fmt.Errorf("rebase %s: %w", req.SKU, err)
		}
		keys = append(keys, k.Hold(h.Hold.ID))
		for _, it := range h.Hold.Items {
			keys = append(keys, k.Bought(it.SKU))
		}
		args = append(args, h.Hold.ID, string(h.Status), h.OrderID)
	}
	// The waiting room comes back with the product (a new secret: passes issued before
	// the loss are gone with the room's queue).
	args = append(args, roomRate(p.WaitingRoom), newRoomSecret())
	keys = append(keys, k.RestockChannel())
	defer r.restocking()()
	rep, err := run(ctx, r.sc, scriptRebase, keys, args...)
	if err == nil {
		switch rep.status() {
		case "ok":
			lv := Level{SKU: req.SKU, Available: rep.num(1), Reserved: rep.num(2), Sold: rep.num(3), Version: rep.num(4)}
			if lv.Available > 0 {
				r.restocked(req.SKU)
			}
			return RebaseResult{Level: lv, RestoredOrders: int(rep.num(5))}, nil
		case "exists":
			err = ErrAlreadyExists
		case "not_found":
			err = ErrNotFound
		case "version":
			err = fmt.Errorf("%w: version is %d", ErrVersionConflict, rep.num(1))
		case "negative":
			err = invalid("levels", "the restored levels would go below zero")
		default:
			err = rep.expect("ok")
		}
	}
	return RebaseResult{}, fmt.Errorf("rebase %s: %w", req.SKU, err)
}

// HeldUnits returns the units of each SKU reserved by holds Redis has as active and by
// in-flight cross-partition checkouts.
func (r *Redis) HeldUnits(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for _, part := range r.parts {
		if err := r.heldUnits(ctx, part, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// heldUnits adds partition part's held units to out.
func (r *Redis) heldUnits(ctx context.Context, part *partition, out map[string]int64) error {
	ids, err := r.rdb.ZRange(ctx, part.k.HoldIndex(), 0, -1).Result()
	if err != nil {
		return readErr("held units", err)
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, part.k.Hold(id), "st", "l")
		}
		return nil
	})
	if err != nil {
		return readErr("held units", err)
	}
	if len(r.parts) > 1 {
		// Units reserved by in-flight cross-partition checkouts: the sweeper settles them.
		in, err := r.rdb.HGetAll(ctx, part.k.XInFlight()).Result()
		if err != nil {
			return readErr("held units", err)
		}
		for sku, v := range in {
			n, _ := strconv.ParseInt(v, 10, 64)
			out[sku] += n
		}
	}
	for _, c := range cmds {
		v := c.Val()
		if asString(v[0]) != string(HoldActive) {
			continue
		}
		items, err := parseItems(asString(v[1]))
		if err != nil {
			return fmt.Errorf("held units: %w", err)
		}
		for _, it := range items {
			out[it.SKU] += it.Quantity
		}
	}
	return nil
}

// CancelRestored cancels an order Redis no longer has (its record expired after
// MongoDB had it, or was lost): the record is written back from MongoDB's copy with
// lines as recorded (SET NX, so a record Redis still has wins), then the normal cancel
// runs, so units return exactly once and only counted lines (":L") go back to the
// user's limit. Errors as Cancel.
func (r *Redis) CancelRestored(ctx context.Context, o Order, lines string) (Order, error) {
	if err := checkID("id", o.ID); err != nil {
		return Order{}, fmt.Errorf("cancel: %w", err)
	}
	if _, err := parseItems(lines); err != nil || lines == "" {
		return Order{}, fmt.Errorf("cancel %s: %w", o.ID, invalid("lines", "not an order's lines"))
	}
	rec := RestoredOrder{Order: o, Lines: lines}.record()
	ttl, _ := strconv.ParseInt(r.recTTL, 10, 64)
	part, err := r.orderPartition(ctx, o)
	if err != nil {
		return Order{}, fmt.Errorf("cancel %s: %w", o.ID, err)
	}
	err = r.rdb.SetArgs(ctx, part.k.Order(o.ID), rec, redis.SetArgs{Mode: "NX", TTL: time.Duration(ttl) * time.Second}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Order{}, fmt.Errorf("cancel %s: restore record: %w", o.ID, writeErr("write", err))
	}
	return r.Cancel(ctx, CancelRequest{OrderID: o.ID})
}

// IdempotencyWindow is how long idempotency keys are remembered (Options.IdempotencyTTL):
// order records newer than this must exist for a retry to replay.
func (r *Redis) IdempotencyWindow() time.Duration {
	s, _ := strconv.ParseInt(r.idemTTL, 10, 64)
	return time.Duration(s) * time.Second
}

// RestoreOrderRecords writes back the records of orders Redis lost with its data (SET
// NX: a record Redis has wins), with fingerprint RecordedFingerprint, so that a retry
// with an idempotency key replays its order instead of buying again. It touches no stock
// and no per-user counter, and reports how many records it wrote.
func (r *Redis) RestoreOrderRecords(ctx context.Context, orders []RestoredOrder) (int, error) {
	if len(orders) == 0 {
		return 0, nil
	}
	ttl, _ := strconv.ParseInt(r.recTTL, 10, 64)
	parts := make([]*partition, len(orders))
	for i, o := range orders {
		p, err := r.orderPartition(ctx, o.Order)
		if err != nil {
			return 0, fmt.Errorf("restore order records: %w", err)
		}
		parts[i] = p
	}
	cmds := make([]*redis.BoolCmd, len(orders))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, o := range orders {
			cmds[i] = p.SetNX(ctx, parts[i].k.Order(o.Order.ID), o.record(), time.Duration(ttl)*time.Second)
		}
		return nil
	})
	if err != nil {
		return 0, writeErr("restore order records", err)
	}
	n := 0
	for _, c := range cmds {
		if c.Val() {
			n++
		}
	}
	return n, nil
}
