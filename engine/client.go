package engine

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// NoRetries returns o set up for the inventory: go-redis must never send a command
// again on its own. A script whose reply was lost (a read timeout, a broken
// connection) may have run; sending it again would apply a non-idempotent request a
// second time. The engine decides what a lost reply means (ErrOutcomeUnknown) and a
// client retries with its Idempotency-Key, which the scripts recognise.
func NoRetries(o *redis.Options) *redis.Options {
	o.MaxRetries = -1
	return o
}

// NoRetriesCluster is NoRetries for a cluster client. It is not enough on its own:
// go-redis v9.23's cluster client also re-sends a command whose reply was lost from its
// redirect loop (MaxRedirects), which internal/rediscluster's resend test pins, so the
// inventory sends its scripts through internal/clusterscript on a cluster client
// (NewRedis does that), never through the cluster client's own redirect loop.
func NoRetriesCluster(o *redis.ClusterOptions) *redis.ClusterOptions {
	o.MaxRetries = -1
	return o
}

// checkNoRetries panics if rdb would retry commands on its own: that is a programming
// error that would apply requests twice (see NoRetries), so it must not get past the
// first test.
func checkNoRetries(rdb redis.UniversalClient) {
	var n int
	switch c := rdb.(type) {
	case *redis.Client:
		n = c.Options().MaxRetries
	case *redis.ClusterClient:
		n = c.Options().MaxRetries
	default:
		return
	}
	// go-redis turns MaxRetries -1 into 0 when it builds the client (0 in Options
	// means its default, 3): 0 here is "never retry".
	if n > 0 {
		panic(fmt.Sprintf("engine: the Redis client retries commands (MaxRetries %d): build its options with engine.NoRetries", n))
	}
}
