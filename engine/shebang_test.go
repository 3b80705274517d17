package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/rediscluster"
	"github.com/flashstock/flashstock/internal/testcluster"
)

// TestClusterRunsShebangScripts: on a cluster the engine sends the "#!lua" variant of
// its scripts (the server then refuses undeclared keys), never the plain one; the plain
// one stays for one Redis and miniredis, which cannot compile a shebang.
func TestClusterRunsShebangScripts(t *testing.T) {
	ctx := context.Background()
	c := testcluster.Start(t, rediscluster.Options{})
	rdb := c.Client()
	inv := engine.NewRedis(rdb, engine.Options{Partitions: 2})
	t.Cleanup(inv.Close)
	mustCreate(t, inv, engine.Product{SKU: "SB", Price: 1, Stock: 3})
	if _, err := inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", OrderID: engine.NewID(),
		Lines: []engine.Line{{SKU: "SB", Quantity: 1}}}); err != nil {
		t.Fatal(err)
	}
	key := inv.PartitionKeys(mustPartition(t, inv, "SB")).Stock("SB")
	node, err := rdb.MasterForKey(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	shebang, plain := engine.ScriptHashes()
	have, err := node.ScriptExists(ctx, shebang, plain).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !have[0] || have[1] {
		t.Fatalf("take.lua on the master: shebang variant %v, plain %v; want only the shebang variant", have[0], have[1])
	}
	// What the shebang buys: a key not in KEYS is refused by the server.
	bad := redis.NewScript("#!lua\nreturn redis.call('GET', 'fs:{elsewhere}:x')")
	if err := bad.Run(ctx, node, []string{key}).Err(); err == nil || !strings.Contains(err.Error(), "Script attempted to access") {
		t.Fatalf("an undeclared key under a shebang: got %v, want a refusal", err)
	}
}
