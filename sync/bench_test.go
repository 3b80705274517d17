package sync_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
	stocksync "github.com/flashstock/flashstock/sync"
)

// BenchmarkSyncerDrain measures how fast one syncer persists a backlog of orders into
// the embedded FerretDB: b.N orders are placed first, then drained.
func BenchmarkSyncerDrain(b *testing.B) {
	e := newEnv(b)
	e.product(b, "A", int64(b.N)+1)
	for i := range b.N {
		if _, err := e.inv.Checkout(context.Background(), engine.CheckoutRequest{UserID: fmt.Sprint("u", i%50),
			OrderID: engine.NewID(), Lines: []engine.Line{{SKU: "A", Quantity: 1}}}); err != nil {
			b.Fatal(err)
		}
	}
	sy := e.syncer(e.st, "bench", stocksync.SyncerOptions{})
	b.ResetTimer()
	start := time.Now()
	stop := run(b, sy)
	waitSynced(b, sy)
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "orders/s")
}

// BenchmarkSyncerLagUnderLoad places orders at a steady rate (2,000/s, a busy shop) for
// a few seconds while one syncer runs, and reports the largest lag seen and how long
// the syncer needed after the load stopped.
func BenchmarkSyncerLagUnderLoad(b *testing.B) {
	const rate, seconds = 2000, 3
	for range b.N {
		e := newEnv(b)
		e.product(b, "A", rate*seconds+1)
		sy := e.syncer(e.st, "bench", stocksync.SyncerOptions{})
		stop := run(b, sy)
		ctx := context.Background()
		var maxLag int64
		tick := time.NewTicker(time.Second / 100)
		start := time.Now()
		for placed := 0; placed < rate*seconds; {
			<-tick.C
			due := int(time.Since(start).Seconds()*rate) - placed
			for range due {
				if _, err := e.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: engine.NewID(),
					Lines: []engine.Line{{SKU: "A", Quantity: 1}}}); err != nil {
					b.Fatal(err)
				}
			}
			placed += due
			if lag, err := sy.Lag(ctx); err == nil {
				maxLag = max(maxLag, lag.Total())
			}
		}
		tick.Stop()
		loadEnd := time.Now()
		waitSynced(b, sy)
		b.ReportMetric(float64(maxLag), "max-lag-entries")
		b.ReportMetric(float64(time.Since(loadEnd).Milliseconds()), "catch-up-ms")
		stop()
	}
}
