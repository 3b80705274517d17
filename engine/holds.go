package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/clusterscript"
)

// Hold returns a hold. Errors: ErrInvalid, ErrNotFound, ErrUnavailable.
func (r *Redis) Hold(ctx context.Context, id string) (Hold, error) {
	if err := checkID("id", id); err != nil {
		return Hold{}, fmt.Errorf("hold: %w", err)
	}
	p, err := r.recordPartition(ctx, func(k Keys) string { return k.Hold(id) })
	if err != nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, err)
	}
	return r.readHold(ctx, p, id)
}

// readHold reads a hold in partition p.
func (r *Redis) readHold(ctx context.Context, p *partition, id string) (Hold, error) {
	v, err := r.rdb.HMGet(ctx, p.k.Hold(id), "u", "st", "ts", "x", "c", "l", "o").Result()
	if err != nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, readErr("read", err))
	}
	if v[0] == nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, ErrNotFound)
	}
	items, err := parseItems(asString(v[5]))
	if err != nil {
		return Hold{}, fmt.Errorf("hold %s: %w", id, err)
	}
	ts, err1 := strconv.ParseInt(asString(v[2]), 10, 64)
	exp, err2 := strconv.ParseInt(asString(v[3]), 10, 64)
	if err1 != nil || err2 != nil {
		return Hold{}, fmt.Errorf("hold %s: malformed record", id)
	}
	return Hold{ID: id, UserID: asString(v[0]), Items: items, Currency: asString(v[4]),
		Status: HoldStatus(asString(v[1])), CreatedAt: time.UnixMilli(ts).UTC(),
		ExpiresAt: time.UnixMilli(exp).UTC(), OrderID: asString(v[6]), lines: asString(v[5]), part: p}, nil
}

// OrderIDForHold is the id of the order committing a hold makes: one per hold, so a
// commit run again (a retry whose answer was lost, a commit Redis lost in a rollback)
// names the same order.
func OrderIDForHold(holdID string) string { return recordID("commit", "", holdID) }

// CommitRequest turns an active hold into an order.
type CommitRequest struct {
	HoldID string
	// OrderID is the id the order gets: OrderIDForHold(HoldID), so that a commit run
	// again names the same order (tests may choose their own).
	OrderID string
	// Owner, when set, is the only user whose hold may be committed: another user's
	// hold is ErrNotFound. Empty for an administrator.
	Owner string
	// RatePerMinute, if positive, counts the commit against RateUser's requests per
	// minute, with checkouts and reservations (see CheckoutRequest). RateUser defaults
	// to the hold's owner; an administrator committing someone's hold names themselves.
	RatePerMinute int
	RateUser      string
}

// Commit turns an active hold into an order; committing a committed hold returns its
// order (Replayed). Errors: ErrInvalid, ErrNotFound, ErrHoldExpired, ErrHoldReleased,
// *RateError, ErrUnavailable, ErrOutcomeUnknown.
func (r *Redis) Commit(ctx context.Context, req CommitRequest) (Order, error) {
	if err := checkID("orderId", req.OrderID); err != nil {
		return Order{}, fmt.Errorf("commit: %w", err)
	}
	h, err := r.ownHold(ctx, req.HoldID, req.Owner)
	if err != nil {
		return Order{}, fmt.Errorf("commit: %w", err)
	}
	limit := rateLimit{User: req.RateUser, PerMinute: req.RatePerMinute}
	if limit.User == "" {
		limit.User = h.UserID
	}
	h, rep, err := r.settle(ctx, "commit", h, req.OrderID, limit)
	if err != nil {
		return Order{}, opError("commit", err)
	}
	if rep.status() == "replay" {
		o, err := r.Order(ctx, rep.str(2))
		if err != nil {
			return Order{}, fmt.Errorf("commit %s: replay: %w", h.ID, replayReadErr(err))
		}
		o.Replayed = true
		return o, nil
	}
	return newOrder(req.OrderID, h.UserID, OrderConfirmed, h.Currency, h.Items, rep.num(2), h.ID), nil
}

// ReleaseRequest returns a hold's units to available.
type ReleaseRequest struct {
	HoldID string
	// Owner works as in CommitRequest.
	Owner string
}

// Release returns an active hold's units to available; releasing a released hold is
// Replayed. Errors: ErrInvalid, ErrNotFound, ErrHoldExpired, ErrHoldCommitted,
// ErrUnavailable, ErrOutcomeUnknown.
func (r *Redis) Release(ctx context.Context, req ReleaseRequest) (Hold, error) {
	h, err := r.ownHold(ctx, req.HoldID, req.Owner)
	if err != nil {
		return Hold{}, fmt.Errorf("release: %w", err)
	}
	h, rep, err := r.settle(ctx, "release", h, "", rateLimit{})
	if err != nil {
		return Hold{}, fmt.Errorf("release %s: %w", req.HoldID, err)
	}
	h.Status, h.Replayed = HoldReleased, rep.status() == "replay"
	return h, nil
}

// ownHold reads a hold; another user's than owner (when set) is ErrNotFound.
func (r *Redis) ownHold(ctx context.Context, id, owner string) (Hold, error) {
	h, err := r.Hold(ctx, id)
	if err == nil && owner != "" && h.UserID != owner {
		err = fmt.Errorf("hold %s: %w", id, ErrNotFound)
	}
	return h, err
}

// settle runs settle.lua on a hold read with Hold (its recorded lines guard the
// script's keys); it returns the hold and 'ok' or 'replay', or an error.
func (r *Redis) settle(ctx context.Context, mode string, h Hold, orderID string, limit rateLimit) (Hold, reply, error) {
	if mode != "commit" {
		defer r.restocking()()
	}
	if err := ctx.Err(); err != nil {
		return Hold{}, nil, fmt.Errorf("script: not sent: %w: %w", ErrUnavailable, err)
	}
	call := r.settleCall(mode, h, orderID, limit)
	rep, err := runResult{r.sc.Run(ctx, call.Script, call.Keys, call.Args...)}.result()
	if err != nil {
		return Hold{}, nil, err
	}
	switch rep.status() {
	case "ok", "replay":
		if mode != "commit" && rep.status() == "ok" {
			r.restocked(itemSKUs(h.Items)...)
		}
		return h, rep, nil
	case "not_found":
		return Hold{}, nil, ErrNotFound
	case "expired":
		return Hold{}, nil, ErrHoldExpired
	case "released":
		return Hold{}, nil, ErrHoldReleased
	case "committed":
		return Hold{}, nil, ErrHoldCommitted
	case "rate_limited":
		return Hold{}, nil, newRateError(rep.num(1))
	}
	return Hold{}, nil, rep.expect("ok")
}

func (r *Redis) settleCall(mode string, h Hold, orderID string, limit rateLimit) clusterscript.Call {
	k := r.k
	if h.part != nil {
		k = h.part.k // the hold's partition: its record, its SKUs, its order
	}
	record := k.Hold(h.ID)
	if orderID != "" {
		record = k.Order(orderID)
	}
	keys := make([]string, 4, 6+2*len(h.Items))
	keys[0], keys[1], keys[2], keys[3] = k.Outbox(), k.Hold(h.ID), k.HoldIndex(), record
	for _, it := range h.Items {
		keys = append(keys, k.Stock(it.SKU), k.Bought(it.SKU))
	}
	rateKey := record // not touched without a limit; any key of the partition will do
	if limit.PerMinute > 0 {
		rateKey = k.RateLimit(limit.User)
	}
	keys = append(keys, rateKey, k.RestockChannel())
	return clusterscript.Call{Script: scriptSettle, Keys: keys,
		Args: []any{mode, h.ID, h.lines, orderID, max(limit.PerMinute, 0)}}
}

// ExpireHolds expires up to limit holds whose expiry has passed and reports how many it
// expired; unreadable holds are set aside (*QuarantineError). It reads one batch of due holds and settles them in
// two pipelined round trips; a hold that is no longer due or active is left alone.
func (r *Redis) ExpireHolds(ctx context.Context, limit int) (int, error) {
	total := 0
	var quarantined []string
	for _, p := range r.parts {
		n, err := r.expireHolds(ctx, p, limit)
		total += n
		var qe *QuarantineError
		switch {
		case errors.As(err, &qe):
			quarantined = append(quarantined, qe.HoldIDs...)
		case err != nil:
			return total, err
		}
	}
	if len(quarantined) > 0 {
		return total, &QuarantineError{HoldIDs: quarantined}
	}
	return total, nil
}

// expireHolds is ExpireHolds in one partition.
func (r *Redis) expireHolds(ctx context.Context, p *partition, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	ids, err := r.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: p.k.HoldIndex(), ByScore: true, Start: "-inf", Stop: strconv.FormatInt(time.Now().UnixMilli(), 10),
		Count: int64(limit),
	}).Result()
	if err != nil || len(ids) == 0 {
		return 0, readErr("expire holds", err)
	}
	holds := make([]Hold, 0, len(ids))
	var bad []string
	for _, id := range ids {
		h, err := r.readHold(ctx, p, id)
		switch {
		case errors.Is(err, ErrNotFound):
			r.rdb.ZRem(ctx, p.k.HoldIndex(), id)
			continue
		case errors.Is(err, ErrUnavailable):
			return 0, fmt.Errorf("expire holds: %w", err)
		case err != nil:
			// A record this code cannot read must not stop every later sweep: it leaves
			// the index for a quarantine set an operator can inspect, and the sweep goes on.
			bad = append(bad, id)
			continue
		}
		holds = append(holds, h)
	}
	calls := make([]clusterscript.Call, len(holds))
	for i, h := range holds {
		calls[i] = r.settleCall("expire", h, "", rateLimit{})
	}
	defer r.restocking()()
	cmds, err := r.runBatch(ctx, calls)
	if err != nil {
		return 0, readErr("expire holds", err)
	}
	n := 0
	var back []string
	for i, c := range cmds {
		rep, err := (runResult{c}).result()
		switch {
		case err == nil && rep.status() == "ok":
			n++
			back = append(back, itemSKUs(holds[i].Items)...)
		case err != nil && isRedisReply(c.Err()):
			bad = append(bad, holds[i].ID) // the script cannot settle this record
		}
	}
	r.restocked(back...)
	var quarantined error
	if len(bad) > 0 {
		quarantined = r.quarantineHolds(ctx, p, bad)
	}
	return n, quarantined
}

// QuarantineError reports holds the expiry sweep could not read. They were moved from
// the expiry index to the set HoldQuarantineKey names (scored by when), and
// their units stay reserved until an operator settles them (reconciliation reports the
// difference meanwhile).
type QuarantineError struct {
	HoldIDs []string
}

func (e *QuarantineError) Error() string {
	return fmt.Sprintf("expire holds: %d unreadable hold(s) quarantined: %s", len(e.HoldIDs), strings.Join(e.HoldIDs, ", "))
}

// HoldQuarantineKey is the sorted set of holds the expiry sweep could not read.
func (r *Redis) HoldQuarantineKey() string { return r.k.HoldQuarantine() }

func (r *Redis) quarantineHolds(ctx context.Context, part *partition, ids []string) error {
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.ZAdd(ctx, part.k.HoldQuarantine(), redis.Z{Member: id, Score: float64(time.Now().UnixMilli())})
			p.ZRem(ctx, part.k.HoldIndex(), id)
		}
		return nil
	})
	if err != nil {
		return readErr("quarantine holds", err)
	}
	return &QuarantineError{HoldIDs: ids}
}

// ActiveHolds counts holds not yet committed, released or expired by the sweep.
func (r *Redis) ActiveHolds(ctx context.Context) (int64, error) {
	cmds := make([]*redis.IntCmd, len(r.parts))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, part := range r.parts {
			cmds[i] = p.ZCard(ctx, part.k.HoldIndex())
		}
		return nil
	})
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, readErr("active holds", err)
}
