package loadgen

import (
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/flashstock/flashstock/engine"
	"github.com/redis/go-redis/v9"
)

// RedisBenchmark measures the ceiling: redis-benchmark (the C client that ships with
// Redis, so no Go code is in the loop) calling the trivial decrement script, one
// EVALSHA per buyer, with conns clients. pipeline > 1 sends that many calls per round
// trip instead: what Redis can execute when round trips cost nothing. The run sells
// requests units of one fresh key, and the key is read back to check they all sold.
func RedisBenchmark(ctx context.Context, rdb *redis.Client, conns, requests, pipeline int) (*Result, error) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark is not on PATH (Debian package redis-tools): %w", err)
	}
	host, port, err := net.SplitHostPort(rdb.Options().Addr)
	if err != nil {
		return nil, err
	}
	key := availKey("rb-" + strconv.FormatInt(time.Now().UnixNano(), 36))
	const stock = engine.MaxUnits // the most a SKU may hold
	if err := rdb.Set(ctx, key, stock, 0).Err(); err != nil {
		return nil, err
	}
	sha, err := rdb.ScriptLoad(ctx, ceilingSource).Result()
	if err != nil {
		return nil, err
	}
	args := []string{"-h", host, "-p", port, "-c", strconv.Itoa(conns), "-n", strconv.Itoa(requests),
		"-P", strconv.Itoa(max(pipeline, 1)), "--csv", "evalsha", sha, "1", key, "1"}
	start := time.Now()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark: %w\n%s", err, out)
	}
	r, err := parseRedisBenchmark(out)
	if err != nil {
		return nil, err
	}
	left, err := rdb.Get(ctx, key).Int64()
	if err != nil {
		return nil, err
	}
	r.Target, r.Scenario, r.Concurrency, r.Buyers = "ceiling", Hot, conns, requests
	r.Model = fmt.Sprintf("closed c=%d (redis-benchmark)", conns)
	if pipeline > 1 {
		r.Target = "ceiling-pipelined"
		r.Model = fmt.Sprintf("c=%d, %d per round trip (redis-benchmark -P)", conns, pipeline)
	}
	r.Attempts, r.Successes = int64(requests), stock-left
	r.Seconds = float64(requests) / r.AttemptsPerSecond
	if r.Seconds > elapsed.Seconds() {
		r.Seconds = elapsed.Seconds()
	}
	r.SuccessesPerSecond = r.AttemptsPerSecond * float64(r.Successes) / float64(requests)
	r.StockBefore, r.StockAfter, r.UnitsSold = stock, left, r.Successes
	if r.Successes != int64(requests) {
		r.Errors["unsold"] = int64(requests) - r.Successes
	}
	return r, nil
}

// parseRedisBenchmark reads the one result row of redis-benchmark --csv:
// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms".
func parseRedisBenchmark(out []byte) (*Result, error) {
	rows, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil || len(rows) < 2 || len(rows[1]) < 8 || rows[0][1] != "rps" {
		return nil, fmt.Errorf("redis-benchmark output not understood:\n%s", out)
	}
	v := make([]float64, 8)
	for i := 1; i < 8; i++ {
		if v[i], err = strconv.ParseFloat(rows[1][i], 64); err != nil {
			return nil, fmt.Errorf("redis-benchmark output not understood: %w\n%s", err, out)
		}
	}
	return &Result{
		Refusals: map[string]int64{}, Errors: map[string]int64{},
		AttemptsPerSecond: v[1],
		Latency:           Latency{P50: v[4], P95: v[5], P99: v[6], Max: v[7]},
	}, nil
}
