package sync_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// TestReplayWaitsForAReplica: with WAIT 1, a retry must not be answered with a record
// (an order, a cancel) that no replica has yet. The order's replica is stalled
// (SIGSTOP: still connected, acknowledging nothing new); the first call's WAIT falls
// short (ErrOutcomeUnknown). The retry comes on fresh connections, which wrote nothing
// before: it must be answered ErrOutcomeUnknown too. (WAIT promises only the
// connection's own writes, so replays write their record again; on Redis 7.0 a stalled
// replica also fails a WAIT that has nothing to wait for, so this test passes without
// that as well: it guards the behaviour, not the mechanism.)
func TestReplayWaitsForAReplica(t *testing.T) {
	ctx := context.Background()
	opts := engine.Options{Partitions: 6, WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond}
	s := newClusterShop(t, opts, 6, 1, 10)
	sku := s.groups[0][0]
	victim := s.masterOf(t, s.partitionOf(t, sku))
	replica := s.replicaOf(t, victim)
	pid := s.c.Pid(replica)
	stall := func(sig syscall.Signal) {
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatalf("signal %v to the replica: %v", sig, err)
		}
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })

	// An order made while the replica keeps up, to cancel below.
	toCancel, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: "u", IdempotencyKey: "c", Lines: []engine.Line{{SKU: sku, Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	fresh := func() *engine.Redis {
		inv := engine.NewRedis(s.c.Client(), opts)
		t.Cleanup(inv.Close)
		return inv
	}

	stall(syscall.SIGSTOP)
	req := engine.CheckoutRequest{UserID: "u", IdempotencyKey: "k", Lines: []engine.Line{{SKU: sku, Quantity: 1}}}
	if _, err := s.inv.Checkout(ctx, req); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("checkout with the replica stalled: %v, want ErrOutcomeUnknown", err)
	}
	if o, err := fresh().Checkout(ctx, req); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Errorf("retried checkout with the replica stalled: %+v %v, want ErrOutcomeUnknown (the order is on the master alone)", o, err)
	}
	cancel := engine.CancelRequest{OrderID: toCancel.ID}
	if _, err := s.inv.Cancel(ctx, cancel); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("cancel with the replica stalled: %v, want ErrOutcomeUnknown", err)
	}
	if o, err := fresh().Cancel(ctx, cancel); !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Errorf("retried cancel with the replica stalled: %+v %v, want ErrOutcomeUnknown (the cancel is on the master alone)", o, err)
	}

	// Once the replica catches up, the retries are answered with what was done.
	stall(syscall.SIGCONT)
	waitFor(t, func() bool {
		o, err := fresh().Checkout(ctx, req)
		return err == nil && o.Replayed
	})
	waitFor(t, func() bool {
		o, err := fresh().Cancel(ctx, cancel)
		return err == nil && o.Replayed && o.Status == engine.OrderCancelled
	})
}
