package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashstock/flashstock/internal/testmongo"
	"github.com/flashstock/flashstock/webhook"
)

func TestDeliveryIsSignedAndRecorded(t *testing.T) {
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	r := newReceiver(t, clk, nil)
	sub := mustSubscribe(t, s, r.URL())
	r.setSecret(sub.Secret)
	reg := prometheus.NewRegistry()
	m, err := webhook.NewMetrics(reg, s)
	if err != nil {
		t.Fatal(err)
	}
	evs := orderEvents(clk, 3)
	mustEnqueue(t, s, evs...)
	if got := testutil.ToFloat64(backlogGauge(t, reg, "new")); got != 3 {
		t.Fatalf("backlog before: got %v, want 3", got)
	}
	w := webhook.NewWorker(s, webhook.WorkerConfig{Metrics: m})
	if n := round(t, w); n != 3 {
		t.Fatalf("started %d, want 3", n)
	}
	hits, oks, bad := r.counts()
	if len(bad) != 0 {
		t.Fatalf("receiver refused: %v", bad)
	}
	ds := mustDeliveries(t, s, sub.ID)
	for _, e := range evs {
		d := ds[e.ID]
		if hits[e.ID] != 1 || oks[e.ID] != 1 || d.Status != webhook.StatusDelivered || d.Attempts != 1 ||
			d.LastStatus != http.StatusNoContent || d.DeliveredAt == nil || !d.DeliveredAt.Equal(clk.Now()) || d.NextAttemptAt != nil {
			t.Fatalf("%s: received %d, delivery %+v; want once, delivered at %v", e.ID, hits[e.ID], d, clk.Now())
		}
	}
	if n := round(t, w); n != 0 || r.total() != 3 {
		t.Fatalf("second round: started %d, receiver saw %d; want 0 and 3", n, r.total())
	}
	mustEnqueue(t, s, evs...) // redelivered by the outbox: nothing new
	if n := round(t, w); n != 0 {
		t.Fatalf("after enqueueing again: started %d, want 0", n)
	}
	if got := testutil.ToFloat64(m.Delivered()); got != 3 {
		t.Fatalf("delivered metric: got %v, want 3", got)
	}
	if got := testutil.ToFloat64(backlogGauge(t, reg, "new")); got != 0 {
		t.Fatalf("backlog after: got %v, want 0", got)
	}
}

func TestRetriesKeepTheEventIDUntilDelivered(t *testing.T) {
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	r := newReceiver(t, clk, func(_ string, n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	sub := mustSubscribe(t, s, r.URL())
	r.setSecret(sub.Secret)
	ev := orderEvents(clk, 1)[0]
	mustEnqueue(t, s, ev)
	w := webhook.NewWorker(s, webhook.WorkerConfig{})

	round(t, w)
	d := mustDeliveries(t, s, sub.ID)[ev.ID]
	// 5 s, plus the jitter: half (Rand) of 10 %.
	if want := clk.Now().Add(5*time.Second + 250*time.Millisecond); d.Status != webhook.StatusPending || d.Attempts != 1 ||
		d.LastStatus != 503 || d.LastError == "" || d.NextAttemptAt == nil || !d.NextAttemptAt.Equal(want) {
		t.Fatalf("after one failure: got %+v, want pending, next at %v", d, want)
	}
	clk.Add(5 * time.Second)
	if n := round(t, w); n != 0 {
		t.Fatalf("before the retry is due: started %d, want 0", n)
	}
	clk.Add(250 * time.Millisecond)
	round(t, w)
	d = mustDeliveries(t, s, sub.ID)[ev.ID]
	if want := clk.Now().Add(time.Minute + 3*time.Second); d.Attempts != 2 || !d.NextAttemptAt.Equal(want) {
		t.Fatalf("after two failures: got %+v, want next at %v (1 m and jitter)", d, want)
	}
	clk.Add(2 * time.Minute)
	round(t, w)
	hits, oks, bad := r.counts()
	d = mustDeliveries(t, s, sub.ID)[ev.ID]
	if len(bad) != 0 || len(hits) != 1 || hits[ev.ID] != 3 || oks[ev.ID] != 1 {
		t.Fatalf("receiver: hits %v, oks %v, refused %v; want the one id three times", hits, oks, bad)
	}
	if d.Status != webhook.StatusDelivered || d.Attempts != 3 || d.LastStatus != 200 || d.LastError != "" {
		t.Fatalf("delivery: got %+v, want delivered after 3 attempts", d)
	}
}

func TestAlwaysFailingEndsFailedAfterTheSchedule(t *testing.T) {
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	r := newReceiver(t, clk, func(string, int) int { return http.StatusInternalServerError })
	sub := mustSubscribe(t, s, r.URL())
	r.setSecret(sub.Secret)
	ev := orderEvents(clk, 1)[0]
	mustEnqueue(t, s, ev)
	reg := prometheus.NewRegistry()
	m, _ := webhook.NewMetrics(reg, s)
	// A high breaker threshold: this test is about the schedule.
	w := webhook.NewWorker(s, webhook.WorkerConfig{BreakerThreshold: 100, Metrics: m})
	want := 1 + len(webhook.DefaultRetrySchedule)
	for i := range want + 2 {
		round(t, w)
		if i == 0 {
			if got := testutil.ToFloat64(backlogGauge(t, reg, "retrying")); got != 1 {
				t.Fatalf("retry backlog: got %v, want 1", got)
			}
		}
		clk.Add(27 * time.Hour)
	}
	d := mustDeliveries(t, s, sub.ID)[ev.ID]
	if hits, _, _ := r.counts(); hits[ev.ID] != want || len(hits) != 1 {
		t.Fatalf("receiver: got %v, want %s %d times", hits, ev.ID, want)
	}
	if d.Status != webhook.StatusFailed || d.Attempts != want || d.LastStatus != 500 || d.NextAttemptAt != nil || d.DeliveredAt != nil {
		t.Fatalf("delivery: got %+v, want failed after %d attempts", d, want)
	}
	if got := testutil.ToFloat64(m.Failed()); got != 1 {
		t.Fatalf("failed metric: got %v, want 1", got)
	}
}

func TestCircuitOpensAndProbesOnce(t *testing.T) {
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	var mu sync.Mutex
	up := false
	r := newReceiver(t, clk, func(string, int) int {
		mu.Lock()
		defer mu.Unlock()
		if up {
			return http.StatusOK
		}
		return http.StatusBadGateway
	})
	sub := mustSubscribe(t, s, r.URL())
	r.setSecret(sub.Secret)
	evs := orderEvents(clk, 10)
	mustEnqueue(t, s, evs...)
	w := webhook.NewWorker(s, webhook.WorkerConfig{MaxPerEndpoint: 4, BreakerThreshold: 3, Cooldown: time.Minute})

	// The first four are held until all four are in flight: a fifth cannot start.
	r.block, r.seen = make(chan struct{}), make(chan string, 100)
	if n, err := w.Poll(context.Background()); n != 10 || err != nil {
		t.Fatalf("first poll: claimed %d (%v), want the wave of 10", n, err)
	}
	waitFor(t, r.seen, 4)
	select {
	case id := <-r.seen:
		t.Fatalf("a fifth request (%s) started while four were in flight (limit 4)", id)
	case <-time.After(200 * time.Millisecond):
	}
	close(r.block)
	w.Wait()
	// As each of the four fails its slot frees; the next may start while fewer than 3
	// failures are in (the circuit is still closed), so 4 to 6 requests in all.
	first := r.total()
	if first < 4 || first > 6 {
		t.Fatalf("first round: receiver saw %d, want 4 to 6 (the limit, plus those started before the third failure)", first)
	}
	if got := w.Breaker(sub.ID); got != "open" {
		t.Fatalf("after %d failures: breaker %s, want open", first, got)
	}
	clk.Add(10 * time.Second) // the failed ones are due again
	if n := round(t, w); n != 0 || r.total() != first {
		t.Fatalf("while open: started %d, receiver saw %d; want 0 and %d", n, r.total(), first)
	}
	untouched := 0
	for _, d := range mustDeliveries(t, s, sub.ID) {
		if d.Attempts == 0 {
			untouched++
		}
	}
	if untouched != 10-first {
		t.Fatalf("deliveries never attempted: got %d, want %d (an open circuit spends no attempts)", untouched, 10-first)
	}

	clk.Add(time.Minute)
	if got := w.Breaker(sub.ID); got != "half-open" {
		t.Fatalf("after the cooldown: breaker %s, want half-open", got)
	}
	if round(t, w); r.total() != first+1 {
		t.Fatalf("half-open: receiver saw %d, want %d (one probe)", r.total(), first+1)
	}
	if got := w.Breaker(sub.ID); got != "open" {
		t.Fatalf("after a failed probe: breaker %s, want open", got)
	}
	clk.Add(time.Minute + time.Second)
	if got := w.Breaker(sub.ID); got != "open" {
		t.Fatalf("the cooldown doubles after a failed probe: breaker %s at 1m1s, want open", got)
	}

	mu.Lock()
	up = true
	mu.Unlock()
	clk.Add(time.Minute)
	if round(t, w); r.total() != first+2 {
		t.Fatalf("second probe: receiver saw %d, want %d", r.total(), first+2)
	}
	if got := w.Breaker(sub.ID); got != "closed" {
		t.Fatalf("after a good probe: breaker %s, want closed", got)
	}
	for range 10 {
		if round(t, w) == 0 {
			break
		}
	}
	_, oks, bad := r.counts()
	if len(bad) != 0 {
		t.Fatalf("refused: %v", bad)
	}
	for _, e := range evs {
		if oks[e.ID] != 1 || mustDeliveries(t, s, sub.ID)[e.ID].Status != webhook.StatusDelivered {
			t.Fatalf("%s: delivered %d times, want once", e.ID, oks[e.ID])
		}
	}
}

// Two workers (each with its own Service, as two processes would have) poll the same
// deliveries at once: each attempt of each delivery is made once.
func TestRacingWorkersAttemptEachDeliveryOnce(t *testing.T) {
	clk := newClock()
	db := testmongo.Database(t)
	cfg := testConfig(t, clk)
	s1, s2 := mustService(t, db, cfg), mustService(t, db, cfg)
	r := newReceiver(t, clk, func(_ string, n int) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	sub := mustSubscribe(t, s1, r.URL())
	r.setSecret(sub.Secret)
	evs := orderEvents(clk, 30)
	mustEnqueue(t, s1, evs...)
	c := webhook.WorkerConfig{MaxPerEndpoint: 100, BreakerThreshold: 1000}
	w1, w2 := webhook.NewWorker(s1, c), webhook.NewWorker(s2, c)

	race := func() int {
		var wg sync.WaitGroup
		var n1, n2 int
		wg.Add(2)
		go func() { defer wg.Done(); n1 = round(t, w1) }()
		go func() { defer wg.Done(); n2 = round(t, w2) }()
		wg.Wait()
		return n1 + n2
	}
	if n := race(); n != 30 {
		t.Fatalf("first attempts started: got %d, want 30", n)
	}
	hits, _, _ := r.counts()
	for _, e := range evs {
		if hits[e.ID] != 1 {
			t.Fatalf("%s: first attempt made %d times, want 1", e.ID, hits[e.ID])
		}
	}
	clk.Add(6 * time.Second)
	if n := race(); n != 30 {
		t.Fatalf("retries started: got %d, want 30", n)
	}
	hits, oks, bad := r.counts()
	for _, e := range evs {
		d := mustDeliveries(t, s1, sub.ID)[e.ID]
		if hits[e.ID] != 2 || oks[e.ID] != 1 || d.Attempts != 2 || d.Status != webhook.StatusDelivered {
			t.Fatalf("%s: received %d times (%d ok), delivery %+v; want 2 attempts, delivered", e.ID, hits[e.ID], oks[e.ID], d)
		}
	}
	if len(bad) != 0 {
		t.Fatalf("refused: %v", bad)
	}
}

// A receiver that does not answer holds up only its own endpoint.
func TestASlowReceiverHoldsUpOnlyItself(t *testing.T) {
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	slow := newReceiver(t, clk, nil)
	slow.block = make(chan struct{})
	slow.seen = make(chan string, 100)
	fast := newReceiver(t, clk, nil)
	fast.seen = make(chan string, 100)
	a := mustSubscribe(t, s, slow.URL())
	slow.setSecret(a.Secret)
	b := mustSubscribe(t, s, fast.URL())
	fast.setSecret(b.Secret)
	w := webhook.NewWorker(s, webhook.WorkerConfig{MaxPerEndpoint: 1})
	ctx := context.Background()
	released := false
	defer func() {
		if !released {
			close(slow.block)
		}
		w.Wait()
	}()

	evs := orderEvents(clk, 6)
	mustEnqueue(t, s, evs[0])
	if n, err := w.Poll(ctx); n != 2 || err != nil {
		t.Fatalf("first poll: started %d (%v), want 2", n, err)
	}
	waitFor(t, slow.seen, 1)
	waitFor(t, fast.seen, 1)
	mustEnqueue(t, s, evs[1:]...)
	for got := 1; got < 6; {
		n, err := w.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, fast.seen, n)
		got += n
	}
	ds := mustDeliveries(t, s, b.ID)
	for _, e := range evs {
		if ds[e.ID].Status != webhook.StatusDelivered && ds[e.ID].Status != webhook.StatusPending {
			t.Fatalf("fast %s: %+v", e.ID, ds[e.ID])
		}
	}
	if slow.total() != 0 || len(slow.seen) != 0 {
		t.Fatalf("slow endpoint got %d more requests while one was in flight, want 0 (limit 1)", len(slow.seen))
	}
	close(slow.block)
	released = true
	w.Wait()
	_, oks, _ := slow.counts()
	if oks[evs[0].ID] != 1 {
		t.Fatalf("slow receiver: got %v, want the first event delivered", oks)
	}
	for range 10 {
		if round(t, w) == 0 {
			break
		}
	}
	if _, oks, _ := slow.counts(); len(oks) != 6 {
		t.Fatalf("slow receiver after release: got %d events, want 6", len(oks))
	}
}

// Run stops polling when its context ends and returns only after the delivery in
// flight has ended and been recorded.
func TestRunDrainsInFlightDeliveries(t *testing.T) {
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	r := newReceiver(t, clk, nil)
	r.block = make(chan struct{})
	r.seen = make(chan string, 10)
	sub := mustSubscribe(t, s, r.URL())
	r.setSecret(sub.Secret)
	ev := orderEvents(clk, 1)[0]
	mustEnqueue(t, s, ev)
	w := webhook.NewWorker(s, webhook.WorkerConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, r.seen, 1)
	cancel()
	close(r.block)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if d := mustDeliveries(t, s, sub.ID)[ev.ID]; d.Status != webhook.StatusDelivered {
		t.Fatalf("after Run returned: got %+v, want the in-flight delivery delivered and recorded", d)
	}
}

func TestDeletedSubscriptionEndsItsDeliveries(t *testing.T) {
	clk := newClock()
	db := testmongo.Database(t)
	s := mustService(t, db, testConfig(t, clk))
	r := newReceiver(t, clk, nil)
	sub := mustSubscribe(t, s, r.URL())
	mustEnqueue(t, s, orderEvents(clk, 2)...)
	if err := s.DeleteSubscription(context.Background(), sub.ID); err != nil {
		t.Fatal(err)
	}
	w := webhook.NewWorker(s, webhook.WorkerConfig{})
	if n := round(t, w); n != 2 || r.total() != 0 {
		t.Fatalf("started %d, receiver saw %d; want 2 and 0", n, r.total())
	}
	if n := round(t, w); n != 0 {
		t.Fatalf("again: started %d, want 0 (failed for good)", n)
	}
}

// waitFor takes n values from ch, failing the test (rather than hanging it) if they
// do not come.
func waitFor(t *testing.T, ch chan string, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("got %d of %d requests", i, n)
		}
	}
}

func backlogGauge(t *testing.T, reg *prometheus.Registry, state string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flashstock_webhook_backlog" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == state {
				g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
				g.Set(m.GetGauge().GetValue())
				return g
			}
		}
	}
	t.Fatalf("no backlog gauge %q", state)
	return nil
}

// A worker that stops answering while it holds a lease (its request hangs past the
// lease) loses the attempt to a worker that takes the lease over once it expires, and
// not before: the receiver sees the same event id again (at least once), and the
// attempt is recorded once.
func TestAnExpiredLeaseIsTakenOver(t *testing.T) {
	clk := newClock()
	db := testmongo.Database(t)
	cfg := testConfig(t, clk)
	s1, s2 := mustService(t, db, cfg), mustService(t, db, cfg)
	r := newReceiver(t, clk, nil)
	r.block, r.seen = make(chan struct{}), make(chan string, 10)
	sub := mustSubscribe(t, s1, r.URL())
	r.setSecret(sub.Secret)
	ev := orderEvents(clk, 1)[0]
	mustEnqueue(t, s1, ev)
	c := webhook.WorkerConfig{Lease: time.Minute}
	w1, w2 := webhook.NewWorker(s1, c), webhook.NewWorker(s2, c)
	released := false
	defer func() {
		if !released {
			close(r.block)
		}
		w1.Wait()
		w2.Wait()
	}()

	if n, _ := w1.Poll(context.Background()); n != 1 {
		t.Fatalf("w1: started %d, want 1", n)
	}
	waitFor(t, r.seen, 1)
	clk.Add(59 * time.Second)
	if n, _ := w2.Poll(context.Background()); n != 0 {
		t.Fatalf("w2 within the lease: started %d, want 0", n)
	}
	clk.Add(2 * time.Second)
	if n, _ := w2.Poll(context.Background()); n != 1 {
		t.Fatalf("w2 after the lease: started %d, want 1 (a takeover)", n)
	}
	waitFor(t, r.seen, 1)
	close(r.block)
	released = true
	w1.Wait()
	w2.Wait()
	hits, _, bad := r.counts()
	d := mustDeliveries(t, s1, sub.ID)[ev.ID]
	if hits[ev.ID] != 2 || len(bad) != 0 || d.Status != webhook.StatusDelivered || d.Attempts != 1 {
		t.Fatalf("receiver %v (refused %v), delivery %+v; want the id twice and one attempt recorded", hits, bad, d)
	}
}

// Redirects are not followed: the 3xx is the answer, and a failure.
func TestRedirectsAreNotFollowed(t *testing.T) {
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	target := newReceiver(t, clk, nil)
	redirect := httptest.NewServer(http.RedirectHandler(target.URL(), http.StatusFound))
	t.Cleanup(redirect.Close)
	sub := mustSubscribe(t, s, redirect.URL)
	mustEnqueue(t, s, orderEvents(clk, 1)...)
	round(t, webhook.NewWorker(s, webhook.WorkerConfig{}))
	d := mustDeliveries(t, s, sub.ID)[orderEvents(clk, 1)[0].ID]
	if target.total() != 0 || d.Status != webhook.StatusPending || d.LastStatus != http.StatusFound {
		t.Fatalf("target saw %d requests, delivery %+v; want none and a pending delivery with 302", target.total(), d)
	}
}

// An ended batch stays a day as a tombstone: the same events enqueued again within it
// add nothing; once a worker has purged it, they are delivered again (same id).
func TestTombstonesLastADay(t *testing.T) {
	clk := newClock()
	s := mustService(t, testmongo.Database(t), testConfig(t, clk))
	r := newReceiver(t, clk, nil)
	sub := mustSubscribe(t, s, r.URL())
	r.setSecret(sub.Secret)
	ev := orderEvents(clk, 1)[0]
	mustEnqueue(t, s, ev)
	w := webhook.NewWorker(s, webhook.WorkerConfig{})
	if n := round(t, w); n != 1 {
		t.Fatalf("started %d, want 1", n)
	}
	clk.Add(23 * time.Hour)
	mustEnqueue(t, s, ev)
	if n := round(t, w); n != 0 {
		t.Fatalf("enqueued again within the day: started %d, want 0", n)
	}
	clk.Add(2 * time.Hour)
	round(t, w) // purges
	mustEnqueue(t, s, ev)
	if n := round(t, w); n != 1 {
		t.Fatalf("enqueued again after the purge: started %d, want 1", n)
	}
	if hits, _, bad := r.counts(); hits[ev.ID] != 2 || len(bad) != 0 {
		t.Fatalf("receiver: %v (refused %v), want the id twice", hits, bad)
	}
}
