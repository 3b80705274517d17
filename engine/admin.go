package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Adjust moves a SKU's available units by a delta, never below zero nor above
// MaxUnits. A replay of its idempotency key answers the original result.
// Errors: ErrInvalid, ErrNotFound, ErrInsufficientStock, ErrIdempotencyKeyReused,
// ErrUnavailable, ErrOutcomeUnknown.
func (r *Redis) Adjust(ctx context.Context, req AdjustRequest) (Level, error) {
	if err := checkAdmin(req.SKU, req.Reason, req.Actor, req.IdempotencyKey); err != nil {
		return Level{}, fmt.Errorf("adjust: %w", err)
	}
	if req.Delta == 0 || req.Delta < -MaxUnits || req.Delta > MaxUnits {
		return Level{}, fmt.Errorf("adjust: %w", invalid("delta", "must be a non-zero number between %d and %d", -MaxUnits, MaxUnits))
	}
	op := adminOp{kind: "adjust", sku: req.SKU, reason: req.Reason, actor: req.Actor, expected: -1, da: req.Delta}
	if req.IdempotencyKey != "" {
		op.idemKey = req.IdempotencyKey
		op.fp = fingerprint("adjust", req.SKU, strconv.FormatInt(req.Delta, 10), req.Reason)
	}
	lv, err := r.adjust(ctx, op)
	if err != nil {
		return Level{}, fmt.Errorf("adjust %s: %w", req.SKU, err)
	}
	return lv, nil
}

// SetLevel sets a SKU's available units under compare-and-set on its version.
// Errors: ErrInvalid, ErrNotFound, ErrVersionConflict, ErrUnavailable, ErrOutcomeUnknown.
func (r *Redis) SetLevel(ctx context.Context, req SetRequest) (Level, error) {
	if err := checkAdmin(req.SKU, req.Reason, req.Actor, ""); err != nil {
		return Level{}, fmt.Errorf("set level: %w", err)
	}
	if req.Available < 0 || req.Available > MaxUnits {
		return Level{}, fmt.Errorf("set level: %w", invalid("available", "must be between 0 and %d", MaxUnits))
	}
	if req.ExpectedVersion < 0 {
		return Level{}, fmt.Errorf("set level: %w", invalid("expectedVersion", "must not be negative"))
	}
	lv, err := r.adjust(ctx, adminOp{kind: "set", sku: req.SKU, reason: req.Reason, actor: req.Actor,
		expected: req.ExpectedVersion, da: req.Available})
	if err != nil {
		return Level{}, fmt.Errorf("set level %s: %w", req.SKU, err)
	}
	return lv, nil
}

// Repair compensates drift found by reconciliation: the levels move by the given deltas
// (expected minus live), and the ledger records both the drift and the compensation
// (two movements, so the version grows by two). It acts only if the SKU's version is
// still expectedVersion, so it cannot act on levels it did not see.
// Errors: ErrInvalid, ErrNotFound, ErrVersionConflict, ErrInsufficientStock.
func (r *Redis) Repair(ctx context.Context, sku string, expectedVersion, dAvailable, dReserved, dSold int64, reason string) (Level, error) {
	return r.fix(ctx, adminOp{kind: "repair", sku: sku, reason: reason, expected: expectedVersion,
		da: dAvailable, dr: dReserved, ds: dSold})
}

func (r *Redis) fix(ctx context.Context, op adminOp) (Level, error) {
	op.actor = "reconcile"
	if err := checkAdmin(op.sku, op.reason, op.actor, ""); err != nil {
		return Level{}, fmt.Errorf("%s: %w", op.kind, err)
	}
	lv, err := r.adjust(ctx, op)
	if err != nil {
		return Level{}, fmt.Errorf("%s %s: %w", op.kind, op.sku, err)
	}
	return lv, nil
}

func checkAdmin(sku, reason, actor, idemKey string) error {
	if err := checkSKU("sku", sku); err != nil {
		return err
	}
	if len(reason) > MaxReasonBytes || !utf8.ValidString(reason) || strings.ContainsFunc(reason, unicode.IsControl) {
		return invalid("reason", "must be at most %d bytes of text without control characters", MaxReasonBytes)
	}
	if err := checkKey("actor", actor, true); err != nil {
		return err
	}
	return checkKey("idempotencyKey", idemKey, true)
}

// adminOp is one run of adjust.lua: an adjustment, a compare-and-set of the level, a
// repair or the release of lost holds.
type adminOp struct {
	kind, sku, reason, actor string
	// idemKey and fp: the caller's idempotency key and the request's fingerprint; without
	// a key, adjust draws an operation id, so that the call is safe to run twice.
	idemKey, fp string
	expected    int64 // version the SKU must be at; -1 = any
	da, dr, ds  int64 // deltas of available, reserved, sold (set: da is the new level)
}

func (r *Redis) adjust(ctx context.Context, op adminOp) (Level, error) {
	defer r.restocking()()
	p, err := r.partitionOf(ctx, op.sku)
	if err != nil {
		return Level{}, err
	}
	k := p.k // the SKU's partition keeps the adjustment's idempotency record too
	record := k.Idem("admin:"+op.actor, op.idemKey)
	if op.idemKey == "" {
		record, op.fp = k.Idem("admin-op:"+op.actor, NewID()), "op"
	}
	rep, err := run(ctx, r.sc, scriptAdjust, []string{k.Outbox(), k.Stock(op.sku), record, k.RestockChannel()},
		op.kind, op.sku, op.reason, op.actor, op.fp, r.idemTTL, op.expected, op.da, op.dr, op.ds, MaxUnits)
	if err != nil {
		return Level{}, err
	}
	lv := Level{SKU: op.sku, Available: rep.num(1), Reserved: rep.num(2), Sold: rep.num(3), Version: rep.num(4)}
	switch rep.status() {
	case "ok", "replay":
		lv.Replayed = rep.status() == "replay"
		if lv.Available > 0 && !lv.Replayed {
			r.restocked(op.sku)
		}
		return lv, nil
	case "not_found":
		return Level{}, ErrNotFound
	case "reused":
		return Level{}, ErrIdempotencyKeyReused
	case "version":
		return Level{}, fmt.Errorf("%w: version is %d", ErrVersionConflict, lv.Version)
	case "insufficient":
		return Level{}, fmt.Errorf("%w: %d available", ErrInsufficientStock, lv.Available)
	case "too_large":
		return Level{}, invalid("delta", "would take available above %d (it is %d)", MaxUnits, lv.Available)
	}
	return Level{}, rep.expect("ok")
}
