package engine

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/internal/testredis"
)

// stoppedRedis is a real redis-server that a test can pause (SIGSTOP) and resume, with
// an inventory of one batch worker on a client that never retries.
func stoppedRedis(t *testing.T) (*Redis, func(), func()) {
	t.Helper()
	srv, _ := testredis.Start(t)
	c := redis.NewClient(NoRetries(&redis.Options{Addr: srv.Addr, ReadTimeout: 5 * time.Second, PoolSize: 8}))
	t.Cleanup(func() { c.Close() })
	r := NewRedis(c, Options{Batchers: 1})
	t.Cleanup(r.Close)
	if _, err := r.CreateProduct(context.Background(), Product{SKU: "A", Stock: 10, Price: 100, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	pause := func() { signal(t, srv.Pid(), syscall.SIGSTOP) }
	resume := func() { signal(t, srv.Pid(), syscall.SIGCONT) }
	t.Cleanup(resume)
	return r, pause, resume
}

func signal(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

// waitSent waits until a worker has taken req into a batch.
func waitSent(t *testing.T, req *takeReq) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for req.state.Load() != reqSent {
		if time.Now().After(deadline) {
			t.Fatal("the batcher never sent the request")
		}
		time.Sleep(time.Millisecond)
	}
}

func orderReq(ctx context.Context, id string) *takeReq {
	return &takeReq{pending: pending{ctx: ctx}, mode: "order", user: "u", id: id, lines: []Line{{SKU: "A", Quantity: 1}}}
}

func exists(t *testing.T, r *Redis, id string) bool {
	t.Helper()
	_, err := r.Order(context.Background(), id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestBatcherNeverSendsARequestWhoseCallerGaveUp(t *testing.T) {
	r, pause, resume := stoppedRedis(t)
	pause()
	// The only worker sends a and waits for Redis; b queues behind it and its
	// caller's deadline passes before any worker takes it.
	a := orderReq(context.Background(), "order-a")
	aDone := make(chan error, 1)
	go func() { _, err := r.take(a); aDone <- err }()
	waitSent(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := r.take(orderReq(ctx, "order-b"))
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a request whose deadline passed before it was sent: got %v, want ErrUnavailable", err)
	}
	resume()
	if err := <-aDone; err != nil {
		t.Fatalf("request a: %v", err)
	}
	// FIFO with one worker: once c is answered, b has been taken from the queue.
	if _, err := r.take(orderReq(context.Background(), "order-c")); err != nil {
		t.Fatal(err)
	}
	if exists(t, r, "order-b") {
		t.Fatal("the request answered ErrUnavailable was applied")
	}
	if !exists(t, r, "order-a") || !exists(t, r, "order-c") {
		t.Fatal("an acknowledged order is missing")
	}
	lv, err := r.Levels(context.Background(), []string{"A"})
	if err != nil {
		t.Fatal(err)
	}
	if lv[0].Available != 8 || lv[0].Sold != 2 {
		t.Fatalf("levels: got %+v, want 8 available and 2 sold", lv[0])
	}
}

func TestBatcherAnswersOutcomeUnknownForASentRequest(t *testing.T) {
	r, pause, resume := stoppedRedis(t)
	pause()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req := orderReq(ctx, "order-u")
	done := make(chan error, 1)
	go func() { _, err := r.take(req); done <- err }()
	waitSent(t, req)
	err := <-done
	if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("a sent request whose caller gave up: got %v, want ErrOutcomeUnknown", err)
	}
	resume()
	// Redis runs what it was sent once it resumes: the order exists, exactly once.
	if _, err := r.take(orderReq(context.Background(), "order-next")); err != nil {
		t.Fatal(err)
	}
	if !exists(t, r, "order-u") {
		t.Fatal("the sent request was not applied after all; the test did not exercise the case")
	}
	lv, _ := r.Levels(context.Background(), []string{"A"})
	if lv[0].Sold != 2 {
		t.Fatalf("sold: got %d, want 2", lv[0].Sold)
	}
}

func TestCorruptStockRecordRefusesOnlyItsOwnRequests(t *testing.T) {
	_, c := testredis.Start(t)
	r := NewRedis(c, Options{})
	t.Cleanup(r.Close)
	ctx := context.Background()
	for _, sku := range []string{"GOOD", "BAD"} {
		if _, err := r.CreateProduct(ctx, Product{SKU: sku, Stock: 5, Price: 1, Currency: "USD"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.HDel(ctx, r.k.Stock("BAD"), "q").Err(); err != nil {
		t.Fatal(err)
	}
	good, bad := orderReq(ctx, "o-good"), orderReq(ctx, "o-bad")
	good.lines, bad.lines = []Line{{SKU: "GOOD", Quantity: 1}}, []Line{{SKU: "BAD", Quantity: 1}}
	batch := []*takeReq{bad, good}
	for _, req := range batch {
		req.done = make(chan struct{})
	}
	r.parts[0].batch.exec(batch) // one script call for both
	if err := takeError(bad.rep); bad.err != nil || err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("request on the corrupt record: got %v / %v, want a refusal of its own", bad.err, err)
	}
	if good.err != nil || good.rep.status() != "ok" {
		t.Fatalf("request in the same batch on a sound record: got %v %v, want ok", good.err, good.rep)
	}
}

func TestAdminScriptsRunTwiceApplyOnce(t *testing.T) {
	_, c := testredis.Start(t)
	r := NewRedis(c, Options{})
	t.Cleanup(r.Close)
	ctx := context.Background()
	if _, err := r.CreateProduct(ctx, Product{SKU: "A", Stock: 5, Price: 1, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	// The same adjust.lua call sent twice, as a client retry would: one movement.
	keys := []string{r.k.Outbox(), r.k.Stock("A"), r.k.Idem("admin-op:ops", "op-1")}
	args := []any{"adjust", "A", "restock", "ops", "op", r.idemTTL, -1, 3, 0, 0, MaxUnits}
	first, err := run(ctx, nodeRunner{rdb: c}, scriptAdjust, keys, args...)
	if err != nil {
		t.Fatal(err)
	}
	second, err := run(ctx, nodeRunner{rdb: c}, scriptAdjust, keys, args...)
	if err != nil {
		t.Fatal(err)
	}
	if first.status() != "ok" || second.status() != "replay" || second.num(1) != 8 {
		t.Fatalf("adjust run twice: got %v then %v, want ok then replay of available 8", first, second)
	}
	// create.lua sent twice with one operation id: the second is a replay, not a conflict.
	keys = []string{r.k.Outbox(), r.k.Stock("B"), r.k.SKUs()}
	args = []any{"create", "B", 4, 0, 0, 1, 1, "USD", 0, 0, 0, "op-2"}
	for i, want := range []string{"ok", "replay"} {
		rep, err := run(ctx, nodeRunner{rdb: c}, scriptCreate, keys, args...)
		if err != nil || rep.status() != want {
			t.Fatalf("create run %d: got %v %v, want %s", i+1, rep, err, want)
		}
	}
	args[len(args)-1] = "op-3"
	if rep, _ := run(ctx, nodeRunner{rdb: c}, scriptCreate, keys, args...); rep.status() != "exists" {
		t.Fatalf("another create of B: got %v, want exists", rep)
	}
	lv, _ := r.Levels(ctx, []string{"A", "B"})
	if lv[0].Available != 8 || lv[0].Version != 2 || lv[1].Available != 4 || lv[1].Version != 1 {
		t.Fatalf("levels: got %+v, want A at 8 (v2) and B at 4 (v1)", lv)
	}
	n, _ := c.XLen(ctx, r.k.Outbox()).Result()
	if n != 3 {
		t.Fatalf("outbox entries: got %d, want 3 (two creates, one adjustment)", n)
	}
}

// A replay is an applied request: if its record cannot be read back, the caller hears
// "outcome unknown, retry", never "nothing was applied".
func TestReplayWhoseRecordCannotBeReadIsOutcomeUnknown(t *testing.T) {
	err := replayReadErr(fmt.Errorf("order o1: %w", readErr("read", context.DeadlineExceeded)))
	if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrOutcomeUnknown alone", err)
	}
	if err := replayReadErr(ErrNotFound); !errors.Is(err, ErrNotFound) {
		t.Fatalf("other errors pass: got %v", err)
	}
}

// A request submitted after Close is refused at once (ErrUnavailable), never left in a
// queue no worker reads any more.
func TestBatcherRefusesRequestsAfterClose(t *testing.T) {
	_, c := testredis.Start(t)
	r := NewRedis(c, Options{})
	if _, err := r.CreateProduct(context.Background(), Product{SKU: "A", Stock: 100, Price: 1, Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	for i := range 200 {
		done := make(chan error, 1)
		go func() { _, err := r.take(orderReq(context.Background(), fmt.Sprintf("late-%d", i))); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("request %d after Close: %v, want ErrUnavailable", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("request %d after Close was never answered", i)
		}
	}
}
