package sync_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	stocksync "github.com/flashstock/flashstock/sync"
)

// Trim deletes acknowledged entries only: entries pending with a (crashed) syncer and
// entries no syncer has read yet stay.
func TestTrimDeletesOnlyAcknowledgedEntries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 1000)
	e.buy(t, 30, "A")
	sy := e.syncer(e.st, "s", stocksync.SyncerOptions{})
	stop := run(t, sy)
	waitSynced(t, sy)
	stop()

	// 10 entries delivered to a syncer that dies before acknowledging them.
	e.buy(t, 10, "A")
	var opts stocksync.SyncerOptions
	opts.Batch = 10
	var once sync.Once
	crashed := make(chan struct{})
	var stopCrash func()
	stocksync.SetBeforeAck(&opts, func() bool {
		once.Do(func() { go stopCrash(); close(crashed) })
		return false
	})
	stopCrash = run(t, e.syncer(e.st, "crash", opts))
	<-crashed
	stopCrash()
	// 5 entries nobody has read.
	e.buy(t, 5, "A")

	before, _ := e.rdb.XLen(ctx, e.inv.OutboxKey()).Result()
	n, err := sy.Trim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := e.rdb.XLen(ctx, e.inv.OutboxKey()).Result()
	// 1 creation + 30 orders were acknowledged: all of them go.
	if n != 31 || after != before-31 || after != 15 {
		t.Fatalf("trim deleted %d (len %d → %d), want 31 deleted and 15 left", n, before, after)
	}
	lag, err := sy.Lag(ctx)
	if err != nil || lag.Pending != 10 || lag.Undelivered != 5 {
		t.Fatalf("lag after trim: %+v, %v; want 10 pending, 5 undelivered", lag, err)
	}
	// Everything left still reaches MongoDB.
	b := e.syncer(e.st, "b", stocksync.SyncerOptions{ClaimIdle: 50 * time.Millisecond})
	run(t, b)
	waitSynced(t, b)
	if n, _ := e.st.CountOrders(ctx, ""); n != 45 {
		t.Fatalf("orders in MongoDB: %d, want 45", n)
	}
}

func TestSnapshotStoresEachVersionOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	e.product(t, "B", 20)
	e.buy(t, 3, "A")
	at := time.Now()
	for range 2 {
		if err := stocksync.Snapshot(ctx, e.inv, e.st, at); err != nil {
			t.Fatal(err)
		}
	}
	snaps, err := e.st.Snapshots(ctx, "A")
	if err != nil || len(snaps) != 1 || snaps[0].Available != 7 || snaps[0].Sold != 3 || snaps[0].Version != 4 {
		t.Fatalf("A snapshots: %+v, %v", snaps, err)
	}
	e.buy(t, 1, "A")
	if err := stocksync.Snapshot(ctx, e.inv, e.st, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	snaps, _ = e.st.Snapshots(ctx, "A")
	if len(snaps) != 2 || snaps[0].Available != 6 {
		t.Fatalf("A snapshots after a sale: %+v", snaps)
	}
	// B did not move: its version is the same, so it is not stored again.
	if snaps, _ := e.st.Snapshots(ctx, "B"); len(snaps) != 1 || snaps[0].Available != 20 {
		t.Fatalf("B snapshots: %+v", snaps)
	}
}

// A checkout's order record has no TTL until MongoDB has the order; then it gets the
// record TTL, so neither it nor its idempotency key can expire before it is durable.
func TestOrderRecordsExpireOnlyOnceDurable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	ids := e.buy(t, 3, "A")
	// An order made by committing a hold is held to the same rule.
	h, err := e.inv.Reserve(ctx, engine.ReserveRequest{UserID: "u", HoldID: engine.NewID(), TTL: time.Hour,
		Lines: []engine.Line{{SKU: "A", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	committed, err := e.inv.Commit(ctx, engine.CommitRequest{HoldID: h.ID, OrderID: engine.NewID()})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{ids[0], committed.ID} {
		if ttl, err := e.rdb.TTL(ctx, "fs:{0}:o:"+id).Result(); err != nil || ttl != -1 {
			t.Fatalf("order %s: TTL before the order is persisted: %v, %v; want none (-1)", id, ttl, err)
		}
	}
	sy := e.started(t, "s")
	waitSynced(t, sy)
	for _, id := range []string{ids[0], committed.ID} {
		ttl, err := e.rdb.TTL(ctx, "fs:{0}:o:"+id).Result()
		if err != nil || ttl < 6*24*time.Hour || ttl > 7*24*time.Hour {
			t.Fatalf("order %s: TTL after the order is persisted: %v, %v; want about 7 days", id, ttl, err)
		}
	}
}

// An entry the syncer cannot decode is parked in the dead-letter stream and
// acknowledged; the entries around it are persisted as usual.
func TestUndecodableEntryGoesToTheDeadLetterStream(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 10)
	e.buy(t, 2, "A")
	if err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: e.inv.OutboxKey(), Values: []any{"0", "order\nnot enough fields"}}).Err(); err != nil {
		t.Fatal(err)
	}
	ids := e.buy(t, 2, "A")
	sy := e.started(t, "s")
	waitSynced(t, sy)
	dead, err := e.rdb.XRange(ctx, e.inv.DeadLetterKey(), "-", "+").Result()
	if err != nil || len(dead) != 1 || dead[0].Values["0"] != "order\nnot enough fields" {
		t.Fatalf("dead letters: %+v, %v", dead, err)
	}
	if n, _ := e.st.CountOrders(ctx, ""); n != 4 {
		t.Fatalf("orders: %d, want 4", n)
	}
	if _, err := e.st.Order(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
}

// Trim keeps what a group named in TrimBehind (the webhook feeder's) has not taken, and
// does not wait for a group it is not told about.
func TestTrimWaitsForTheGroupsItIsTold(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.product(t, "A", 1000)
	if err := e.rdb.XGroupCreateMkStream(ctx, e.inv.OutboxKey(), stocksync.WebhookGroup, "$").Err(); err != nil {
		t.Fatal(err)
	}
	e.buy(t, 20, "A") // the webhook group has read none of these
	sy := e.syncer(e.st, "s", stocksync.SyncerOptions{TrimBehind: []string{stocksync.WebhookGroup}})
	stop := run(t, sy)
	waitSynced(t, sy)
	stop()
	if n, err := sy.Trim(ctx); err != nil || n != 0 {
		t.Fatalf("trim behind the webhook group: deleted %d, %v; want none (the group has read none)", n, err)
	}
	alone := e.syncer(e.st, "s", stocksync.SyncerOptions{})
	if n, err := alone.Trim(ctx); err != nil || n != 20 {
		t.Fatalf("trim not told about the webhook group: deleted %d, %v; want the 20 the syncer has", n, err)
	}
}
