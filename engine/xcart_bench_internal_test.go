package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/testredis"
)

// scriptServerTime is the server time Redis spent in EVALSHA calls since its last
// CONFIG RESETSTAT, µs, and the number of calls (INFO commandstats).
func scriptServerTime(tb testing.TB, c *redis.Client) (usec, calls float64) {
	tb.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		stats, ok := strings.CutPrefix(l, "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for _, f := range strings.Split(stats, ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "calls":
				fmt.Sscan(v, &calls)
			case "usec":
				fmt.Sscan(v, &usec)
			}
		}
	}
	return usec, calls
}

// BenchmarkCrossSteps: xcart.lua's steps, ten per script call as a loaded partition
// batches them, on a private redis-server, one step kind at a time: reserve (N fresh
// attempts), commit (those attempts), decide (N fresh orders). It reports the server
// time per step (Redis's own count, INFO commandstats: what a cross-partition cart costs
// a master, without the client or the network). A cross-partition cart of two
// partitions is one of each. Run with -benchtime Nx, N a multiple of 10.
func BenchmarkCrossSteps(b *testing.B) {
	_, c, p := twoPartitions(b, MaxUnits, 0, "X", "Y")
	ctx := context.Background()
	k := p.k
	const per = 10
	run := 0
	phase := func(b *testing.B, mk func(i int) *xop) {
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i += per {
			ops := make([]*xop, per)
			for j := range ops {
				ops[j] = mk(i + j)
				ops[j].pending = pending{ctx: ctx, done: make(chan struct{})}
			}
			p.xbatch.exec(ops)
			for _, op := range ops {
				if op.err != nil || op.rep.status() == "error" {
					b.Fatal(op.err, op.rep)
				}
			}
		}
		usec, calls := scriptServerTime(b, c)
		b.ReportMetric(usec/(calls*per), "server-us/step")
	}
	attempt := func(i int) string { return fmt.Sprintf("o%d-%d~0123456789abcdef", run, i) }
	order := func(i int) string { return fmt.Sprintf("o%d-%d", run, i) }
	b.Run("reserve", func(b *testing.B) {
		run++
		phase(b, func(i int) *xop {
			return &xop{keys: []string{k.XAttempt(attempt(i)), k.Stock("X"), k.Bought("X"), k.Room("X", "p"), k.Room("X", "h")},
				args: []any{"reserve", attempt(i), 1 - p.n, order(i), 2000, "user1", "", "X", 1}}
		})
	})
	b.Run("commit", func(b *testing.B) { // the attempts the last reserve run left held
		phase(b, func(i int) *xop {
			return &xop{keys: []string{k.XAttempt(attempt(i)), k.Stock("X"), k.Bought("X"), k.Room("X", "p"), k.Room("X", "h")},
				args: []any{"commit", attempt(i), "X"}}
		})
	})
	b.Run("decide", func(b *testing.B) {
		run++
		phase(b, func(i int) *xop {
			return &xop{keys: []string{k.Order(order(i)), k.RateLimit("user1"), k.Stock("Y"), k.Bought("Y"), k.Room("Y", "p"), k.Room("Y", "h")},
				args: []any{"decide", attempt(i), order(i), "user1", "fp", 0, "USD", "X:1:100", "", "Y", 1}}
		})
	})
}

// BenchmarkRedisLua: what Redis 7.0's Lua costs for the operations a script step is
// made of, as server time per EVALSHA of a script that does 100 of them (10 for
// redis.call), with 35 keys and 100 values like a batch of steps. It explains where a
// cross-partition step's time goes (docs/BENCHMARKS.md).
func BenchmarkRedisLua(b *testing.B) {
	_, c := testredis.Start(b)
	ctx := context.Background()
	var keys []string
	var args []any
	for i := range 35 {
		keys = append(keys, fmt.Sprintf("{1}k%d", i))
	}
	for i := range 100 {
		args = append(args, fmt.Sprintf("arg%d", i))
	}
	for _, bc := range []struct{ name, src string }{
		{"call", "return 1"},
		{"add-x1000", "local x = 0 for i = 1, 1000 do x = x + i end return 1"},
		{"table-x100", "local x = {} for i = 1, 100 do x[i] = {i} end return 1"},
		{"concat-number-x100", "local x = {} for i = 1, 100 do x[i] = 'a' .. i end return 1"},
		{"concat-string-x100", "local x = {} for i = 1, 100 do x[i] = 'a' .. ARGV[i] end return 1"},
		{"match-x100", `local x = {} for i = 1, 100 do x[i] = string.match('h\n1\no1\n123\nX:1:100\n\nuser1', '^(h)\n(.-)\n(.-)\n(.-)\n(.-)\n(.-)\n(.*)$') end return 1`},
		{"redis.call-x10", "for i = 1, 10 do redis.call('HGET', KEYS[1], 'x') end return 1"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := redis.NewScript(bc.src)
			if err := c.ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := s.Run(ctx, c, keys, args...).Err(); err != nil {
					b.Fatal(err)
				}
			}
			usec, calls := scriptServerTime(b, c)
			b.ReportMetric(usec/calls, "server-us/call")
		})
	}
}
