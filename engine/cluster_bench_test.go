package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
	"github.com/flashstock/flashstock/internal/testredis"
)

// BenchmarkPartitionCarts: two-line carts, each of one group's SKUs (one partition),
// spread over 12 groups, on one redis-server (one partition, today's layout) and on a
// local 3+3 Redis Cluster with 12 partitions, without and with WAIT 1. Reports carts/s
// and the p99 latency of a checkout. On a 2-core box the cluster's six redis-servers,
// the replicas' replication and the benchmark share the same cores: the figure is the
// per-core cost, not the scaling (see deploy/CLUSTER.md). The cluster-cross cases buy
// two-line carts whose lines live in two partitions (the cross-partition protocol).
func mustPartitionOf(b *testing.B, inv *engine.Redis, sku string) int {
	p, err := inv.PartitionOf(context.Background(), sku)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkPartitionCarts(b *testing.B) {
	const groups = 12
	cases := []struct {
		name  string
		rdb   func(b *testing.B) redis.UniversalClient
		opts  engine.Options
		cross bool // each cart's two lines in two partitions
	}{
		{"single-node", func(b *testing.B) redis.UniversalClient { _, c := testredis.Start(b); return c }, engine.Options{}, false},
		{"cluster", func(b *testing.B) redis.UniversalClient {
			return testcluster.Start(b, rediscluster.Options{}).Client()
		}, engine.Options{Partitions: groups}, false},
		{"cluster-wait1", func(b *testing.B) redis.UniversalClient {
			return testcluster.Start(b, rediscluster.Options{}).Client()
		}, engine.Options{Partitions: groups, WaitReplicas: 1}, false},
		{"cluster-cross", func(b *testing.B) redis.UniversalClient {
			return testcluster.Start(b, rediscluster.Options{}).Client()
		}, engine.Options{Partitions: groups}, true},
		{"cluster-cross-wait1", func(b *testing.B) redis.UniversalClient {
			return testcluster.Start(b, rediscluster.Options{}).Client()
		}, engine.Options{Partitions: groups, WaitReplicas: 1}, true},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			inv := engine.NewRedis(bc.rdb(b), bc.opts)
			b.Cleanup(inv.Close)
			carts := make([][]engine.Line, groups)
			for g := range groups {
				for i := range 2 {
					sku := fmt.Sprintf("B%d-%d", g, i)
					mustCreate(b, inv, engine.Product{SKU: sku, Stock: engine.MaxUnits, Price: 100, Group: fmt.Sprintf("g%d", g)})
					carts[g] = append(carts[g], engine.Line{SKU: sku, Quantity: 1})
				}
			}
			if bc.cross { // cart g: a SKU of group g and one of the next group in another partition
				for g := range groups {
					pg := mustPartitionOf(b, inv, carts[g][0].SKU)
					for h := 1; h < groups; h++ {
						o := (g + h) % groups
						if mustPartitionOf(b, inv, fmt.Sprintf("B%d-1", o)) != pg {
							carts[g] = []engine.Line{carts[g][0], {SKU: fmt.Sprintf("B%d-1", o), Quantity: 1}}
							break
						}
					}
				}
			}
			var mu sync.Mutex
			var lat []time.Duration
			var seq int64
			var unknown atomic.Int64
			b.SetParallelism(benchParallelism)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					mu.Lock()
					seq++
					n := seq
					mu.Unlock()
					id := fmt.Sprintf("op-%d", n)
					t0 := time.Now()
					req := engine.CheckoutRequest{UserID: "u" + id[len(id)-2:], Lines: carts[n%groups], IdempotencyKey: id}
					_, err := inv.Checkout(context.Background(), req)
					// As a client must: an unknown outcome (a WAIT shortfall when the box is
					// overloaded) is retried with the same key, and counted.
					for tries := 0; errors.Is(err, engine.ErrOutcomeUnknown) && tries < 10; tries++ {
						unknown.Add(1)
						_, err = inv.Checkout(context.Background(), req)
					}
					mine = append(mine, time.Since(t0))
					if err != nil {
						b.Error(err)
						return
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "carts/s")
			b.ReportMetric(float64(unknown.Load()), "unknown-outcomes")
		})
	}
}
