package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// groupReader reads the outbox with a consumer group, for the syncer and the webhook
// feeder alike: this consumer's own pending entries first (delivered before a restart
// under the same name, never acknowledged), then, every claimIdle/2, the entries other
// consumers left unacknowledged for claimIdle (presumed dead), then new ones.
type groupReader struct {
	rdb      redis.UniversalClient
	stream   string
	group    string
	start    string // where a new group starts: "0" (everything) or "$" (from now on)
	consumer string
	batch    int
	block    time.Duration
	idle     time.Duration // claimIdle
	log      *slog.Logger

	lastClaim time.Time
}

// ensure creates the group (and the stream) if they do not exist.
func (g *groupReader) ensure(ctx context.Context) error {
	err := g.rdb.XGroupCreateMkStream(ctx, g.stream, g.group, g.start).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group %s: %w", g.group, err)
	}
	return nil
}

// run hands every batch read to handle until ctx ends. A read that fails is logged and
// tried again a second later; a group Redis lost with its data is created again.
func (g *groupReader) run(ctx context.Context, handle func([]redis.XMessage)) error {
	if err := g.ensure(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	ownPending := true
	for ctx.Err() == nil {
		msgs, err := g.read(ctx, ownPending)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			g.log.Warn("read outbox", "err", err)
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				// Redis lost the stream (restart without persistence): start over.
				_ = g.ensure(ctx)
			}
			sleep(ctx, time.Second)
			continue
		}
		if ownPending && len(msgs) == 0 {
			ownPending = false
			continue
		}
		if len(msgs) > 0 {
			handle(msgs)
		}
	}
	return nil
}

// read returns the next batch: our own pending entries, or entries other consumers left
// unacknowledged too long, or new entries.
func (g *groupReader) read(ctx context.Context, ownPending bool) ([]redis.XMessage, error) {
	if ownPending {
		res, err := g.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: g.group, Consumer: g.consumer,
			Streams: []string{g.stream, "0"}, Count: int64(g.batch)}).Result()
		return first(res), err
	}
	if time.Since(g.lastClaim) >= g.idle/2 {
		g.lastClaim = time.Now()
		msgs, _, err := g.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: g.stream, Group: g.group,
			Consumer: g.consumer, MinIdle: g.idle, Start: "0", Count: int64(g.batch)}).Result()
		if err != nil {
			return nil, err
		}
		if len(msgs) > 0 {
			g.log.Info("claimed entries of a stale consumer", "count", len(msgs))
			return msgs, nil
		}
	}
	res, err := g.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: g.group, Consumer: g.consumer,
		Streams: []string{g.stream, ">"}, Count: int64(g.batch), Block: g.block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return first(res), err
}

func first(res []redis.XStream) []redis.XMessage {
	if len(res) == 0 {
		return nil
	}
	return res[0].Messages
}
