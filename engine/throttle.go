package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/flashstock/flashstock/scripts/lua"
)

// Limit is a rate limit: at most Burst requests in any window of Per, exactly (a
// sliding log; see throttle.lua).
type Limit struct {
	Burst int
	Per   time.Duration
}

// Off reports whether the limit allows everything.
func (l Limit) Off() bool { return l.Burst <= 0 || l.Per <= 0 }

var scriptThrottle = newScript(lua.Throttle)

// Throttle counts one request of id against limit l in scope (a kind of limiter: by
// client address, by email, ...), shared by every process on this Redis and timed by
// Redis's clock. Over the limit it returns a *RateError (errors.Is ErrRateLimited) with
// the seconds until one more request would be allowed, and counts nothing. id is
// hashed into the key name, so any string will do and none is stored.
func (r *Redis) Throttle(ctx context.Context, scope, id string, l Limit) error {
	return r.throttle(ctx, scope, id, l, "take")
}

// Unthrottle gives back one request Throttle counted, for outcomes that should not
// count (a login that succeeded, when only failures are limited).
func (r *Redis) Unthrottle(ctx context.Context, scope, id string, l Limit) error {
	return r.throttle(ctx, scope, id, l, "give")
}

func (r *Redis) throttle(ctx context.Context, scope, id string, l Limit, op string) error {
	if l.Off() {
		return nil
	}
	res, err := r.plain.Run(ctx, scriptThrottle, []string{r.throttleKey(scope, id)}, max(l.Per.Milliseconds(), 1), l.Burst, op,
		NewShortID()).Int64Slice()
	if err != nil {
		// A limiter is not a stock change: whether or not it counted, the caller
		// was not served, so "unavailable" is the truth for it.
		return readErr("throttle "+scope, err)
	}
	if len(res) != 2 {
		return fmt.Errorf("throttle %s: unexpected reply %v", scope, res)
	}
	if res[0] == 1 {
		return nil
	}
	return &RateError{RetryAfter: max((res[1]+999)/1000, 1)}
}

// throttleKey names a limiter by scope and a hash of the id, which keeps names short and
// keeps emails and addresses out of Redis.
func (r *Redis) throttleKey(scope, id string) string {
	sum := sha256.Sum256([]byte(id))
	return r.k.Throttle(scope, hex.EncodeToString(sum[:16]))
}
