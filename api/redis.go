package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

// redisErr marks a failed Redis call of the API's own (carts, rate limits) as
// unavailable.
func redisErr(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
}

// rateLimited counts a commit against RateLimitPerMinute: checkout, hold and commit
// requests per user per clock minute. Checkouts and holds count in their own script call
// (engine RatePerMinute), on the same counter. The counter lives in Redis, so the limit
// holds across replicas.
func (s *server) rateLimited(c *fiber.Ctx) error {
	limit := s.cfg.RateLimitPerMinute
	if limit <= 0 {
		return c.Next()
	}
	now := s.now()
	key := s.inv.RateLimitKey(principal(c).UserID, now)
	ctx := c.UserContext()
	var incr *redis.IntCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.Incr(ctx, key)
		p.Expire(ctx, key, 2*time.Minute)
		return nil
	})
	if err != nil {
		return redisErr(err)
	}
	if incr.Val() > int64(limit) {
		retry := 60 - now.Unix()%60
		c.Set(fiber.HeaderRetryAfter, strconv.FormatInt(retry, 10))
		return problem(http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("at most %d checkout, hold and commit requests a minute", limit))
	}
	return c.Next()
}
