package sync

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/webhook"
)

// WebhookGroup is the consumer group the webhook feeder reads the outbox with: its own,
// so that its lag and the syncer's are separate and a slow receiver never holds up
// MongoDB's copy (the outbox is trimmed only behind every group).
const WebhookGroup = "flashstock-webhooks"

// Feeder turns outbox events into webhook events (package webhook) for the
// subscriptions that want them. An entry is acknowledged only once its events are
// enqueued (idempotently, by event id), so none is lost across crashes and a redelivery
// enqueues nothing twice. Events are derived from what the scripts recorded: an order's
// confirmation, a cancellation, a hold's expiry, and the crossings of a SKU's levels
// (low stock, sold out, back in stock), once per crossing.
type Feeder struct {
	inv      *engine.Redis
	svc      *webhook.Service
	log      *slog.Logger
	consumer string
	// Block is how long a read waits for new entries (default 1 s).
	Block time.Duration
	// LowStock is the available level at or below which inventory.low_stock fires
	// (LOW_STOCK_THRESHOLD); 0 leaves low_stock to sold_out.
	LowStock int64
}

// NewFeeder feeds svc from inv's outbox.
func NewFeeder(inv *engine.Redis, svc *webhook.Service, log *slog.Logger) *Feeder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	return &Feeder{inv: inv, svc: svc, log: log.With("component", "webhook-feeder"),
		consumer: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), engine.NewShortID()), Block: time.Second}
}

// Run feeds until ctx ends; a batch read is enqueued and acknowledged before it returns.
// The group starts at the outbox's end: turning webhooks on does not replay history.
// With several partitions each partition's stream has its own reader and group.
func (f *Feeder) Run(ctx context.Context) error {
	return runEach(ctx, f.inv.OutboxKeys(), func(ctx context.Context, stream string) error {
		g := &groupReader{rdb: f.inv.Client(), stream: stream, group: WebhookGroup, start: "$",
			consumer: f.consumer, batch: 100, block: f.Block, idle: 30 * time.Second, log: f.log.With("stream", stream)}
		return g.run(ctx, func(msgs []redis.XMessage) { f.feed(ctx, stream, msgs) })
	})
}

// feed enqueues one batch's events and acknowledges it, retrying with backoff while
// MongoDB fails; an entry that does not decode is left to the syncer's dead letters.
func (f *Feeder) feed(ctx context.Context, stream string, msgs []redis.XMessage) {
	var events []webhook.Event
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		ids = append(ids, m.ID)
		evs, err := engine.DecodeEntry(m.ID, m.Values)
		if err != nil {
			continue // the syncer parks it in the dead-letter stream
		}
		for _, e := range evs {
			events = append(events, webhook.Derive(WebhookSource(ctx, f.inv, e), f.LowStock)...)
		}
	}
	backoff := 100 * time.Millisecond
	for {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := f.svc.Enqueue(wctx, events)
		if err == nil {
			err = f.inv.Client().XAck(wctx, stream, WebhookGroup, ids...).Err()
		}
		cancel()
		if err == nil || ctx.Err() != nil {
			return // unacknowledged on shutdown: redelivered, enqueued again harmlessly
		}
		f.log.Warn("enqueue webhook events; retrying", "entries", len(msgs), "err", err)
		sleep(ctx, backoff)
		backoff = min(2*backoff, 5*time.Second)
	}
}

// WebhookSource is what webhook.Derive reads for one outbox event: the level change of
// each movement (from the levels the entry carries: no read that could race the
// scripts); for a cancellation, which carries no lines, the order from its record (read
// from inv); for an expiry, its items from its movements. The feeder and the live view
// share it.
func WebhookSource(ctx context.Context, inv *engine.Redis, e engine.Event) webhook.Source {
	src := webhook.Source{Event: e}
	for _, m := range e.Movements {
		if m.HasAfter {
			src.Changes = append(src.Changes, webhook.ChangeOf(m, m.After))
		}
	}
	switch e.Kind {
	case engine.EventCancel:
		if o, err := inv.Order(ctx, e.ID); err == nil {
			src.Order = &o
		}
	case engine.EventExpire:
		for _, m := range e.Movements {
			src.Event.Items = append(src.Event.Items, engine.Item{SKU: m.SKU, Quantity: -m.Reserved})
		}
	}
	return src
}
