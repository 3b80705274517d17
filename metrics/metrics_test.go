package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

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
