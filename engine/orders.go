package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RetireOrders gives order records their TTL (RecordTTL) once MongoDB has them: a
// checkout writes its record without one, so that it (and the idempotency key it
// carries) cannot expire before the order is durable. The syncer calls it.
func (r *Redis) RetireOrders(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ttl, _ := strconv.ParseInt(r.recTTL, 10, 64)
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		// An order lives in one partition; EXPIRE of the others' absent keys is a no-op.
		for _, id := range ids {
			for _, part := range r.parts {
				p.Expire(ctx, part.k.Order(id), time.Duration(ttl)*time.Second)
				if len(r.parts) > 1 {
					// A cross-partition cancel's restore markers live as long as the record.
					p.Expire(ctx, part.k.XRestored(id), time.Duration(ttl)*time.Second)
				}
			}
		}
		return nil
	})
	return readErr("retire orders", err)
}

// Order returns an order Redis holds (from checkout until 7 days after MongoDB has it).
// Errors: ErrInvalid, ErrNotFound, ErrUnavailable.
func (r *Redis) Order(ctx context.Context, id string) (Order, error) {
	if err := checkID("id", id); err != nil {
		return Order{}, fmt.Errorf("order: %w", err)
	}
	p, err := r.recordPartition(ctx, func(k Keys) string { return k.Order(id) })
	if err != nil {
		return Order{}, fmt.Errorf("order %s: %w", id, err)
	}
	v, err := r.rdb.Get(ctx, p.k.Order(id)).Result()
	if errors.Is(err, redis.Nil) {
		return Order{}, fmt.Errorf("order %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Order{}, fmt.Errorf("order %s: %w", id, readErr("read", err))
	}
	o, err := parseOrder(id, v)
	o.part = p
	return o, err
}

func newOrder(id, user string, status OrderStatus, currency string, items []Item, tsMs int64, holdID string) Order {
	var total int64
	for _, it := range items {
		total += it.UnitPrice * it.Quantity
	}
	return Order{ID: id, UserID: user, Items: items, Total: total, Currency: currency, Status: status,
		CreatedAt: time.UnixMilli(tsMs).UTC(), HoldID: holdID}
}

// CancelRequest cancels an order.
type CancelRequest struct {
	OrderID string
	// Owner, when set, is the only user whose order may be cancelled: another user's
	// order is ErrNotFound, as if it did not exist. Empty for an administrator.
	Owner string
}

// Cancel cancels a confirmed order held in Redis; its units return to available
// exactly once, however often Cancel is called (a repeat is Replayed). An order Redis
// has let go is cancelled with CancelRestored. An order whose lines live in several
// partitions is cancelled in steps (xcancel.go): it is answered once the cancel is decided
// at its home partition; a restore at another partition that failed then is the sweeper's.
// Errors: ErrInvalid, ErrNotFound, ErrUnavailable, ErrOutcomeUnknown.
func (r *Redis) Cancel(ctx context.Context, req CancelRequest) (Order, error) {
	o, err := r.Order(ctx, req.OrderID)
	if err == nil && req.Owner != "" && o.UserID != req.Owner {
		err = fmt.Errorf("order %s: %w", req.OrderID, ErrNotFound)
	}
	if err != nil {
		return Order{}, fmt.Errorf("cancel: %w", err)
	}
	return r.cancel(ctx, o)
}

// cancel runs cancel.lua on an order read with Order (its recorded lines guard the
// script's keys), or, for an order whose lines live in several partitions, the steps of
// xcancel.lua (crossCancel).
func (r *Redis) cancel(ctx context.Context, o Order) (Order, error) {
	defer r.restocking()()
	p, err := r.orderPartition(ctx, o)
	if err != nil {
		return Order{}, err
	}
	if len(r.parts) > 1 && len(o.Items) > 1 {
		skus := itemSKUs(o.Items)
		ps, err := r.partitionsOf(ctx, skus)
		if err != nil {
			return Order{}, fmt.Errorf("cancel %s: %w", o.ID, err)
		}
		for _, q := range ps {
			if q != p {
				// An order of a cross-partition checkout: cancelled in steps (xcancel.go).
				return r.crossCancel(ctx, o, p, ps)
			}
		}
	}
	k := p.k
	keys := []string{k.Outbox(), k.Order(o.ID)}
	for _, it := range o.Items {
		keys = append(keys, k.Stock(it.SKU), k.Bought(it.SKU))
	}
	keys = append(keys, k.RestockChannel())
	rep, err := run(ctx, r.sc, scriptCancel, keys, o.ID, o.lines)
	if err == nil {
		switch rep.status() {
		case "ok":
			o.Status = OrderCancelled
			r.restocked(itemSKUs(o.Items)...)
			return o, nil
		case "replay":
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

// orderRecord is an order as Redis keeps it (scripts/lua/prelude.lua, order_record):
// format version 2 is "2", then Status, TS, Currency, Hold, Lines, FP and User in this
// order, newline-separated (User last: the one field that may hold any printable
// character); version 3, a cross-partition order's, is "3", then the same with Attempt
// (the cross-partition attempt that made it) before User; version 1 is version 2's list
// without the version. Named here and in prelude.lua, and nowhere else.
type orderRecord struct {
	Status, TS, Currency, Hold, Lines, FP, User string
	Attempt                                     string
}

func (rec orderRecord) encode() string {
	if rec.Attempt != "" {
		return strings.Join([]string{"3", rec.Status, rec.TS, rec.Currency, rec.Hold, rec.Lines, rec.FP, rec.Attempt, rec.User}, "\n")
	}
	return strings.Join([]string{"2", rec.Status, rec.TS, rec.Currency, rec.Hold, rec.Lines, rec.FP, rec.User}, "\n")
}

func decodeOrderRecord(v string) (orderRecord, bool) {
	if v3, ok := strings.CutPrefix(v, "3\n"); ok {
		f := strings.SplitN(v3, "\n", 8)
		if len(f) != 8 {
			return orderRecord{}, false
		}
		return orderRecord{Status: f[0], TS: f[1], Currency: f[2], Hold: f[3], Lines: f[4], FP: f[5], Attempt: f[6], User: f[7]}, true
	}
	v, _ = strings.CutPrefix(v, "2\n")
	f := strings.SplitN(v, "\n", 7)
	if len(f) != 7 {
		return orderRecord{}, false
	}
	return orderRecord{Status: f[0], TS: f[1], Currency: f[2], Hold: f[3], Lines: f[4], FP: f[5], User: f[6]}, true
}

// parseOrder reads an order record of any format version.
func parseOrder(id, v string) (Order, error) {
	rec, ok := decodeOrderRecord(v)
	ts, err := strconv.ParseInt(rec.TS, 10, 64)
	if !ok || err != nil {
		return Order{}, fmt.Errorf("order %s: malformed record", id)
	}
	items, err := parseItems(rec.Lines)
	if err != nil {
		return Order{}, fmt.Errorf("order %s: %w", id, err)
	}
	o := newOrder(id, rec.User, OrderStatus(rec.Status), rec.Currency, items, ts, rec.Hold)
	o.lines, o.fp = rec.Lines, rec.FP
	return o, nil
}

// orderPartition is the partition of an order: where it was read, or else its SKUs'
// (an order restored from MongoDB).
func (r *Redis) orderPartition(ctx context.Context, o Order) (*partition, error) {
	if o.part != nil {
		return o.part, nil
	}
	if len(o.Items) == 0 {
		return r.parts[0], nil
	}
	return r.partitionOf(ctx, o.Items[0].SKU)
}
