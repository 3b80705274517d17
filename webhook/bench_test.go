package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/webhook"
)

// BenchmarkDeliver measures the worker's throughput end to end on the test's MongoDB
// server (embedded FerretDB unless MONGODB_TEST_URI names one): b.N order events are
// enqueued for one fast receiver, and a running worker claims, signs, sends and records
// them all. Reported: deliveries/s.
func BenchmarkDeliver(b *testing.B) {
	clk := newClock()
	s := mustService(b, testmongo.Database(b), testConfig(b, clk))
	r := newReceiver(b, clk, nil)
	sub := mustSubscribe(b, s, r.URL())
	r.setSecret(sub.Secret)
	evs := orderEvents(clk, b.N)
	for i := 0; i < len(evs); i += 500 {
		mustEnqueue(b, s, evs[i:min(i+500, len(evs))]...)
	}
	m, err := webhook.NewMetrics(prometheus.NewRegistry(), s)
	if err != nil {
		b.Fatal(err)
	}
	w := webhook.NewWorker(s, webhook.WorkerConfig{PollEvery: 10 * time.Millisecond, MaxPerEndpoint: 16, Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	b.ResetTimer()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for int(testutil.ToFloat64(m.Delivered())) < b.N {
		time.Sleep(2 * time.Millisecond)
	}
	el := time.Since(start)
	cancel()
	<-done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "deliveries/s")
	if hits, _, bad := r.counts(); len(bad) > 0 || len(hits) != b.N {
		b.Fatalf("receiver: %d distinct events, %d refused; want %d and 0", len(hits), len(bad), b.N)
	}
}
