package api

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/flashstock/flashstock/api/codes"
	"github.com/flashstock/flashstock/engine"
)

// Problem is an RFC 9457 problem detail. Code is the contract's machine-readable code.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
	// Items lists the short lines of an out_of_stock refusal.
	Items []engine.Shortage `json:"items,omitempty"`
	// Field names the input a validation_failed refers to.
	Field string `json:"field,omitempty"`
	// RequestID ties the answer to the server's log lines.
	RequestID string `json:"requestId,omitempty"`
	// RetryAfter, in seconds, goes out as the Retry-After header when positive.
	RetryAfter int64 `json:"-"`
}

// apiError is an error raised by a handler with its contract code.
type apiError struct {
	status int
	code   string
	detail string
	field  string
}

func (e *apiError) Error() string { return e.code + ": " + e.detail }

func problem(status int, code, detail string) error {
	return &apiError{status: status, code: code, detail: detail}
}

func validation(field, detail string) error {
	return &apiError{status: http.StatusBadRequest, code: codes.ValidationFailed, detail: detail, field: field}
}

var (
	errUnauthorized = problem(http.StatusUnauthorized, codes.Unauthorized, "a valid bearer token is required")
	errForbidden    = problem(http.StatusForbidden, codes.Forbidden, "this route is for admins")
	errNotFound     = problem(http.StatusNotFound, codes.NotFound, "no such resource")
	errCartEmpty    = problem(http.StatusBadRequest, codes.CartEmpty, "the cart is empty")
)

// engineErrors is the one table from the domain's errors to HTTP.
// Statuses come from codes.Status.
var engineErrors = []struct {
	err  error
	code string
}{
	{engine.ErrInvalid, codes.ValidationFailed},
	{engine.ErrNotFound, codes.NotFound},
	{engine.ErrOutOfStock, codes.OutOfStock},
	{engine.ErrLimitExceeded, codes.PurchaseLimitExceeded},
	{engine.ErrSaleNotActive, codes.SaleNotActive},
	{engine.ErrInsufficientStock, codes.InsufficientStock},
	{engine.ErrVersionConflict, codes.VersionConflict},
	// Releasing a committed hold conflicts with its state; the contract has no code of
	// its own for it.
	{engine.ErrHoldCommitted, codes.VersionConflict},
	{engine.ErrAlreadyExists, codes.AlreadyExists},
	{engine.ErrHoldExpired, codes.HoldExpired},
	{engine.ErrHoldReleased, codes.HoldReleased},
	{engine.ErrIdempotencyKeyReused, codes.IdempotencyKeyReused},
	// Before ErrUnavailable: "may have been applied" must never be told "was not".
	{engine.ErrOutcomeUnknown, codes.OutcomeUnknown},
	{engine.ErrUnavailable, codes.Unavailable},
	{engine.ErrRateLimited, codes.RateLimited},
	{engine.ErrQueuePassRequired, codes.QueuePassRequired},
}

// toProblem maps any error to the problem the client sees; internal errors are logged
// (log carries the request id) and shown as `internal`, with no detail.
func toProblem(err error, log func() *slog.Logger, reqID string) Problem {
	p := classify(err)
	p.RequestID = reqID
	if p.Code == codes.Internal {
		log().Error("internal error", "err", err)
		p.Detail = ""
	}
	switch p.Code {
	case codes.Unavailable:
		log().Warn("dependency unavailable", "err", err)
		p.Detail = "a dependency is unavailable and nothing was applied; retry shortly"
	case codes.OutcomeUnknown:
		log().Warn("outcome unknown", "err", err)
		p.Detail = "the request may or may not have been applied; retry with the same Idempotency-Key to learn which"
	}
	return p
}

// classify is the one mapping from errors to problems. It has no side effects.
func classify(err error) Problem {
	p := Problem{Status: http.StatusInternalServerError, Code: codes.Internal}
	var ae *apiError
	var fe *fiber.Error
	var ve *engine.ValidationError
	var se *engine.StockError
	var re *engine.RateError
	switch {
	case errors.As(err, &se):
		// The refusal a sold-out storm answers most: no message formatting.
		p.Status, p.Code, p.Items, p.Detail = http.StatusConflict, codes.OutOfStock, se.Short, "not enough stock for every line"
	case errors.As(err, &ae):
		p.Status, p.Code, p.Detail, p.Field = ae.status, ae.code, ae.detail, ae.field
	case errors.As(err, &fe):
		p.Status, p.Code, p.Detail = fe.Code, fiberCode(fe.Code), fe.Message
	default:
		for _, m := range engineErrors {
			if errors.Is(err, m.err) {
				p.Status, p.Code, p.Detail = codes.Status[m.code], m.code, err.Error()
				break
			}
		}
	}
	if errors.As(err, &ve) {
		p.Field, p.Detail = ve.Field, ve.Error()
	}
	switch p.Code {
	case codes.RateLimited:
		p.RetryAfter = 60
		if errors.As(err, &re) {
			p.RetryAfter = re.RetryAfter
		}
	case codes.OutcomeUnknown, codes.Unavailable:
		p.RetryAfter = 1
	}
	p.Type = "https://flashstock.dev/problems/" + p.Code
	p.Title = http.StatusText(p.Status)
	return p
}

func fiberCode(status int) string {
	switch status {
	case http.StatusRequestEntityTooLarge:
		return codes.PayloadTooLarge
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return codes.NotFound
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return codes.ValidationFailed
	case http.StatusUnauthorized:
		return codes.Unauthorized
	case http.StatusForbidden:
		return codes.Forbidden
	case http.StatusTooManyRequests:
		return codes.RateLimited
	case http.StatusServiceUnavailable, http.StatusRequestTimeout:
		return codes.Unavailable
	}
	return codes.Internal
}
