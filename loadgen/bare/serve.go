package bare

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

// Baselines names the apps Serve can serve.
var Baselines = []string{"bare", "hello"}

// Serve serves one baseline ("bare" or "hello") on 127.0.0.1:$PORT until ctx ends, then
// shuts down within 15 s. It is what the suite's child process runs
// (`flashstock bench -serve-baseline …`); the bare handler takes REDIS_URL, JWT_SECRET
// and JWT_ISSUER from getenv, and a Redis client set up as flashstock's server sets its
// own (no retries, at least 128 connections).
func Serve(ctx context.Context, baseline string, getenv func(string) string) error {
	var app *fiber.App
	switch baseline {
	case "hello":
		app = Hello()
	case "bare":
		if getenv("REDIS_URL") == "" || len(getenv("JWT_SECRET")) == 0 {
			return errors.New("the bare handler needs REDIS_URL and JWT_SECRET")
		}
		o, err := redis.ParseURL(getenv("REDIS_URL"))
		if err != nil {
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		o.PoolSize = max(o.PoolSize, 128)
		// engine.NoRetries: MaxRetries -1, a lost reply is never re-sent
		rdb := redis.NewClient(engine.NoRetries(o))
		defer rdb.Close()
		app = New(rdb, Config{Secret: []byte(getenv("JWT_SECRET")), Issuer: getenv("JWT_ISSUER")})
	default:
		return fmt.Errorf("unknown baseline %q (want one of %v)", baseline, Baselines)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", getenv("PORT")))
	if err != nil {
		return err
	}
	return serveOn(ctx, app, ln)
}

// serveOn serves app on ln until ctx ends.
func serveOn(ctx context.Context, app *fiber.App, ln net.Listener) error {
	served := make(chan error, 1)
	go func() { served <- app.Listener(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := app.ShutdownWithContext(sctx); err != nil {
		return err
	}
	return <-served
}
