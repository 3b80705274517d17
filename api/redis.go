package api

import (
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

// redisErr classifies a failed Redis call of the API's own (carts, idempotency-key
// bindings) with the engine's one classifier: unavailable when it did not run,
// outcome unknown when it may have. redis.Nil (no such key) passes unchanged.
func redisErr(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	return engine.WriteErr("redis", err)
}
