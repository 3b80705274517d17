package sync_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	stocksync "github.com/flashstock/flashstock/sync"
)

// An undecodable entry is acknowledged only once it is parked in the dead-letter
// stream: while parking fails, it stays pending; once parking works, it is parked and
// acknowledged.
func TestUndecodableEntryAckedOnlyOnceParked(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dead := e.inv.DeadLetterKey()
	if err := e.rdb.Set(ctx, dead, "not a stream", 0).Err(); err != nil { // XADD to it fails
		t.Fatal(err)
	}
	id, err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: e.inv.OutboxKey(), Values: map[string]any{"0": "garbage"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	sy := e.syncer(e.st, "s", stocksync.SyncerOptions{MaxBackoff: 50 * time.Millisecond})
	run(t, sy)
	deadline := time.Now().Add(time.Minute)
	for sy.DeadLetterFailures() < 2 { // tried, and tried again
		if time.Now().After(deadline) {
			t.Fatal("the syncer never tried to park the entry")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p, err := e.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: e.inv.OutboxKey(), Group: stocksync.Group,
		Start: "-", End: "+", Count: 10}).Result()
	if err != nil || len(p) != 1 || p[0].ID != id {
		t.Fatalf("pending while parking fails: got %+v, %v; want entry %s unacknowledged", p, err, id)
	}
	if sy.Persisted() != 0 {
		t.Fatalf("acknowledged %d entries while parking failed", sy.Persisted())
	}

	if err := e.rdb.Del(ctx, dead).Err(); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, sy)
	parked, err := e.rdb.XRange(ctx, dead, "-", "+").Result()
	if err != nil || len(parked) != 1 || parked[0].Values["0"] != "garbage" {
		t.Fatalf("dead-letter stream: got %+v, %v; want the entry once", parked, err)
	}
	if sy.Persisted() != 1 {
		t.Fatalf("acknowledged %d entries, want 1", sy.Persisted())
	}
}
