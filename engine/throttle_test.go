package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// However requests arrive, no 60-second span lets more than the limit through: a
// limiter that refills after a burst (GCRA) let nearly twice the limit through.
func TestThrottleNeverExceedsTheLimitInAnyWindow(t *testing.T) {
	m, inv := miniInventory(t)
	ctx := context.Background()
	l := engine.Limit{Burst: 5, Per: time.Minute}
	start := time.Date(2026, 1, 1, 12, 0, 40, 0, time.UTC) // windows on Redis's clock start at whole minutes
	var allowed []time.Duration
	for at := time.Duration(0); at < 5*time.Minute; at += 2 * time.Second {
		m.SetTime(start.Add(at))
		if err := inv.Throttle(ctx, "email", "guesser@example.com", l); err == nil {
			allowed = append(allowed, at)
		} else if !errors.Is(err, engine.ErrRateLimited) {
			t.Fatal(err)
		}
	}
	for i := range allowed {
		n := 0
		for _, at := range allowed[i:] {
			if at-allowed[i] < time.Minute {
				n++
			}
		}
		if n > l.Burst {
			t.Fatalf("%d requests allowed within a minute from %v, limit %d (allowed at %v)", n, allowed[i], l.Burst, allowed)
		}
	}
	if len(allowed) < 4*l.Burst { // five minutes: not starved either
		t.Fatalf("only %d requests allowed in five minutes at a limit of %d a minute: %v", len(allowed), l.Burst, allowed)
	}
}

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
		// Until enough of this window has slid out: at most the window and a sixth.
		if re.RetryAfter < 1 || re.RetryAfter > 70*60 {
			t.Fatalf("retry after %d s, want 1 s to 70 min", re.RetryAfter)
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
