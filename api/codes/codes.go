// Package codes lists the contract's problem codes: the machine-readable `code` of
// every error answer (application/problem+json), with the HTTP status each goes with.
// Clients of the API (the load tool, tests) use them without importing the server.
package codes

import "net/http"

// The problem codes of contract v1 and v1.1 (docs/API.md).
const (
	ValidationFailed      = "validation_failed"
	CartEmpty             = "cart_empty"
	Unauthorized          = "unauthorized"
	Forbidden             = "forbidden"
	NotFound              = "not_found"
	OutOfStock            = "out_of_stock"
	PurchaseLimitExceeded = "purchase_limit_exceeded"
	SaleNotActive         = "sale_not_active"
	InsufficientStock     = "insufficient_stock"
	VersionConflict       = "version_conflict"
	AlreadyExists         = "already_exists"
	HoldExpired           = "hold_expired"
	HoldReleased          = "hold_released"
	IdempotencyKeyReused  = "idempotency_key_reused"
	PayloadTooLarge       = "payload_too_large"
	RateLimited           = "rate_limited"
	// QueuePassRequired refuses a checkout or hold of a SKU whose waiting room is
	// enabled, without a valid Queue-Pass of the caller for it.
	QueuePassRequired = "queue_pass_required"
	// Unavailable means nothing was applied: retry shortly.
	Unavailable = "unavailable"
	// OutcomeUnknown means the request may have been applied: retry with the same
	// Idempotency-Key to learn which.
	OutcomeUnknown = "outcome_unknown"
	Internal       = "internal"
)

// Status is the HTTP status each code is answered with.
var Status = map[string]int{
	ValidationFailed:      http.StatusBadRequest,
	CartEmpty:             http.StatusBadRequest,
	Unauthorized:          http.StatusUnauthorized,
	Forbidden:             http.StatusForbidden,
	NotFound:              http.StatusNotFound,
	OutOfStock:            http.StatusConflict,
	PurchaseLimitExceeded: http.StatusConflict,
	SaleNotActive:         http.StatusConflict,
	InsufficientStock:     http.StatusConflict,
	VersionConflict:       http.StatusConflict,
	AlreadyExists:         http.StatusConflict,
	HoldExpired:           http.StatusGone,
	HoldReleased:          http.StatusGone,
	IdempotencyKeyReused:  http.StatusUnprocessableEntity,
	PayloadTooLarge:       http.StatusRequestEntityTooLarge,
	RateLimited:           http.StatusTooManyRequests,
	QueuePassRequired:     http.StatusForbidden,
	Unavailable:           http.StatusServiceUnavailable,
	OutcomeUnknown:        http.StatusServiceUnavailable,
	Internal:              http.StatusInternalServerError,
}
