package engine

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Lane returns an inventory on the same Redis client, keys and settings as r, with a
// batcher of its own (workers batches in flight at most): its checkouts and
// reservations never queue behind r's, nor r's behind its. The flash-sale simulation
// runs on one, so that synthetic buyers cannot starve live ones of batch slots. The
// lane shares r's sold-out marks, if any.
//
// closeLane stops the lane's batcher once it has served what is queued; it closes
// nothing of r's. Call it when done, and do not call the lane's Close.
func (r *Redis) Lane(workers int) (lane *Redis, closeLane func()) {
	l := *r
	l.parts = make([]*partition, len(r.parts))
	for i, p := range r.parts {
		l.parts[i] = &partition{n: p.n, k: p.k, batch: newTakeBatcher(&l, p.k, max(1, workers)), xbatch: p.xbatch}
	}
	// The lane finds SKUs in r's partitions; its own, with their batchers, by number.
	l.dir = new(sync.Map)
	return &l, func() {
		for _, p := range l.parts {
			p.batch.close()
		}
	}
}

// ForgetBuyers removes users' per-user purchase counters of skus (the units each user
// took under a SKU's maxPerUser), for users who will never buy again, such as the
// simulation's synthetic buyers. A counter is only ever read while the SKU has a limit,
// so removing one changes no stock; an order of those users that is cancelled later
// gives its counted units back to a counter that starts again from zero.
func (r *Redis) ForgetBuyers(ctx context.Context, skus []string, users []string) error {
	// Only SKUs that have ever had a limit have counters: skip the others' HDELs.
	parts, err := r.partitionsOf(ctx, skus)
	if err != nil {
		return fmt.Errorf("forget buyers: %w", err)
	}
	exists := make([]*redis.IntCmd, len(skus))
	if _, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			exists[i] = p.Exists(ctx, parts[i].k.Bought(sku))
		}
		return nil
	}); err != nil {
		return readErr("forget buyers", err)
	}
	const chunk = 1000 // fields per HDEL
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sku := range skus {
			if exists[i].Val() == 0 {
				continue
			}
			for j := 0; j < len(users); j += chunk {
				p.HDel(ctx, parts[i].k.Bought(sku), users[j:min(j+chunk, len(users))]...)
			}
		}
		return nil
	})
	return writeErr("forget buyers", err)
}
