package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/api/codes"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/store"
	stocksync "github.com/flashstock/flashstock/sync"
	"github.com/flashstock/flashstock/webhook"
)

// The live view (GET /api/v1/admin/live) is for people watching a sale, not a delivery
// channel: the hub reads the outbox with plain XREAD (no consumer group) from its end
// when the first viewer connects, so events written while no process reads (a
// restart) are not shown; webhooks and the syncer have consumer groups for that.
const (
	livePath = "/api/v1/admin/live"
	// liveBuffer is how many messages a subscriber may fall behind; one that falls
	// further is dropped (its stream ends) rather than holding up the others.
	liveBuffer = 256
	// liveCatalogEvery is how many snapshots reuse the catalog (SKUs and names) before
	// it is read again from MongoDB.
	liveCatalogEvery = 5
	liveMaxSKUs      = 1000
)

var errShuttingDown = problem(http.StatusServiceUnavailable, codes.Unavailable, "the server is shutting down")

// liveCounters are the checkout outcomes this process saw, for the snapshot's rates.
type liveCounters struct {
	checkouts, refusals atomic.Int64
}

// count records one checkout operation's outcome ("ok" or a problem code).
func (lc *liveCounters) count(outcome string) {
	switch outcome {
	case "ok":
		lc.checkouts.Add(1)
	case codes.OutOfStock, codes.InsufficientStock, codes.PurchaseLimitExceeded,
		codes.SaleNotActive, codes.RateLimited:
		lc.refusals.Add(1)
	}
}

// liveMsg is one SSE event, already encoded.
type liveMsg struct {
	event, id string
	data      []byte
}

type liveSub struct {
	ch      chan liveMsg
	dropped chan struct{} // closed when the hub gives up on this subscriber
}

type liveSKU struct {
	SKU       string `json:"sku"`
	Name      string `json:"name"`
	Available int64  `json:"available"`
	Reserved  int64  `json:"reserved"`
	Sold      int64  `json:"sold"`
	// Waiting is how many buyers wait in the SKU's waiting room; absent without a room.
	Waiting *int64 `json:"waiting,omitempty"`
}

type liveSnapshot struct {
	At                 time.Time `json:"at"`
	SKUs               []liveSKU `json:"skus"`
	CheckoutsPerSecond float64   `json:"checkoutsPerSecond"`
	RefusalsPerSecond  float64   `json:"refusalsPerSecond"`
	// SyncLag is how many outbox entries MongoDB is behind; null when unknown.
	SyncLag *int64 `json:"syncLag"`
}

// liveHub is one per process (per app): it reads the outbox and builds snapshots once,
// for every connection. It starts with the first subscriber and stops when the app
// shuts down.
type liveHub struct {
	lowStock int64 // the threshold of inventory.low_stock
	inv      *engine.Redis
	store    *store.Store
	lag      func(context.Context) (int64, error)
	counters *liveCounters
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	subs    map[*liveSub]struct{}
	last    *liveMsg // the latest snapshot, sent to a new subscriber at once
	started bool
	stopped bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{} // closed by stop
}

func newLiveHub(inv *engine.Redis, st *store.Store, lag func(context.Context) (int64, error),
	counters *liveCounters, log *slog.Logger, now func() time.Time) *liveHub {
	return &liveHub{inv: inv, store: st, lag: lag, counters: counters, log: log.With("component", "live"),
		now: now, subs: map[*liveSub]struct{}{}, done: make(chan struct{})}
}

// subscribe adds a subscriber, starting the hub if it is the first ever (ctx bounds
// only that start). Errors: errShuttingDown once the hub has stopped; Redis errors.
func (h *liveHub) subscribe(ctx context.Context) (*liveSub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return nil, errShuttingDown
	}
	if !h.started {
		// The outbox is read from its end as it is now, so that every event written
		// after this first subscriber is in is shown to it.
		// One reader per partition's stream (a cluster refuses one XREAD across slots).
		streams := h.inv.OutboxKeys()
		from := make([]string, len(streams))
		for i, stream := range streams {
			var err error
			if from[i], err = h.outboxEnd(ctx, stream); err != nil {
				return nil, err
			}
		}
		h.started = true
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		h.cancel = cancel
		h.wg.Add(1 + len(streams))
		for i, stream := range streams {
			go func() { defer h.wg.Done(); h.readOutbox(ctx, stream, from[i]) }()
		}
		go func() { defer h.wg.Done(); h.snapshots(ctx) }()
	}
	sub := &liveSub{ch: make(chan liveMsg, liveBuffer), dropped: make(chan struct{})}
	if h.last != nil {
		sub.ch <- *h.last
	}
	h.subs[sub] = struct{}{}
	return sub, nil
}

// outboxEnd is the id of an outbox stream's last entry, "0-0" when it has none.
func (h *liveHub) outboxEnd(ctx context.Context, stream string) (string, error) {
	last, err := h.inv.Client().XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil {
		return "", redisReadErr(err)
	}
	if len(last) == 0 {
		return "0-0", nil
	}
	return last[0].ID, nil
}

func (h *liveHub) unsubscribe(sub *liveSub) {
	h.mu.Lock()
	delete(h.subs, sub)
	h.mu.Unlock()
}

// publish hands m to every subscriber without waiting: one whose buffer is full is
// dropped.
func (h *liveHub) publish(m liveMsg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m.event == "snapshot" {
		h.last = &m
	}
	for sub := range h.subs {
		select {
		case sub.ch <- m:
		default:
			delete(h.subs, sub)
			close(sub.dropped)
		}
	}
}

func (h *liveHub) watched() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

// stop ends the hub's jobs and every stream; it is the app's shutdown hook.
func (h *liveHub) stop() error {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return nil
	}
	h.stopped = true
	close(h.done)
	if h.cancel != nil {
		h.cancel()
	}
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

// readOutbox fans out the webhook events of new outbox entries until ctx ends.
func (h *liveHub) readOutbox(ctx context.Context, stream, last string) {
	rdb := h.inv.Client()
	for ctx.Err() == nil {
		res, err := rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, last}, Count: 500, Block: time.Second}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("read outbox", "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		for _, st := range res {
			for _, m := range st.Messages {
				last = m.ID
				h.fanOut(ctx, m)
			}
		}
	}
}

func (h *liveHub) fanOut(ctx context.Context, m redis.XMessage) {
	evs, err := engine.DecodeEntry(m.ID, m.Values)
	if err != nil {
		return // the syncer parks it in the dead-letter stream
	}
	for _, e := range evs {
		if e.Kind == engine.EventCancel && !h.watched() {
			continue // spare the order lookup nobody would see
		}
		for _, we := range webhook.Derive(stocksync.WebhookSource(ctx, h.inv, e), h.lowStock) {
			body, err := we.Body()
			if err != nil {
				h.log.Warn("encode live event", "type", we.Type, "err", err)
				continue
			}
			h.publish(liveMsg{event: we.Type, id: we.ID, data: body})
		}
	}
}

// snapshots publishes a snapshot every second while anyone watches.
func (h *liveHub) snapshots(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var catalog []store.Product
	tick := 0
	lastAt := h.now()
	lastCheckouts, lastRefusals := h.counters.checkouts.Load(), h.counters.refusals.Load()
	for {
		if h.watched() {
			if tick%liveCatalogEvery == 0 || catalog == nil {
				if c, err := h.readCatalog(ctx); err == nil {
					catalog = c
				} else if ctx.Err() == nil {
					h.log.Warn("live: read the catalog", "err", err)
				}
			}
			tick++
			now := h.now()
			secs := now.Sub(lastAt).Seconds()
			co, re := h.counters.checkouts.Load(), h.counters.refusals.Load()
			snap := liveSnapshot{At: now.UTC(), SKUs: []liveSKU{}}
			if secs > 0 {
				snap.CheckoutsPerSecond = float64(co-lastCheckouts) / secs
				snap.RefusalsPerSecond = float64(re-lastRefusals) / secs
			}
			lastAt, lastCheckouts, lastRefusals = now, co, re
			if err := h.fill(ctx, &snap, catalog); err != nil && ctx.Err() == nil {
				h.log.Warn("live: read levels", "err", err)
			}
			if b, err := json.Marshal(snap); err == nil {
				h.publish(liveMsg{event: "snapshot", data: b})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *liveHub) readCatalog(ctx context.Context) ([]store.Product, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var out []store.Product
	after := ""
	for len(out) < liveMaxSKUs {
		page, err := h.store.Products(ctx, after, 200)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < 200 {
			break
		}
		after = page[len(page)-1].SKU
	}
	return out, nil
}

// fill adds the catalog's levels and the sync lag to snap.
func (h *liveHub) fill(ctx context.Context, snap *liveSnapshot, catalog []store.Product) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if h.lag != nil {
		if n, err := h.lag(ctx); err == nil {
			snap.SyncLag = &n
		}
	}
	skus := make([]string, len(catalog))
	for i, p := range catalog {
		skus[i] = p.SKU
	}
	levels, err := h.inv.Lookup(ctx, skus)
	if err != nil {
		return err
	}
	var rooms []string
	for _, p := range catalog {
		if p.WaitingRoom != nil && p.WaitingRoom.Enabled {
			rooms = append(rooms, p.SKU)
		}
	}
	waiting := map[string]int64{}
	if len(rooms) > 0 {
		if waiting, err = h.inv.QueueLengths(ctx, rooms); err != nil {
			return err
		}
	}
	for _, p := range catalog {
		if lv, ok := levels[p.SKU]; ok {
			s := liveSKU{SKU: p.SKU, Name: p.Name, Available: lv.Available, Reserved: lv.Reserved, Sold: lv.Sold}
			if p.WaitingRoom != nil && p.WaitingRoom.Enabled {
				n := waiting[p.SKU]
				s.Waiting = &n
			}
			snap.SKUs = append(snap.SKUs, s)
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// streamLive streams the hub's events as server-sent events until the client goes away, the
// hub drops it (too slow) or the app shuts down.
func (s *server) streamLive(c *fiber.Ctx) error {
	sub, err := s.hub.subscribe(c.UserContext())
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	fctx := c.Context()
	shutdown, conn, timeout := fctx.Done(), fctx.Conn(), writeTimeout
	fctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.hub.unsubscribe(sub)
		// The server's write timeout bounds one write, not the whole stream.
		extend := func() {
			if conn != nil && timeout > 0 {
				_ = conn.SetWriteDeadline(time.Now().Add(timeout))
			}
		}
		extend()
		if _, err := w.WriteString(": flashstock live view\n\n"); err != nil || w.Flush() != nil {
			return
		}
		for {
			select {
			case m := <-sub.ch:
				extend()
				if writeEvent(w, m) != nil {
					return
				}
			case <-sub.dropped:
				return
			case <-s.hub.done:
				return
			case <-shutdown:
				return
			}
		}
	})
	return nil
}

func writeEvent(w *bufio.Writer, m liveMsg) error {
	_, _ = w.WriteString("event: " + m.event + "\n")
	if m.id != "" {
		_, _ = w.WriteString("id: " + m.id + "\n")
	}
	_, _ = w.WriteString("data: ")
	_, _ = w.Write(m.data) // JSON without newlines
	if _, err := w.WriteString("\n\n"); err != nil {
		return err
	}
	return w.Flush()
}
