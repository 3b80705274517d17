package sync_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/internal/testproxy"
	"github.com/flashstock/flashstock/internal/testredis"
	"github.com/flashstock/flashstock/store"
	stocksync "github.com/flashstock/flashstock/sync"
)

func TestMain(m *testing.M) {
	if os.Getenv(workerChildEnv) != "" {
		os.Exit(runWorkerChild()) // a webhook worker process a test kills (webhooks_kill_test.go)
	}
	os.Exit(testmongo.Main(m))
}

type env struct {
	srv *testredis.Server
	rdb *redis.Client
	inv *engine.Redis
	st  *store.Store
}

func newEnv(t testing.TB, redisArgs ...string) *env {
	t.Helper()
	if len(redisArgs) == 0 {
		redisArgs = []string{"--save", "", "--appendonly", "no"}
	}
	srv, rdb := testredis.StartWith(t, redisArgs...)
	inv := engine.NewRedis(rdb, engine.Options{})
	t.Cleanup(inv.Close)
	st := store.New(testmongo.Database(t))
	if err := st.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, rdb: rdb, inv: inv, st: st}
}

// storeBehindProxy returns a store on the same database reached through a proxy that
// the test can cut.
func (e *env) storeBehindProxy(t *testing.T) (*store.Store, *testproxy.Proxy) {
	t.Helper()
	uri := testmongo.URI(t)
	host := strings.TrimSuffix(strings.TrimPrefix(uri, "mongodb://"), "/")
	p := testproxy.Start(t, host)
	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI("mongodb://"+p.Addr+"/").
		SetServerSelectionTimeout(300*time.Millisecond).SetConnectTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return store.New(c.Database(e.st.Database().Name())), p
}

func (e *env) product(t testing.TB, sku string, stock int64) {
	t.Helper()
	ctx := context.Background()
	p := store.Product{SKU: sku, Name: sku, Price: 100, Currency: "USD"}
	if err := e.st.PutProduct(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := e.inv.CreateProduct(ctx, p.EngineProduct(stock)); err != nil {
		t.Fatal(err)
	}
}

func (e *env) buy(t *testing.T, n int, sku string) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for i := range n {
		o, err := e.inv.Checkout(context.Background(), engine.CheckoutRequest{UserID: fmt.Sprint("u", i%7),
			OrderID: engine.NewID(), Lines: []engine.Line{{SKU: sku, Quantity: 1}}})
		if err != nil {
			t.Fatalf("checkout %d: %v", i, err)
		}
		ids = append(ids, o.ID)
	}
	return ids
}

func (e *env) syncer(st *store.Store, name string, opts stocksync.SyncerOptions) *stocksync.Syncer {
	opts.Consumer = name
	if opts.Block == 0 {
		opts.Block = 50 * time.Millisecond
	}
	return stocksync.NewSyncer(e.inv, st, opts)
}

// started makes a syncer of e's outbox into e's store and runs it until the test ends.
func (e *env) started(t testing.TB, name string) *stocksync.Syncer {
	sy := e.syncer(e.st, name, stocksync.SyncerOptions{})
	run(t, sy)
	return sy
}

// run starts sy until the test ends (or stop is called) and returns stop, which waits.
func run(t testing.TB, sy *stocksync.Syncer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := sy.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// waitSynced waits until no outbox entry is left unpersisted.
func waitSynced(t testing.TB, sy *stocksync.Syncer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		lag, err := sy.Lag(context.Background())
		if err == nil && lag.Total() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("syncer did not catch up: lag %+v, %v", lag, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantOrders checks every id is in MongoDB and the collection holds no other order.
func (e *env) wantOrders(t *testing.T, ids []string) {
	t.Helper()
	ctx := context.Background()
	n, err := e.st.CountOrders(ctx, "")
	if err != nil || n != int64(len(ids)) {
		t.Fatalf("orders in MongoDB: got %d, %v; want %d", n, err, len(ids))
	}
	for _, id := range ids {
		if _, err := e.st.Order(ctx, id); err != nil {
			t.Fatalf("order %s: %v", id, err)
		}
	}
}

// wantFoldMatches checks MongoDB's fold of the ledger equals the live levels.
func (e *env) wantFoldMatches(t *testing.T, sku string) {
	t.Helper()
	ctx := context.Background()
	lv, err := e.inv.Levels(ctx, []string{sku})
	if err != nil {
		t.Fatal(err)
	}
	f, err := e.st.FoldAt(ctx, sku, lv[0].Version)
	if err != nil {
		t.Fatal(err)
	}
	if f.Available != lv[0].Available || f.Reserved != lv[0].Reserved || f.Sold != lv[0].Sold {
		t.Fatalf("%s: ledger folds to %+v, live %+v", sku, f, lv[0])
	}
}
