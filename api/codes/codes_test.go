package codes_test

import (
	"testing"

	"github.com/flashstock/flashstock/api/codes"
)

// Every code has a status, and the contract's pairs hold (docs/API.md).
func TestEveryCodeHasItsContractStatus(t *testing.T) {
	for code, want := range map[string]int{
		codes.ValidationFailed: 400, codes.CartEmpty: 400, codes.Unauthorized: 401, codes.Forbidden: 403,
		codes.NotFound: 404, codes.OutOfStock: 409, codes.PurchaseLimitExceeded: 409, codes.SaleNotActive: 409,
		codes.InsufficientStock: 409, codes.VersionConflict: 409, codes.AlreadyExists: 409, codes.HoldExpired: 410,
		codes.HoldReleased: 410, codes.IdempotencyKeyReused: 422, codes.PayloadTooLarge: 413, codes.RateLimited: 429,
		codes.Unavailable: 503, codes.OutcomeUnknown: 503, codes.Internal: 500, codes.QueuePassRequired: 403,
	} {
		if got := codes.Status[code]; got != want {
			t.Errorf("%s: got %d, want %d", code, got, want)
		}
	}
	if len(codes.Status) != 20 {
		t.Errorf("%d codes have a status; the test lists 20", len(codes.Status))
	}
}
