package metrics_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testredis"
	"github.com/flashstock/flashstock/metrics"
)

func TestStateGaugesAreReadAtScrapeTime(t *testing.T) {
	srv, rdb := testredis.StartWith(t, "--save", "", "--appendonly", "no", "--maxmemory", "64mb")
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	ctx := context.Background()
	for sku, stock := range map[string]int64{"A": 3, "B": 50} {
		if _, err := inv.CreateProduct(ctx, engine.Product{SKU: sku, Stock: stock, Price: 1, Currency: "USD"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: "h", TTL: time.Minute,
		Lines: []engine.Line{{SKU: "B", Quantity: 1}}}); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	m.RegisterState(metrics.State{Levels: inv.AvailableAll, ActiveHolds: inv.ActiveHolds,
		RedisMemory: metrics.RedisMemoryFrom(rdb), LowStock: 5})

	want := `
# HELP flashstock_stock_available Available units by SKU.
# TYPE flashstock_stock_available gauge
flashstock_stock_available{sku="A"} 3
flashstock_stock_available{sku="B"} 49
# HELP flashstock_stock_low 1 when a SKU's available units are at or below the low-stock threshold.
# TYPE flashstock_stock_low gauge
flashstock_stock_low{sku="A"} 1
flashstock_stock_low{sku="B"} 0
# HELP flashstock_holds_active Holds not yet committed, released or expired.
# TYPE flashstock_holds_active gauge
flashstock_holds_active 1
# HELP flashstock_redis_memory_max_bytes Redis maxmemory (0 = unlimited).
# TYPE flashstock_redis_memory_max_bytes gauge
flashstock_redis_memory_max_bytes 6.7108864e+07
# HELP flashstock_state_scrape_ok 1 when the last scrape could read Redis.
# TYPE flashstock_state_scrape_ok gauge
flashstock_state_scrape_ok 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "flashstock_stock_available",
		"flashstock_stock_low", "flashstock_holds_active", "flashstock_redis_memory_max_bytes", "flashstock_state_scrape_ok"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(m.Registry, "flashstock_redis_memory_used_bytes"); err != nil || n != 1 {
		t.Fatalf("used memory series: %d, %v", n, err)
	}

	srv.Stop() // Redis gone: the scrape says so instead of failing
	want = `
# HELP flashstock_state_scrape_ok 1 when the last scrape could read Redis.
# TYPE flashstock_state_scrape_ok gauge
flashstock_state_scrape_ok 0
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "flashstock_state_scrape_ok"); err != nil {
		t.Fatal(err)
	}
}

// The stock gauges read every SKU: scrapes within LevelsEvery share one read, and a
// failed read is not retried by every scrape either.
func TestStockGaugesAreReadOncePerInterval(t *testing.T) {
	var calls atomic.Int64
	fail := false
	levels := func(context.Context) (map[string]int64, error) {
		calls.Add(1)
		if fail {
			return nil, errors.New("redis down")
		}
		return map[string]int64{"A": calls.Load(), "B": 9}, nil
	}
	now := time.Unix(1_000_000, 0)
	m := metrics.New()
	m.RegisterState(metrics.State{Levels: levels, LevelsEvery: 5 * time.Second, Now: func() time.Time { return now }, LowStock: 5})
	scrape := func(wantA string) {
		t.Helper()
		want := "# HELP flashstock_stock_available Available units by SKU.\n# TYPE flashstock_stock_available gauge\n" +
			`flashstock_stock_available{sku="A"} ` + wantA + "\n" + `flashstock_stock_available{sku="B"} 9` + "\n"
		if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "flashstock_stock_available"); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		scrape("1")
	}
	// Many scrapers at once: still no second read.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { _, _ = m.Registry.Gather() })
	}
	wg.Wait()
	if got := calls.Load(); got != 1 {
		t.Fatalf("28 scrapes within the interval read the levels %d times, want 1", got)
	}
	now = now.Add(5 * time.Second)
	scrape("2")
	scrape("2")
	if got := calls.Load(); got != 2 {
		t.Fatalf("after the interval: %d reads, want 2", got)
	}

	fail = true
	now = now.Add(6 * time.Second)
	for range 10 {
		if n, err := testutil.GatherAndCount(m.Registry, "flashstock_stock_available"); err != nil || n != 0 {
			t.Fatalf("while the read fails: %d series, %v", n, err)
		}
		if v := scrapeOK(t, m); v != 0 {
			t.Fatalf("flashstock_state_scrape_ok %v while the read fails, want 0", v)
		}
	}
	if got := calls.Load(); got != 3 {
		t.Fatalf("a failing read was tried %d times in one interval, want once (3 in all, got %d)", got-2, got)
	}
}

func scrapeOK(t *testing.T, m *metrics.Metrics) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "flashstock_state_scrape_ok" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no flashstock_state_scrape_ok")
	return -1
}

// The fault counters are exported as they stand in the process that counts them.
func TestFaultCountersAreExported(t *testing.T) {
	m := metrics.New()
	var conflicts, dead, rollbacks atomic.Int64
	m.RegisterState(metrics.State{SyncConflicts: conflicts.Load, DeadLetterFailures: dead.Load, Rollbacks: rollbacks.Load})
	conflicts.Add(3)
	rollbacks.Add(1)
	for name, want := range map[string]float64{"flashstock_sync_conflicts_total": 3,
		"flashstock_sync_dead_letter_failures_total": 0, "flashstock_redis_rollbacks_total": 1} {
		if got := testutil.ToFloat64(collectorOf(t, m, name)); got != want {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
}

// collectorOf gathers one metric family, as a collector testutil can read.
func collectorOf(t *testing.T, m *metrics.Metrics, name string) prometheus.Collector {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: "copy"})
			c.Add(mf.GetMetric()[0].GetCounter().GetValue())
			return c
		}
	}
	t.Fatalf("no %s", name)
	return nil
}

// The waiting-room gauge: buyers waiting per SKU with a room, read with the levels.
func TestQueueGaugeIsReadWithTheLevels(t *testing.T) {
	_, rdb := testredis.Start(t)
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	ctx := context.Background()
	later := time.Now().Add(time.Hour)
	if _, err := inv.CreateProduct(ctx, engine.Product{SKU: "DROP", Stock: 5, Price: 1, Currency: "USD", SaleStartsAt: &later,
		WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: 60}}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.CreateProduct(ctx, engine.Product{SKU: "PLAIN", Stock: 5, Price: 1, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"a", "b", "c"} {
		if _, err := inv.JoinQueue(ctx, "DROP", u); err != nil {
			t.Fatal(err)
		}
	}
	m := metrics.New()
	m.RegisterState(metrics.State{Levels: inv.AvailableAll, QueueLengths: func(ctx context.Context) (map[string]int64, error) {
		return inv.QueueLengths(ctx, []string{"DROP", "PLAIN"})
	}})
	want := `
# HELP flashstock_queue_waiting Buyers waiting in a SKU's waiting room.
# TYPE flashstock_queue_waiting gauge
flashstock_queue_waiting{sku="DROP"} 3
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "flashstock_queue_waiting"); err != nil {
		t.Fatal(err)
	}
}
