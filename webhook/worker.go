package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// WorkerConfig tunes a Worker. Zero fields take the defaults.
type WorkerConfig struct {
	Owner            string        // this worker's name on its leases (default: a random id)
	MaxPerEndpoint   int           // deliveries in flight per endpoint (default 4)
	Batch            int           // batches (of up to 32 deliveries) looked at per poll (default 16)
	PollEvery        time.Duration // Run's wait between polls when idle (default 1 s)
	Lease            time.Duration // how long a wave's claim holds (default: long enough for a whole wave, plus 20 s)
	BreakerThreshold int           // failed attempts in a row that open an endpoint's circuit (default 5)
	Cooldown         time.Duration // first open period (default 30 s)
	MaxCooldown      time.Duration // longest open period (default 10 min)
	Metrics          *Metrics      // nil: none
	Logger           *slog.Logger  // nil: discard
	// Client sends the requests (default: Guard.Client(Timeout)). A replacement must
	// keep the guard's checks (dial through Guard.DialContext, no redirects).
	Client *http.Client
}

// Worker delivers due deliveries. Any number of workers, in any number of processes,
// may share a Service's database: each delivery attempt goes through one claim.
// Requests run concurrently, at most MaxPerEndpoint per endpoint, so a slow or dead
// receiver holds up only its own deliveries.
type Worker struct {
	s   *Service
	c   WorkerConfig
	mu  sync.Mutex
	eps map[string]*endpoint
	wg  sync.WaitGroup
	// freed is signalled when a delivery ends, so Run looks again at once.
	freed chan struct{}
	// purged is when this worker last removed old tombstones.
	purged time.Time
}

// NewWorker returns a worker on s.
func NewWorker(s *Service, c WorkerConfig) *Worker {
	if c.Owner == "" {
		c.Owner = newID("w_")
	}
	if c.MaxPerEndpoint <= 0 {
		c.MaxPerEndpoint = 4
	}
	if c.Batch <= 0 {
		c.Batch = 16
	}
	if c.PollEvery <= 0 {
		c.PollEvery = time.Second
	}
	if c.Lease <= 0 {
		// A wave of maxBatch deliveries, MaxPerEndpoint at a time, each up to Timeout.
		waves := (maxBatch + c.MaxPerEndpoint - 1) / c.MaxPerEndpoint
		c.Lease = time.Duration(waves)*s.cfg.Timeout + 20*time.Second
	}
	if c.BreakerThreshold <= 0 {
		c.BreakerThreshold = 5
	}
	if c.Cooldown <= 0 {
		c.Cooldown = 30 * time.Second
	}
	if c.MaxCooldown < c.Cooldown {
		c.MaxCooldown = max(10*time.Minute, c.Cooldown)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Client == nil {
		c.Client = s.cfg.Guard.Client(s.cfg.Timeout)
	}
	return &Worker{s: s, c: c, eps: map[string]*endpoint{}, freed: make(chan struct{}, 1)}
}

// Run polls and delivers until ctx is done, then waits for the deliveries in flight
// to end (each bounded by the timeout) and be recorded, and returns nil. Errors of
// MongoDB are logged and retried on the next poll.
func (w *Worker) Run(ctx context.Context) error {
	t := time.NewTicker(w.c.PollEvery)
	defer t.Stop()
	for {
		if _, err := w.Poll(ctx); err != nil && ctx.Err() == nil {
			w.c.Logger.Warn("webhook poll", "err", err)
		}
		select {
		case <-ctx.Done():
			w.Wait()
			return nil
		case <-t.C:
		case <-w.freed:
		case <-w.s.queued:
		}
	}
}

// Poll claims the deliveries due now that this worker may start and starts them; it
// returns how many it claimed, without waiting for them (see Wait). The requests
// outlive ctx: cancelling it stops the polling, not the requests in flight.
//
// Deliveries go in waves: the due deliveries of one batch, claimed together, sent at
// most MaxPerEndpoint at a time while the endpoint's circuit lets them (those it keeps
// back stay pending, their attempts not spent), and recorded together when the last
// has ended. An endpoint has one wave at a time in a worker.
func (w *Worker) Poll(ctx context.Context) (int, error) {
	now := w.s.cfg.Now()
	if now.Sub(w.purged) > 10*time.Minute {
		if err := w.s.purgeTombstones(ctx, now); err != nil {
			return 0, err
		}
		w.purged = now
	}
	subs, err := w.s.subDocs(ctx)
	if err != nil {
		return 0, err
	}
	blocked := w.blocked(now)
	byID := make(map[string]*subDoc, len(subs))
	open := false
	for i := range subs {
		byID[subs[i].ID] = &subs[i]
		open = open || !slices.Contains(blocked, subs[i].ID)
	}
	if len(subs) > 0 && !open {
		return 0, nil // every endpoint has a wave in flight or its circuit open: nothing could start
	}
	due, err := w.s.dueBatches(ctx, now, blocked, w.c.Batch)
	if err != nil || len(due) == 0 {
		return 0, err
	}
	started := 0
	for _, b := range due {
		if ctx.Err() != nil {
			break
		}
		var wave []item
		for _, it := range b.Items {
			if !it.Due.After(now) {
				wave = append(wave, it)
			}
		}
		if len(wave) == 0 {
			continue
		}
		ep := w.startWave(b.Endpoint, now)
		if ep == nil {
			continue
		}
		l, ok, err := w.s.claim(ctx, b, w.c.Owner, now, now.Add(w.c.Lease))
		if err != nil || !ok {
			w.endWave(ep)
			if err != nil {
				return started, err
			}
			continue
		}
		started += len(wave)
		sub := byID[b.Endpoint]
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer w.endWave(ep)
			w.deliver(context.WithoutCancel(ctx), l, wave, sub, ep)
		}()
	}
	return started, nil
}

// Wait waits for every delivery started so far to end and be recorded.
func (w *Worker) Wait() { w.wg.Wait() }

// Breaker reports the circuit state of an endpoint as this worker sees it: "closed",
// "open" or "half-open".
func (w *Worker) Breaker(subscriptionID string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ep := w.eps[subscriptionID]; ep != nil {
		return ep.state(w.s.cfg.Now())
	}
	return "closed"
}

func (w *Worker) blocked(now time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id, ep := range w.eps {
		if ep.busy(now, w.c.MaxPerEndpoint) {
			out = append(out, id)
		}
	}
	return out
}

// startWave marks a wave started for endpoint id, or returns nil if the endpoint may
// not start one at now (a wave in flight, or its circuit open).
func (w *Worker) startWave(id string, now time.Time) *endpoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	ep := w.eps[id]
	if ep == nil {
		ep = &endpoint{}
		w.eps[id] = ep
	}
	if ep.busy(now, w.c.MaxPerEndpoint) {
		return nil
	}
	ep.waves++
	return ep
}

func (w *Worker) endWave(ep *endpoint) {
	w.mu.Lock()
	ep.waves--
	w.mu.Unlock()
}

// deliver makes the wave's attempts to sub (nil: deleted), at most MaxPerEndpoint at a
// time and while the endpoint's circuit admits them, and records them under lease l
// when the last has ended.
func (w *Worker) deliver(ctx context.Context, l lease, wave []item, sub *subDoc, ep *endpoint) {
	var mu sync.Mutex
	outcomes := make(map[string]outcome, len(wave))
	var wg sync.WaitGroup
	slots := make(chan struct{}, w.c.MaxPerEndpoint)
	for _, it := range wave {
		if sub == nil {
			outcomes[it.EventID] = w.gone(it)
			continue
		}
		slots <- struct{}{}
		w.mu.Lock()
		ok := ep.admit(w.s.cfg.Now(), w.c.MaxPerEndpoint)
		w.mu.Unlock()
		if !ok {
			<-slots
			break // the circuit opened: the rest stay pending, their attempts not spent
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := w.attempt(ctx, it, sub, ep)
			mu.Lock()
			outcomes[it.EventID] = o
			mu.Unlock()
			<-slots
		}()
	}
	wg.Wait()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if held, err := w.s.finish(rctx, l, w.c.Owner, outcomes, w.s.cfg.Now()); err != nil {
		// The lease runs out and the wave is attempted again: at least once.
		w.c.Logger.Warn("webhook record attempts", "batch", l.b.ID, "err", err)
	} else if !held {
		w.c.Logger.Warn("webhook attempts not recorded: the lease was taken over", "batch", l.b.ID)
	}
	select {
	case w.freed <- struct{}{}:
	default:
	}
}

// gone is the outcome of a delivery to a deleted subscription: failed, without an attempt
// on the wire.
func (w *Worker) gone(it item) outcome {
	o := outcome{status: StatusFailed, err: "subscription deleted", at: w.s.cfg.Now().UTC()}
	w.c.Metrics.attempt(o.status, 0)
	return o
}

// attempt makes one attempt of it and says what it leads to.
func (w *Worker) attempt(ctx context.Context, it item, sub *subDoc, ep *endpoint) outcome {
	start := time.Now() // latency is measured on the real clock, whatever Now says
	code, err := w.send(ctx, it, sub)
	elapsed := time.Since(start)
	now := w.s.cfg.Now()
	o := outcome{httpStatus: code, at: now.UTC()}
	ok := err == nil
	switch {
	case ok:
		o.status = StatusDelivered
	case it.Attempts >= len(w.s.cfg.RetrySchedule): // this was attempt 1+len(schedule)
		o.status, o.err = StatusFailed, err.Error()
	default:
		o.status, o.err = StatusPending, err.Error()
		wait := w.s.cfg.RetrySchedule[it.Attempts]
		wait += time.Duration(w.s.cfg.Jitter * w.s.cfg.Rand() * float64(wait))
		next := now.Add(wait).UTC()
		o.next = &next
	}
	if len(o.err) > 500 {
		o.err = o.err[:500]
	}
	w.mu.Lock()
	ep.done(ok, now, w.c)
	w.mu.Unlock()
	w.c.Metrics.attempt(o.status, elapsed)
	return o
}

// send makes the request: the 2xx answer is nil, anything else an error saying why,
// with the status if one came. engine.ErrNotFound: the subscription is gone.
func (w *Worker) send(ctx context.Context, d item, sub *subDoc) (int, error) {
	if sub == nil {
		return 0, engine.ErrNotFound
	}
	secret, err := w.s.cfg.Keys.Open(sub.ID, sub.Secret)
	if err != nil {
		return 0, err
	}
	ts := w.s.cfg.Now()
	body := []byte(d.Body)
	sig, err := Sign(secret, d.EventID, ts, body)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, w.s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("user-agent", "flashstock-webhooks/1")
	req.Header.Set("webhook-id", d.EventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := w.c.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}
