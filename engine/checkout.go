package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Checkout buys every line or none; duplicate SKUs are summed first. It is refused
// only when, at its turn, the stock truly is not there.
// Errors: ErrInvalid, ErrNotFound (unknown SKU), ErrSaleNotActive, *LimitError
// (ErrLimitExceeded), *StockError (ErrOutOfStock, listing every short line),
// ErrIdempotencyKeyReused, *RateError, ErrUnavailable (not applied),
// ErrOutcomeUnknown (may have been applied: retry with the same key).
func (r *Redis) Checkout(ctx context.Context, req CheckoutRequest) (Order, error) {
	lines, err := checkTake(req.UserID, req.Lines, req.IdempotencyKey, req.OrderID)
	if err != nil {
		return Order{}, fmt.Errorf("checkout: %w", err)
	}
	id, fp := req.OrderID, ""
	if req.IdempotencyKey != "" {
		id, fp = recordID("order", req.UserID, req.IdempotencyKey), linesFingerprint("checkout", lines)
		if req.Cart {
			fp = cartFingerprint
		}
	}
	if len(r.parts) > 1 {
		parts, err := r.splitLines(ctx, lines)
		if err != nil {
			return Order{}, opError("checkout", err)
		}
		if parts != nil {
			o, err := r.crossCheckout(ctx, req, lines, parts, id, fp)
			if err != nil {
				return Order{}, opError("checkout", err)
			}
			return o, nil
		}
	}
	reply, err := r.take(&takeReq{pending: pending{ctx: ctx}, mode: "order", user: req.UserID, id: id, fp: fp, lines: lines,
		rateKey: r.rateKey(req.UserID, req.RatePerMinute), rateLimit: req.RatePerMinute, pass: normalizePass(req.QueuePass)})
	if err != nil {
		return Order{}, opError("checkout", err)
	}
	if reply.status() == "replay" {
		o, err := r.Order(ctx, reply.str(1))
		if err != nil {
			return Order{}, fmt.Errorf("checkout: replay: %w", replayReadErr(err))
		}
		o.Replayed = true
		return o, nil
	}
	items, err := parseItems(reply.str(3))
	if err != nil {
		return Order{}, fmt.Errorf("checkout: %w", err)
	}
	o := newOrder(id, req.UserID, OrderConfirmed, reply.str(2), items, reply.num(1), "")
	o.PassesSpent = spentPasses(reply.str(5))
	return o, nil
}

func spentPasses(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// cartFingerprint is the request fingerprint of every cart checkout: the request is
// "buy my cart", the same whatever the cart holds.
var cartFingerprint = fingerprint("checkout-cart")

// CartOrder returns the order a cart checkout with this user's idempotency key made,
// marked Replayed: how a retry finds it once the first attempt emptied the cart.
// Errors: ErrNotFound (no order under the key), ErrIdempotencyKeyReused (the key made
// an order of another kind of request), ErrUnavailable.
func (r *Redis) CartOrder(ctx context.Context, userID, key string) (Order, error) {
	o, err := r.Order(ctx, recordID("order", userID, key))
	if err != nil {
		return Order{}, fmt.Errorf("cart order: %w", err)
	}
	if o.fp != cartFingerprint && o.fp != RecordedFingerprint {
		return Order{}, fmt.Errorf("cart order: %w", ErrIdempotencyKeyReused)
	}
	o.Replayed = true
	return o, nil
}

// Reserve holds every line or none for req.TTL, with the errors of Checkout.
func (r *Redis) Reserve(ctx context.Context, req ReserveRequest) (Hold, error) {
	lines, err := checkTake(req.UserID, req.Lines, req.IdempotencyKey, req.HoldID)
	if err == nil && (req.TTL < time.Millisecond || req.TTL > time.Hour) {
		err = invalid("ttlSeconds", "must be between 1ms and 1h")
	}
	if err != nil {
		return Hold{}, fmt.Errorf("reserve: %w", err)
	}
	ttlMs := req.TTL.Milliseconds()
	id, fp := req.HoldID, ""
	if req.IdempotencyKey != "" {
		id, fp = recordID("hold", req.UserID, req.IdempotencyKey), linesFingerprint("reserve", lines, strconv.FormatInt(ttlMs, 10))
	}
	reply, err := r.take(&takeReq{pending: pending{ctx: ctx}, mode: "hold", user: req.UserID, id: id, fp: fp, holdMs: ttlMs, lines: lines,
		rateKey: r.rateKey(req.UserID, req.RatePerMinute), rateLimit: req.RatePerMinute, pass: normalizePass(req.QueuePass)})
	if err != nil {
		return Hold{}, opError("reserve", err)
	}
	if reply.status() == "replay" {
		h, err := r.Hold(ctx, reply.str(1))
		if err != nil {
			return Hold{}, fmt.Errorf("reserve: replay: %w", replayReadErr(err))
		}
		h.Replayed = true
		return h, nil
	}
	items, err := parseItems(reply.str(3))
	if err != nil {
		return Hold{}, fmt.Errorf("reserve: %w", err)
	}
	return Hold{
		ID: id, UserID: req.UserID, Items: items, Currency: reply.str(2), Status: HoldActive,
		CreatedAt: time.UnixMilli(reply.num(1)).UTC(), ExpiresAt: time.UnixMilli(reply.num(4)).UTC(),
		PassesSpent: spentPasses(reply.str(5)),
	}, nil
}

func checkTake(user string, lines []Line, idemKey, id string) ([]Line, error) {
	if err := checkKey("userId", user, false); err != nil {
		return nil, err
	}
	if err := checkKey("idempotencyKey", idemKey, true); err != nil {
		return nil, err
	}
	if idemKey == "" || id != "" {
		if err := checkID("id", id); err != nil {
			return nil, err
		}
	}
	return normalize(lines)
}

// rateLimit caps a user's checkouts, reservations and commits per minute, counted
// together in Redis inside the operation's own script. PerMinute 0 means no limit.
type rateLimit struct {
	User      string
	PerMinute int
}

// newRateError is the refusal of a request over the rate limit; waitMs is what the
// script computed on Redis's clock.
func newRateError(waitMs int64) *RateError {
	return &RateError{RetryAfter: max(1, (waitMs+999)/1000)}
}

// RateLimitKey is the counter of a user's rate-limited requests: checkouts and
// reservations (RatePerMinute) and commits (CommitHold) all count in it, inside their
// script, over a window that slides on Redis's clock.
func (r *Redis) RateLimitKey(user string) string {
	return r.k.RateLimit(user)
}

func (r *Redis) rateKey(user string, limit int) string {
	if limit <= 0 {
		return ""
	}
	return r.RateLimitKey(user)
}

// opError names the operation in err, except for a stock refusal: it already says
// what happened, and a sold-out storm returns it so often that formatting it twice
// would be most of the refusal's cost.
func opError(op string, err error) error {
	switch err.(type) {
	case *StockError, *RateError:
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// take runs one request through the batcher; it answers 'ok' or 'replay' or an error.
func (r *Redis) take(req *takeReq) (reply, error) {
	// A request with an idempotency key may be the retry of one that succeeded, whose
	// answer must be replayed even if the SKU is sold out now: only Redis knows.
	var epoch uint64
	if r.soldOut != nil {
		if req.fp == "" {
			if err := r.soldOut.refuse(req.lines); err != nil {
				return nil, err
			}
		}
		epoch = r.soldOut.now()
	}
	p, err := r.linesPartition(req.ctx, req.lines)
	if err != nil {
		return nil, err
	}
	if req.rateLimit > 0 {
		req.rateKey = p.k.RateLimit(req.user) // the window of the partition that counts it
	}
	rep, err := p.batch.submit(req)
	if err != nil {
		return nil, err
	}
	var deadline time.Time
	for wait := 5 * time.Millisecond; len(r.parts) > 1; wait = min(2*wait, 50*time.Millisecond) {
		// Stock held only by in-flight cross-partition checkouts: wait for them (bounded),
		// sweeping abandoned ones, rather than refuse.
		se, ok := takeError(rep).(*StockError)
		if !ok || !r.xHeldShortage(req.ctx, p, se) {
			break
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(r.x.wait)
		} else if time.Now().After(deadline) {
			return nil, ErrStockBusy
		}
		_, _ = r.sweepPartition(req.ctx, p)
		time.Sleep(wait)
		// The first call counted the request against the rate limit: waiting is not
		// another request.
		req = &takeReq{pending: pending{ctx: req.ctx}, mode: req.mode, user: req.user, id: req.id, fp: req.fp, holdMs: req.holdMs,
			lines: req.lines, pass: req.pass}
		if rep, err = p.batch.submit(req); err != nil {
			return nil, err
		}
	}
	if err := takeError(rep); err != nil {
		if r.soldOut != nil {
			r.soldOut.mark(err, epoch)
		}
		return nil, err
	}
	return rep, nil
}

// OrderIDForKey is the id of the order a checkout with this user's idempotency key
// creates (see CheckoutRequest).
func OrderIDForKey(userID, key string) string { return recordID("order", userID, key) }
