package api

import (
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

// redisErr classifies a failed Redis write of the API's own (carts, idempotency-key
// bindings) with the engine's one classifier: unavailable when it did not run,
// outcome unknown when it may have. redis.Nil (no such key) passes unchanged.
func redisErr(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	return engine.WriteErr("redis", err)
}

// redisReadErr classifies a failed Redis read of the API's own: whatever happened,
// nothing was changed, so a call that got no answer is unavailable, never outcome
// unknown.
func redisReadErr(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	return engine.ReadErr("redis", err)
}
