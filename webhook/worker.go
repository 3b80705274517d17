package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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
	Lease            time.Duration // how long a claim holds (default Timeout + 20 s)
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
		c.Lease = s.cfg.Timeout + 20*time.Second
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

// Poll claims the deliveries due now that this worker may start (breakers and
// per-endpoint limits permitting) and starts them; it returns how many it started,
// without waiting for them (see Wait). The requests outlive ctx: cancelling it stops
// the polling, not the requests in flight.
//
// Deliveries go in waves: the due deliveries of one batch that the endpoint admits
// now, claimed together and recorded together when the last of them ends.
func (w *Worker) Poll(ctx context.Context) (int, error) {
	now := w.s.cfg.Now()
	due, err := w.s.dueBatches(ctx, now, w.blocked(now), w.c.Batch)
	if err != nil || len(due) == 0 {
		return 0, err
	}
	subs, err := w.s.subDocs(ctx)
	if err != nil {
		return 0, err
	}
	byID := make(map[string]*subDoc, len(subs))
	for i := range subs {
		byID[subs[i].ID] = &subs[i]
	}
	started := 0
	for _, b := range due {
		if ctx.Err() != nil {
			break
		}
		ep, wave := w.admit(b, now)
		if len(wave) == 0 {
			continue
		}
		l, ok, err := w.s.claim(ctx, b, w.c.Owner, now, now.Add(w.c.Lease))
		if err != nil || !ok {
			w.mu.Lock()
			for range wave {
				ep.unadmit()
			}
			w.mu.Unlock()
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
		if ep.blocked(now, w.c.MaxPerEndpoint) {
			out = append(out, id)
		}
	}
	return out
}

// admit picks the wave of batch b: its deliveries due at now, as many as its endpoint
// admits.
func (w *Worker) admit(b batchDoc, now time.Time) (*endpoint, []item) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ep := w.eps[b.Endpoint]
	if ep == nil {
		ep = &endpoint{}
		w.eps[b.Endpoint] = ep
	}
	var wave []item
	for _, it := range b.Items {
		if it.Due.After(now) {
			continue
		}
		if !ep.admit(now, w.c.MaxPerEndpoint) {
			break
		}
		wave = append(wave, it)
	}
	return ep, wave
}

// deliver makes the wave's attempts, at once, to sub (nil: deleted), and records them
// under lease l when the last has ended.
func (w *Worker) deliver(ctx context.Context, l lease, wave []item, sub *subDoc, ep *endpoint) {
	outcomes := make([]outcome, len(wave))
	var wg sync.WaitGroup
	for i, it := range wave {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes[i] = w.attempt(ctx, it, sub, ep)
		}()
	}
	wg.Wait()
	byID := make(map[string]outcome, len(wave))
	for i, it := range wave {
		byID[it.ID] = outcomes[i]
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if held, err := w.s.finish(rctx, l, w.c.Owner, byID); err != nil {
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

// attempt makes one attempt of it and says what it leads to.
func (w *Worker) attempt(ctx context.Context, it item, sub *subDoc, ep *endpoint) outcome {
	start := time.Now() // latency is measured on the real clock, whatever Now says
	code, err := w.send(ctx, it, sub)
	elapsed := time.Since(start)
	now := w.s.cfg.Now()
	o := outcome{httpStatus: code, at: now.UTC()}
	ok := err == nil
	gone := sub == nil
	switch {
	case ok:
		o.status = StatusDelivered
	case gone:
		o.status, o.err = StatusFailed, "subscription deleted"
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
	if gone {
		ep.unadmit()
	} else {
		ep.done(ok, now, w.c)
	}
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
