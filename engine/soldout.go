package engine

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// soldOut is the optional local sold-out mark (Options.SoldOutFor, SOLDOUT_CACHE_MS).
//
// When a checkout or reservation is refused because a SKU has nothing left, the SKU is
// marked for SoldOutFor, and until then requests without an idempotency key that ask
// for it are refused here, without a Redis call. Requests with a key still go to Redis:
// one may be the retry of a checkout that succeeded, and must get its order back.
//
// A mark ends early when stock comes back. Every script that makes units available
// (cancel, release, expiry, adjust, set, repair, create, restore) publishes their SKUs on
// a Redis channel in the same atomic step, and every process with marks listens to it;
// the process that ran the operation also clears its own marks at once. So a refusal
// can lag returned stock by at most SoldOutFor (less whenever the message arrives
// first). With SoldOutFor 0, nothing is marked and every answer comes from Redis.
type soldOut struct {
	ttl   time.Duration
	mu    sync.RWMutex
	until map[string]int64 // unix nanoseconds
	// epoch counts the clears (stock came back somewhere). A refusal marks only if no
	// clear happened since its request was sent: a refusal that Redis decided before
	// units came back, answered after, must not mark the SKU again over the returned
	// units.
	epoch uint64
	// inflight counts this process's operations that may be returning units right now:
	// while one is, nothing is refused here and nothing is marked, so no refusal can
	// outrun a return this process is making (another process's returns reach here by
	// the restock channel, within SoldOutFor at worst).
	inflight int
	sub      *redis.PubSub
	done     chan struct{}
}

// restockChannel carries the SKUs whose stock has just come back, one SKU per message.
// The scripts receive it as their last KEYS entry (prelude.lua, restocked).

func newSoldOut(ctx context.Context, rdb redis.UniversalClient, channels []string, ttl time.Duration) *soldOut {
	s := &soldOut{ttl: ttl, until: map[string]int64{}, done: make(chan struct{})}
	s.sub = rdb.Subscribe(ctx, channels...)
	go func() {
		defer close(s.done)
		for msg := range s.sub.Channel() {
			s.clear([]string{msg.Payload})
		}
	}()
	return s
}

func (s *soldOut) close() {
	_ = s.sub.Close()
	<-s.done
}

// refuse returns the refusal for lines if one of their SKUs is marked.
func (s *soldOut) refuse(lines []Line) error {
	now := time.Now().UnixNano()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.until) == 0 || s.inflight > 0 {
		return nil
	}
	for _, l := range lines {
		if t, ok := s.until[l.SKU]; ok && now < t {
			return &StockError{Short: []Shortage{{SKU: l.SKU, Requested: l.Quantity, Available: 0}}}
		}
	}
	return nil
}

// now is the epoch to pass to mark for a request about to be sent.
func (s *soldOut) now() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.epoch
}

// mark records the SKUs a refusal found empty, unless stock came back somewhere since
// the refused request was sent (at epoch sent).
func (s *soldOut) mark(err error, sent uint64) {
	se, ok := err.(*StockError)
	if !ok {
		return
	}
	until := time.Now().Add(s.ttl).UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch != sent || s.inflight > 0 {
		return
	}
	for _, sh := range se.Short {
		if sh.Available <= 0 {
			s.until[sh.SKU] = until
		}
	}
}

func (s *soldOut) clear(skus []string) {
	s.mu.Lock()
	s.epoch++
	for _, sku := range skus {
		delete(s.until, sku)
	}
	s.mu.Unlock()
}

// restocking is called before an operation that may return units, and the function it
// returns after it (see soldOut.inflight).
func (r *Redis) restocking() func() {
	s := r.soldOut
	if s == nil {
		return func() {}
	}
	s.mu.Lock()
	s.inflight++
	s.epoch++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.inflight--
		s.epoch++
		s.mu.Unlock()
	}
}

// restocked clears this process's marks of skus at once, after an operation of its own
// returned units of them. The script that returned them has already published them on
// the restock channel for the other processes (prelude.lua, restocked).
func (r *Redis) restocked(skus ...string) {
	if r.soldOut != nil {
		r.soldOut.clear(skus)
	}
}

func itemSKUs(items []Item) []string {
	skus := make([]string, len(items))
	for i, it := range items {
		skus[i] = it.SKU
	}
	return skus
}
