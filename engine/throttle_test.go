package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// The limiter allows Burst at once, refuses the next with a retry time, keeps ids and
// scopes apart, and takes back what Unthrottle returns; on both backends (miniredis is
// the embedded mode's).
func TestThrottleAllowsBurstThenRefuses(t *testing.T) {
	eachBackend(t, func(t *testing.T, inv *engine.Redis) {
		ctx := context.Background()
		l := engine.Limit{Burst: 3, Per: time.Hour} // one back every 20 minutes: none comes back during the test
		for i := range 3 {
			if err := inv.Throttle(ctx, "email", "a@example.com", l); err != nil {
				t.Fatalf("request %d of 3: %v", i+1, err)
			}
		}
		err := inv.Throttle(ctx, "email", "a@example.com", l)
		var re *engine.RateError
		if !errors.As(err, &re) || !errors.Is(err, engine.ErrRateLimited) {
			t.Fatalf("4th request: got %v, want a RateError", err)
		}
		if re.RetryAfter < 19*60 || re.RetryAfter > 20*60 {
			t.Fatalf("retry after %d s, want about 1200 (one interval)", re.RetryAfter)
		}
		// Another id, another scope: their own limiters.
		if err := inv.Throttle(ctx, "email", "b@example.com", l); err != nil {
			t.Fatalf("another id: %v", err)
		}
		if err := inv.Throttle(ctx, "addr", "a@example.com", l); err != nil {
			t.Fatalf("another scope: %v", err)
		}
		// One given back is one more allowed, and only one.
		if err := inv.Unthrottle(ctx, "email", "a@example.com", l); err != nil {
			t.Fatal(err)
		}
		if err := inv.Throttle(ctx, "email", "a@example.com", l); err != nil {
			t.Fatalf("after giving one back: %v", err)
		}
		if err := inv.Throttle(ctx, "email", "a@example.com", l); !errors.As(err, &re) {
			t.Fatalf("the one after: got %v, want a RateError", err)
		}
		// A refused request counted nothing: giving back one still leaves room for one.
		if err := inv.Unthrottle(ctx, "email", "a@example.com", l); err != nil {
			t.Fatal(err)
		}
		if err := inv.Throttle(ctx, "email", "a@example.com", l); err != nil {
			t.Fatalf("refusals must not count: %v", err)
		}
		// Off limits allow everything.
		for range 10 {
			if err := inv.Throttle(ctx, "email", "a@example.com", engine.Limit{}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
