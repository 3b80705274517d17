package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testredis"
)

// eachBackend runs fn on miniredis and on a real redis-server: the real server is the
// judge of script behaviour, miniredis is what the embedded mode runs.
func eachBackend(t *testing.T, fn func(t *testing.T, inv *engine.Redis)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		_, inv := miniInventory(t)
		fn(t, inv)
	})
	t.Run("redis-server", func(t *testing.T) {
		_, c := testredis.Start(t)
		inv := engine.NewRedis(c, engine.Options{})
		t.Cleanup(inv.Close)
		fn(t, inv)
	})
}

// miniInventory is an inventory on a miniredis of its own (whose clock tests may set).
func miniInventory(t *testing.T) (*miniredis.Miniredis, *engine.Redis) {
	t.Helper()
	m := miniredis.RunT(t)
	c := redis.NewClient(engine.NoRetries(&redis.Options{Addr: m.Addr()}))
	t.Cleanup(func() { c.Close() })
	inv := engine.NewRedis(c, engine.Options{})
	t.Cleanup(inv.Close)
	return m, inv
}

func realRedis(t *testing.T) *engine.Redis {
	t.Helper()
	_, c := testredis.Start(t)
	inv := engine.NewRedis(c, engine.Options{})
	t.Cleanup(inv.Close)
	return inv
}

func mustCreate(tb testing.TB, inv *engine.Redis, p engine.Product) {
	tb.Helper()
	if p.Currency == "" {
		p.Currency = "USD"
	}
	if _, err := inv.CreateProduct(context.Background(), p); err != nil {
		tb.Fatalf("create %s: %v", p.SKU, err)
	}
}

func mustLevel(tb testing.TB, inv *engine.Redis, sku string) engine.Level {
	tb.Helper()
	lv, err := inv.Levels(context.Background(), []string{sku})
	if err != nil {
		tb.Fatalf("levels %s: %v", sku, err)
	}
	return lv[0]
}

func wantLevel(tb testing.TB, inv *engine.Redis, sku string, a, r, s int64) {
	tb.Helper()
	lv := mustLevel(tb, inv, sku)
	if lv.Available != a || lv.Reserved != r || lv.Sold != s {
		tb.Fatalf("%s levels: got available %d reserved %d sold %d, want %d %d %d",
			sku, lv.Available, lv.Reserved, lv.Sold, a, r, s)
	}
}

func wantErr(tb testing.TB, err, want error) {
	tb.Helper()
	if !errors.Is(err, want) {
		tb.Fatalf("got error %v, want %v", err, want)
	}
}

// events reads and decodes the whole outbox, every partition's.
func events(tb testing.TB, inv *engine.Redis) []engine.Event {
	tb.Helper()
	var out []engine.Event
	for _, evs := range partitionEvents(tb, inv) {
		out = append(out, evs...)
	}
	return out
}

// partitionEvents reads and decodes each partition's outbox stream, by partition.
func partitionEvents(tb testing.TB, inv *engine.Redis) [][]engine.Event {
	tb.Helper()
	var out [][]engine.Event
	for _, key := range inv.OutboxKeys() { // each SKU's movements are in its partition's stream
		msgs, err := inv.Client().XRange(context.Background(), key, "-", "+").Result()
		if err != nil {
			tb.Fatalf("read outbox: %v", err)
		}
		var evs []engine.Event
		for _, m := range msgs {
			e, err := engine.DecodeEntry(m.ID, m.Values)
			if err != nil {
				tb.Fatal(err)
			}
			evs = append(evs, e...)
		}
		out = append(out, evs)
	}
	return out
}

// checkLedger folds the outbox per SKU and checks it explains the live levels exactly:
// sequence numbers run 1..version with no gap or repeat, and the summed deltas equal
// the levels. It returns the events it read.
func checkLedger(tb testing.TB, inv *engine.Redis) []engine.Event {
	tb.Helper()
	evs := events(tb, inv)
	type fold struct{ a, r, s, seq int64 }
	folds := map[string]*fold{}
	for _, e := range evs {
		for _, m := range e.Movements {
			f := folds[m.SKU]
			if f == nil {
				f = &fold{}
				folds[m.SKU] = f
			}
			if m.Seq != f.seq+1 {
				tb.Fatalf("%s: movement seq %d follows %d", m.SKU, m.Seq, f.seq)
			}
			f.seq, f.a, f.r, f.s = m.Seq, f.a+m.Available, f.r+m.Reserved, f.s+m.Sold
			// Every movement carries the levels after it (the entry's field L), and
			// they are the ledger's.
			if !m.HasAfter || m.After.Available != f.a || m.After.Reserved != f.r || m.After.Sold != f.s || m.After.Version != f.seq {
				tb.Fatalf("%s seq %d: levels carried %+v (%v), ledger folds to %+v", m.SKU, m.Seq, m.After, m.HasAfter, *f)
			}
		}
	}
	skus, err := inv.SKUs(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	for _, sku := range skus {
		lv, f := mustLevel(tb, inv, sku), folds[sku]
		if f == nil || lv.Available != f.a || lv.Reserved != f.r || lv.Sold != f.s || lv.Version != f.seq {
			tb.Fatalf("%s: live %+v, ledger folds to %+v", sku, lv, f)
		}
		if lv.Available < 0 || lv.Reserved < 0 || lv.Sold < 0 {
			tb.Fatalf("%s: negative level %+v", sku, lv)
		}
	}
	return evs
}

func outboxLen(tb testing.TB, inv *engine.Redis) int64 {
	tb.Helper()
	n, err := inv.Client().XLen(context.Background(), inv.OutboxKey()).Result()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
