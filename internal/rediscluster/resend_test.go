package rediscluster_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
)

// slowIncr counts its runs in KEYS[1], then keeps the server busy for 300 ms: longer
// than the client's read timeout, so the reply is lost after the script ran.
const slowIncr = `redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 300000
return 1`

// go-redis v9.23's ClusterClient re-sends a command whose reply was lost (read
// timeout, EOF) from its own redirect loop, whatever MaxRetries says: the script runs
// again. engine.NoRetriesCluster (MaxRetries -1) does not prevent it; MaxRedirects -1
// does, at the price of returning MOVED/ASK instead of following them. This test
// pins both facts so a go-redis upgrade that changes either shows up here.
func TestClusterClientResendsALostReplyUnlessRedirectsAreOff(t *testing.T) {
	c := mustStart(t, t.TempDir(), rediscluster.Options{})
	for _, tc := range []struct {
		name         string
		maxRedirects int
		resent       bool
	}{
		{"NoRetriesCluster", 0, true},
		{"NoRetriesCluster+MaxRedirects-1", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redis.NewClusterClient(engine.NoRetriesCluster(&redis.ClusterOptions{
				Addrs: c.Addrs(), ReadTimeout: 100 * time.Millisecond, MaxRedirects: tc.maxRedirects}))
			defer rdb.Close()
			ctx := context.Background()
			key := "{resend-" + strconv.Itoa(tc.maxRedirects) + "}:runs"
			if err := rdb.Eval(ctx, slowIncr, []string{key}).Err(); err == nil {
				t.Fatal("EVAL: got a reply, want a read timeout")
			}
			// The last run may still be going: wait until the server answers again
			// and the count stops changing.
			var runs int
			deadline := time.Now().Add(10 * time.Second)
			for prev := -1; runs != prev; {
				prev = runs
				if time.Now().After(deadline) {
					t.Fatal("run count did not settle")
				}
				time.Sleep(400 * time.Millisecond)
				n, err := rdb.Get(ctx, key).Int()
				if err != nil && err != redis.Nil {
					continue
				}
				runs = n
			}
			t.Logf("script ran %d times", runs)
			if got := runs > 1; got != tc.resent {
				t.Fatalf("script ran %d times: resent %v, want %v", runs, got, tc.resent)
			}
		})
	}
}
