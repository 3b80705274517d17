package sync_test

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	stocksync "github.com/flashstock/flashstock/sync"
)

// lossyReplies lets chosen commands reach Redis and run, then loses their reply, as a
// connection cut after the request was sent would.
type lossyReplies struct {
	calls atomic.Int64
	lose  func(n int64, cmd redis.Cmder) bool // n counts the commands Redis ran
}

func (h *lossyReplies) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *lossyReplies) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := next(ctx, cmd); err != nil {
			return err
		}
		if h.lose(h.calls.Add(1), cmd) {
			cmd.SetErr(io.ErrUnexpectedEOF)
			return io.ErrUnexpectedEOF
		}
		return nil
	}
}

func (h *lossyReplies) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A lost reply to a tick's claim or to the run lock's acquire neither skips the tick
// nor lets another scheduler run it: re-sent, the claim finds its own value.
func TestTickClaimSurvivesALostReply(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose int64 // the nth command Redis ran whose reply is lost
	}{{"claim", 1}, {"lock", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			lossy := e.srv.Client()
			lossy.AddHook(&lossyReplies{lose: func(n int64, _ redis.Cmder) bool { return n == tc.lose }})
			var runs atomic.Int64
			job := stocksync.Job{Name: "j", Spec: "* * * * * *", Run: func(context.Context) error { runs.Add(1); return nil }}
			a, err := stocksync.NewScheduler(lossy, e.inv.Keys(), nil, job)
			if err != nil {
				t.Fatal(err)
			}
			b, err := stocksync.NewScheduler(e.rdb, e.inv.Keys(), nil, job)
			if err != nil {
				t.Fatal(err)
			}
			at := time.Unix(1_800_000_000, 0)
			ran, err := a.RunTick(ctx, job, at)
			if err != nil || !ran {
				t.Fatalf("tick with a lost reply: ran %v, err %v; want it run", ran, err)
			}
			if ran, err := b.RunTick(ctx, job, at); err != nil || ran {
				t.Fatalf("another scheduler, same tick: ran %v, err %v; want it refused", ran, err)
			}
			if n := runs.Load(); n != 1 {
				t.Fatalf("job ran %d times, want 1", n)
			}
			// The lock was released: the next tick runs.
			if ran, err := b.RunTick(ctx, job, at.Add(time.Second)); err != nil || !ran {
				t.Fatalf("next tick: ran %v, err %v; want it run", ran, err)
			}
		})
	}
}

// A claim held by another scheduler is not taken over by a re-send.
func TestTickClaimedByAnotherIsRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	job := stocksync.Job{Name: "j", Spec: "* * * * * *", Run: func(context.Context) error { return nil }}
	at := time.Unix(1_800_000_000, 0)
	if err := e.rdb.Set(ctx, e.inv.Keys().Job("j", "tick:1800000000"), "someone-else", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	a, err := stocksync.NewScheduler(e.rdb, e.inv.Keys(), nil, job)
	if err != nil {
		t.Fatal(err)
	}
	if ran, err := a.RunTick(ctx, job, at); err != nil || ran {
		t.Fatalf("ran %v, err %v; want the tick left to its claimant", ran, err)
	}
}
