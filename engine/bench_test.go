package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testredis"
)

// benchParallelism × GOMAXPROCS goroutines drive each parallel benchmark: enough
// concurrent buyers to keep Redis busy, as a flash sale would.
const benchParallelism = 128

func benchInventory(b *testing.B, skus ...string) *engine.Redis {
	b.Helper()
	_, c := testredis.Start(b)
	inv := engine.NewRedis(c, engine.Options{})
	b.Cleanup(inv.Close)
	for _, sku := range skus {
		mustCreate(b, inv, engine.Product{SKU: sku, Stock: engine.MaxUnits, Price: 100})
	}
	return inv
}

// BenchmarkCheckoutHotSKU: every buyer takes one unit of the same SKU, each with its own
// idempotency key; the order and its movement go to the outbox. This is the figure the
// trivial-script ceiling is compared with.
func BenchmarkCheckoutHotSKU(b *testing.B) {
	inv := benchInventory(b, "HOT")
	lines := []engine.Line{{SKU: "HOT", Quantity: 1}}
	runParallel(b, func(ctx context.Context, id string) error {
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u" + id[len(id)-3:], Lines: lines, IdempotencyKey: id, OrderID: id})
		return err
	})
}

// BenchmarkCheckoutCart4: four-line carts over four SKUs.
func BenchmarkCheckoutCart4(b *testing.B) {
	inv := benchInventory(b, "A", "B", "C", "D")
	lines := []engine.Line{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 2}, {SKU: "C", Quantity: 1}, {SKU: "D", Quantity: 3}}
	runParallel(b, func(ctx context.Context, id string) error {
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u" + id[len(id)-3:], Lines: lines, IdempotencyKey: id, OrderID: id})
		return err
	})
}

// BenchmarkHoldReserveCommit: reserve one unit, then commit it (one op = both).
func BenchmarkHoldReserveCommit(b *testing.B) {
	inv := benchInventory(b, "HOT")
	lines := []engine.Line{{SKU: "HOT", Quantity: 1}}
	runParallel(b, func(ctx context.Context, id string) error {
		if _, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", Lines: lines, TTL: time.Minute, HoldID: id}); err != nil {
			return err
		}
		_, err := inv.Commit(ctx, engine.CommitRequest{HoldID: id, OrderID: id + "o"})
		return err
	})
}

// BenchmarkTrivialScript is the Go client's ceiling: EVALSHA of a one-line DECRBY script,
// same client settings and parallelism as the checkout benchmarks.
func BenchmarkTrivialScript(b *testing.B) {
	_, c := testredis.Start(b)
	s := redis.NewScript("return redis.call('DECRBY', KEYS[1], 1)")
	keys := []string{"ctr"}
	runParallel(b, func(ctx context.Context, _ string) error {
		return s.Run(ctx, c, keys).Err()
	})
}

// BenchmarkRedisBenchmarkCeiling runs redis-benchmark (50 clients, the C client, no Go
// in the loop) with the same trivial EVALSHA against a fresh server, and reports its
// ops/s: the ceiling that the checkout figures are a fraction of.
func BenchmarkRedisBenchmarkCeiling(b *testing.B) {
	srv, c := testredis.Start(b)
	sha, err := c.ScriptLoad(context.Background(), "return redis.call('DECRBY', KEYS[1], 1)").Result()
	if err != nil {
		b.Fatal(err)
	}
	host, port, _ := strings.Cut(srv.Addr, ":")
	n := max(b.N, 200_000)
	b.ResetTimer()
	out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "-c", "50", "-n", strconv.Itoa(n),
		"-q", "evalsha", sha, "1", "ctr").CombinedOutput()
	b.StopTimer()
	if err != nil {
		b.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`([0-9.]+) requests per second`).FindSubmatch(out)
	if m == nil {
		b.Fatalf("redis-benchmark output not understood:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	b.ReportMetric(rps, "ops/s")
	b.ReportMetric(0, "ns/op")
}

func runParallel(b *testing.B, op func(ctx context.Context, id string) error) {
	b.Helper()
	ctx := context.Background()
	var seq atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 24)
		for pb.Next() {
			buf = strconv.AppendInt(append(buf[:0], "op-"...), seq.Add(1)+1000, 10)
			if err := op(ctx, string(buf)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkCheckoutRedisTime runs the hot-SKU checkout and reports what Redis itself
// spent inside the script per checkout (INFO commandstats, evalsha usec) and how many
// checkouts each script call carried: the figures the batching work was steered by.
func BenchmarkCheckoutRedisTime(b *testing.B) {
	inv := benchInventory(b, "HOT")
	ctx := context.Background()
	if err := inv.Client().ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	lines := []engine.Line{{SKU: "HOT", Quantity: 1}}
	runParallel(b, func(ctx context.Context, id string) error {
		_, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u" + id[len(id)-3:], Lines: lines, IdempotencyKey: id, OrderID: id})
		return err
	})
	b.StopTimer()
	stats, err := inv.Client().Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`cmdstat_evalsha:calls=(\d+),usec=(\d+)`).FindStringSubmatch(stats)
	if m == nil {
		b.Fatalf("no evalsha in commandstats:\n%s", stats)
	}
	calls, _ := strconv.ParseFloat(m[1], 64)
	usec, _ := strconv.ParseFloat(m[2], 64)
	b.ReportMetric(usec/float64(b.N), "redis-us/checkout")
	b.ReportMetric(float64(b.N)/calls, "checkouts/call")
}

// BenchmarkQueueMillion fills one SKU's waiting room with 1,000,000 buyers before the
// start (joins/s), reads Redis's memory per waiting buyer (INFO used_memory before and
// after), then asks 200,000 random buyers where they stand (lookups/s), and again once
// the sale has started, each call also admitting (open-lookups/s), all from
// benchParallelism × GOMAXPROCS goroutines. User ids are 36 characters, as the UUIDs the
// server issues. Run it once: -benchtime 1x.
func BenchmarkQueueMillion(b *testing.B) {
	const buyers, lookups = 1_000_000, 200_000
	inv := benchInventory(b)
	ctx := context.Background()
	start := time.Now().Add(24 * time.Hour)
	mustCreate(b, inv, engine.Product{SKU: "DROP", Stock: 1000, Price: 100, SaleStartsAt: &start,
		WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: 6000}})
	user := func(i int64) string { return fmt.Sprintf("0192f0c4-7a3e-7c1d-9b2a-%012d", i) }
	usedMemory := func() int64 {
		info := inv.Client().Info(ctx, "memory").Val()
		m := regexp.MustCompile(`used_memory:(\d+)`).FindStringSubmatch(info)
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	workers := benchParallelism * runtime.GOMAXPROCS(0)
	drive := func(total int64, op func(i int64) error) float64 {
		var next atomic.Int64
		var wg sync.WaitGroup
		began := time.Now()
		for range workers {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < total; i = next.Add(1) - 1 {
					if err := op(i); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return float64(total) / time.Since(began).Seconds()
	}
	for b.Loop() {
		before := usedMemory()
		joins := drive(buyers, func(i int64) error {
			t, err := inv.JoinQueue(ctx, "DROP", user(i))
			if err == nil && !t.Joined {
				err = fmt.Errorf("%s: not joined", user(i))
			}
			return err
		})
		perBuyer := float64(usedMemory()-before) / buyers
		rng := rand.New(rand.NewPCG(1, 2))
		ids := make([]int64, lookups)
		for i := range ids {
			ids[i] = rng.Int64N(buyers)
		}
		reads := drive(lookups, func(i int64) error {
			t, err := inv.QueuePosition(ctx, "DROP", user(ids[i]))
			if err == nil && (t.Status != engine.QueueWaiting || t.Position < 1 || t.Position > buyers) {
				err = fmt.Errorf("%s: %+v", user(ids[i]), t)
			}
			return err
		})
		// The same after the start, when every call also runs admission (1,000 units: the
		// room admits 1,000 buyers, then waits for them to buy).
		past := time.Now().Add(-time.Millisecond)
		if err := inv.UpdateProduct(ctx, "DROP", engine.ProductPatch{SaleStartsAt: &past}); err != nil {
			b.Fatal(err)
		}
		open := drive(lookups, func(i int64) error {
			_, err := inv.QueuePosition(ctx, "DROP", user(ids[i]))
			return err
		})
		b.ReportMetric(joins, "joins/s")
		b.ReportMetric(reads, "lookups/s")
		b.ReportMetric(open, "open-lookups/s")
		b.ReportMetric(perBuyer, "bytes/buyer")
	}
}
