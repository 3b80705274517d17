package engine

import (
	"errors"
	"fmt"
	"strings"
)

// The errors of the inventory domain. Callers test them with errors.Is; the typed errors
// below carry the details and match the sentinel they wrap.
var (
	ErrInvalid              = errors.New("invalid input")
	ErrNotFound             = errors.New("not found")
	ErrOutOfStock           = errors.New("out of stock")
	ErrLimitExceeded        = errors.New("purchase limit exceeded")
	ErrSaleNotActive        = errors.New("sale not active")
	ErrInsufficientStock    = errors.New("insufficient stock")
	ErrVersionConflict      = errors.New("version conflict")
	ErrAlreadyExists        = errors.New("already exists")
	ErrHoldExpired          = errors.New("hold expired")
	ErrHoldReleased         = errors.New("hold released")
	ErrHoldCommitted        = errors.New("hold committed")
	ErrIdempotencyKeyReused = errors.New("idempotency key reused with a different request")
	// ErrUnavailable means the request was not applied: Redis could not be reached, or
	// refused it before running it (out of memory, loading, read-only replica).
	ErrUnavailable = errors.New("store unavailable")
	// ErrOutcomeUnknown means the request may or may not have been applied: it was sent
	// and no answer came back (a timeout, a broken connection). Retrying it with the
	// same idempotency key tells which; it is never retried on its own.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	ErrRateLimited    = errors.New("rate limited")
	// ErrQueuePassRequired refuses a checkout or hold of a SKU whose waiting room is
	// enabled, made without a valid unused pass of that room for that user.
	ErrQueuePassRequired = errors.New("queue pass required")
)

// ValidationError says which input was refused and why. It matches ErrInvalid.
type ValidationError struct {
	Field  string
	Reason string
	cause  error // a sentinel more specific than ErrInvalid (ErrCrossPartition), or nil
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalid) hold (and errors.Is of its cause, if any).
func (e *ValidationError) Unwrap() []error {
	if e.cause != nil {
		return []error{ErrInvalid, e.cause}
	}
	return []error{ErrInvalid}
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Shortage is a line that could not be served: what was asked and what was available
// at that instant.
type Shortage struct {
	SKU       string `json:"sku"`
	Requested int64  `json:"requested"`
	Available int64  `json:"available"`
}

// StockError lists every short line of a refused checkout or hold. It matches
// ErrOutOfStock.
type StockError struct {
	Short []Shortage
}

func (e *StockError) Error() string {
	var b strings.Builder
	b.WriteString("out of stock:")
	for _, s := range e.Short {
		fmt.Fprintf(&b, " %s (requested %d, available %d)", s.SKU, s.Requested, s.Available)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrOutOfStock) hold.
func (e *StockError) Unwrap() error { return ErrOutOfStock }

// LimitError is a refusal by a per-user limit. It matches ErrLimitExceeded.
type LimitError struct {
	SKU       string
	Limit     int64 // units one user may ever take of SKU
	Already   int64 // units the user holds or bought already
	Requested int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("purchase limit exceeded: %s allows %d per user, %d taken, %d requested",
		e.SKU, e.Limit, e.Already, e.Requested)
}

// Unwrap makes errors.Is(err, ErrLimitExceeded) hold.
func (e *LimitError) Unwrap() error { return ErrLimitExceeded }

// RateError refuses a request over the user's requests per minute. It matches
// ErrRateLimited.
type RateError struct {
	RetryAfter int64 // whole seconds until a request would be admitted, at least 1
}

func (e *RateError) Error() string {
	return fmt.Sprintf("rate limited: retry in %d s", e.RetryAfter)
}

// Unwrap makes errors.Is(err, ErrRateLimited) hold.
func (e *RateError) Unwrap() error { return ErrRateLimited }
