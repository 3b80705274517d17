package sync_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// failover runs buyers on single-partition carts, SIGKILLs the master of one group's
// partition mid-storm and waits for its replica to take over; it returns the shop and
// how many acknowledged orders Redis no longer has.
func failover(t *testing.T, wait int) (s *clusterShop, lost int) {
	ctx := context.Background()
	s = newClusterShop(t, engine.Options{Partitions: 6, WaitReplicas: wait, WaitTimeout: time.Second}, 6, 3, 100_000)
	rdb := s.c.Client()
	victimOf := func(group int) string {
		p, err := s.inv.PartitionOf(ctx, s.groups[group][0])
		if err != nil {
			t.Fatal(err)
		}
		n, err := rdb.MasterForKey(ctx, s.inv.PartitionKeys(p).Stock(s.groups[group][0]))
		if err != nil {
			t.Fatal(err)
		}
		return n.Options().Addr
	}
	victim := victimOf(0)
	onVictim := map[string]bool{}
	for g, skus := range s.groups {
		if victimOf(g) == victim {
			for _, sku := range skus {
				onVictim[sku] = true
			}
		}
	}

	var (
		mu         gosync.Mutex
		unresolved = map[string]pending{} // by key: outcome unknown or not applied
		killedAt   atomic.Int64           // unix ns
		backAt     atomic.Int64           // first success on the victim's SKUs after the kill
		stop       atomic.Bool
		wg         gosync.WaitGroup
		notRun     atomic.Int64
		unknown    atomic.Int64
	)
	for b := range 48 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(b), 11))
			for r := 0; !stop.Load(); r++ {
				key, lines := fmt.Sprintf("k-%d-%d", b, r), s.cart(rng)
				started := time.Now().UnixNano()
				o, err := s.inv.Checkout(ctx, engine.CheckoutRequest{UserID: fmt.Sprintf("u%d", b), IdempotencyKey: key, Lines: lines})
				switch {
				case err == nil:
					s.mu.Lock()
					s.orders[o.ID] = lines
					s.mu.Unlock()
					// Served after the kill: by the promoted replica.
					if k := killedAt.Load(); k != 0 && started > k && onVictim[lines[0].SKU] {
						backAt.CompareAndSwap(0, time.Now().UnixNano())
					}
				case errors.Is(err, engine.ErrOutcomeUnknown) || errors.Is(err, engine.ErrUnavailable):
					if errors.Is(err, engine.ErrOutcomeUnknown) {
						unknown.Add(1)
					} else {
						notRun.Add(1)
					}
					mu.Lock()
					unresolved[key] = pending{user: fmt.Sprintf("u%d", b), lines: lines}
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
				default:
					t.Errorf("checkout: %v", err)
					return
				}
			}
		})
	}
	time.Sleep(time.Second)
	before := len(s.ordersSnapshot())
	killedAt.Store(time.Now().UnixNano())
	s.c.Kill(victim)
	s.c.WaitHealthy(30 * time.Second)
	healthy := time.Since(time.Unix(0, killedAt.Load()))
	if wait > 0 {
		// The promoted replica has no replica of its own until the old master comes
		// back as one (as an operator or orchestrator restarts it): until then WAIT 1
		// cannot be met and its partitions answer outcome_unknown, never a silent
		// success.
		s.c.Restart(victim)
		s.c.WaitHealthy(30 * time.Second)
	}
	rejoined := time.Since(time.Unix(0, killedAt.Load()))
	for i := 0; backAt.Load() == 0 && i < 200; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if backAt.Load() == 0 {
		t.Fatalf("no checkout on the killed master's partitions succeeded within 10 s of the cluster's recovery")
	}
	back := time.Duration(backAt.Load() - killedAt.Load())

	// Every acknowledged order must still be there (or, without WAIT, is counted lost).
	acked := s.ordersSnapshot()
	for id := range acked {
		if _, err := s.inv.Order(ctx, id); errors.Is(err, engine.ErrNotFound) {
			lost++
			s.mu.Lock()
			delete(s.orders, id) // Redis lost it with its units: not sold any more
			s.mu.Unlock()
		} else if err != nil {
			t.Fatalf("read order %s: %v", id, err)
		}
	}
	// A retry with the same key settles each unknown outcome: a replay if it was applied.
	replayed := 0
	for key, p := range unresolved {
		o, err := s.checkout(t, p.user, key, p.lines, time.Now().Add(10*time.Second))
		if err != nil {
			t.Fatalf("resolve %s: %v", key, err)
		}
		if o != nil && o.Replayed {
			replayed++
		}
	}
	s.checkLevels(t)
	t.Logf("failover (WAIT %d): victim %s with %d SKUs; %d orders before the kill, %d acknowledged in all; "+
		"kill -> replica promoted (cluster healthy) %v, kill -> old master back as a replica %v, kill -> first checkout on its partitions %v; during it %d outcome unknown, %d not run, "+
		"%d of the unresolved replayed on retry; acknowledged orders lost: %d",
		wait, victim, len(onVictim), before, len(acked), healthy.Round(time.Millisecond), rejoined.Round(time.Millisecond), back.Round(time.Millisecond),
		unknown.Load(), notRun.Load(), replayed, lost)
	if back > rejoined+5*time.Second {
		t.Errorf("service came back %v after the kill (%v after the cluster could serve it), want within seconds", back, back-rejoined)
	}
	return s, lost
}

type pending struct {
	user  string
	lines []engine.Line
}

func (s *clusterShop) ordersSnapshot() map[string][]engine.Line {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]engine.Line, len(s.orders))
	for id, l := range s.orders {
		out[id] = l
	}
	return out
}

// TestClusterFailoverWithWait: with REDIS_WAIT_REPLICAS=1, SIGKILL of a master in the
// middle of a storm loses no acknowledged order and oversells nothing.
func TestClusterFailoverWithWait(t *testing.T) {
	if _, lost := failover(t, 1); lost != 0 {
		t.Errorf("lost %d acknowledged orders with WAIT 1, want 0", lost)
	}
}

// TestClusterFailoverWithoutWait reports what the same failover loses without WAIT
// (asynchronous replication): the count is logged, not hidden; units stay consistent.
func TestClusterFailoverWithoutWait(t *testing.T) {
	_, lost := failover(t, 0)
	t.Logf("without WAIT: %d acknowledged orders lost with the killed master", lost)
}
