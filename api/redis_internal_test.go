package api

import (
	"errors"
	"net"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

// A read that got no answer changed nothing: unavailable. A write that got none may
// have run: outcome unknown. A missing key is neither.
func TestRedisErrorsOfTheAPIsOwnCalls(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: errTimeout{}}
	if err := redisReadErr(timeout); !errors.Is(err, engine.ErrUnavailable) || errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("read timeout: got %v, want unavailable only", err)
	}
	if err := redisErr(timeout); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("write timeout: got %v, want outcome unknown", err)
	}
	for _, f := range []func(error) error{redisErr, redisReadErr} {
		if err := f(redis.Nil); err != redis.Nil {
			t.Fatalf("redis.Nil: got %v, want it unchanged", err)
		}
	}
}

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }
