package engine

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// A batcher coalesces concurrent script requests of one partition into one script call:
// checkouts and reservations into take.lua, the steps of cross-partition checkouts into
// xcart.lua.
//
// Redis spends about as long receiving and answering a script call as running a cheap
// one, so under load most of a checkout's cost would be the call itself. Each worker
// takes one request, then whatever else has queued meanwhile (up to a bound), and sends
// them as one script that applies them in order, each atomically. There is no timer: an
// idle worker sends a lone request at once, so batching adds no latency at low load and
// grows only while Redis is busy. Several workers keep several batches in flight.
type batcher[Q batchable] struct {
	r      *Redis
	k      Keys // the partition's
	script *redis.Script
	// head is the batch's leading keys and values, before the requests'.
	head     func() ([]string, []any)
	headKeys int // len of head's keys
	queue    chan Q
	stop     chan struct{}
	// mu orders submissions before close: a request is queued only while closed is
	// false, under the read lock, so every queued request is queued before stop closes
	// and the workers serve it before they leave.
	mu      sync.RWMutex
	closed  bool
	wg      sync.WaitGroup
	maxReqs int
	maxKeys int
}

// batchable is a request a batcher can send: its pending call, and its share of the script's
// KEYS and ARGV. The script answers each request in turn as a count n and n values.
type batchable interface {
	call() *pending
	keyCount() int
	argCount() int
	appendTo(k Keys, keys []string, args []any) ([]string, []any)
}

// pending is one request's life in a batcher: its caller's context and its answer.
type pending struct {
	ctx  context.Context
	rep  reply
	err  error
	done chan struct{}
	// state tells a caller who gives up whether its request was sent: a worker moves
	// it from queued to sent before the batch goes out, a caller from queued to
	// abandoned, and a worker skips abandoned requests.
	state atomic.Int32
}

// takeReq is one checkout or reservation waiting for its batch (take.lua).
type takeReq struct {
	pending
	mode, user, id string
	fp             string // request fingerprint; '' without an idempotency key
	holdMs         int64
	lines          []Line
	// rateKey and rateLimit: the user's per-minute request counter and its limit
	// (0 = none), counted by the same script.
	rateKey   string
	rateLimit int
	// pass is the queue passes the request carries ('' = none), tokens joined by ','.
	pass string
}

func (req *takeReq) call() *pending { return &req.pending }

// keyCount and argCount are the KEYS and ARGV a request takes in take.lua's batch
// layout (written by appendTo; the script names the same layout once).
func (req *takeReq) keyCount() int { return 2 + 3*len(req.lines) }
func (req *takeReq) argCount() int { return 8 + 2*len(req.lines) }

// appendTo appends the request to a batch's KEYS and ARGV: its record, each line's stock
// hash, per-user counters and waiting-room passes, and its rate-limit window; then mode,
// user, id, fingerprint, hold lifetime, line count, each line's sku and quantity, its
// limit and its queue passes.
func (req *takeReq) appendTo(k Keys, keys []string, args []any) ([]string, []any) {
	record := k.Order(req.id)
	if req.mode == "hold" {
		record = k.Hold(req.id)
	}
	keys = append(keys, record)
	args = append(args, req.mode, req.user, req.id, req.fp, req.holdMs, len(req.lines))
	for _, l := range req.lines {
		keys = append(keys, k.Stock(l.SKU), k.Bought(l.SKU), k.Room(l.SKU, "p"))
		args = append(args, l.SKU, l.Quantity)
	}
	rateKey := req.rateKey
	if req.rateLimit <= 0 {
		rateKey = record // not touched; any key of the partition will do
	}
	return append(keys, rateKey), append(args, req.rateLimit, req.pass)
}

// The states of a pending call.
const (
	reqQueued int32 = iota
	reqSent
	reqAbandoned
)

const (
	batchRequests = 64  // requests per script call at most
	batchKeys     = 512 // keys per script call at most (a take request has 2 + 3 per line)
)

// newTakeBatcher makes partition k's batcher of checkouts and reservations.
func newTakeBatcher(r *Redis, k Keys, workers int) *batcher[*takeReq] {
	// The batch's head: the outbox and the hold index, and the records' lifetime.
	head := func() ([]string, []any) { return []string{k.Outbox(), k.HoldIndex()}, []any{r.recTTL} }
	return newBatcher[*takeReq](r, k, scriptTake, head, workers)
}

func newBatcher[Q batchable](r *Redis, k Keys, script *redis.Script, head func() ([]string, []any), workers int) *batcher[Q] {
	hk, _ := head()
	b := &batcher[Q]{r: r, k: k, script: script, head: head, headKeys: len(hk), queue: make(chan Q, 4*batchRequests),
		stop: make(chan struct{}), maxReqs: batchRequests, maxKeys: batchKeys}
	for range workers {
		b.wg.Go(b.work)
	}
	return b
}

// close stops the workers once the queue is empty; later submissions are refused.
func (b *batcher[Q]) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
}

// submit queues req and waits for its answer. If ctx ends first, a request not yet
// sent is withdrawn and answered ErrUnavailable (it will not run); one already sent is
// answered ErrOutcomeUnknown, since its batch may still apply it.
func (b *batcher[Q]) submit(req Q) (reply, error) {
	c := req.call()
	c.done = make(chan struct{})
	if err := c.ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: not sent: %w", ErrUnavailable, err)
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return nil, fmt.Errorf("%w: inventory closed", ErrUnavailable)
	}
	select {
	case b.queue <- req:
		b.mu.RUnlock()
	case <-c.ctx.Done():
		b.mu.RUnlock()
		return nil, fmt.Errorf("%w: not sent: %w", ErrUnavailable, c.ctx.Err())
	}
	select {
	case <-c.done:
		return c.rep, c.err
	case <-c.ctx.Done():
	}
	if c.state.CompareAndSwap(reqQueued, reqAbandoned) {
		return nil, fmt.Errorf("%w: not sent: %w", ErrUnavailable, c.ctx.Err())
	}
	select {
	case <-c.done: // answered at the same moment
		return c.rep, c.err
	default:
		return nil, fmt.Errorf("%w: sent, no answer in time: %w", ErrOutcomeUnknown, c.ctx.Err())
	}
}

func (b *batcher[Q]) work() {
	batch := make([]Q, 0, b.maxReqs)
	for {
		var first Q
		select {
		case first = <-b.queue:
		case <-b.stop:
			// Serve what is still queued, then leave.
			select {
			case first = <-b.queue:
			default:
				return
			}
		}
		batch = batch[:0]
		nkeys := b.headKeys
		if first.call().state.CompareAndSwap(reqQueued, reqSent) {
			batch = append(batch, first)
			nkeys += first.keyCount()
		}
	fill:
		for len(batch) < b.maxReqs {
			select {
			case req := <-b.queue:
				if !req.call().state.CompareAndSwap(reqQueued, reqSent) {
					continue // its caller gave up: it must not run
				}
				batch = append(batch, req)
				if nkeys += req.keyCount(); nkeys >= b.maxKeys {
					break fill
				}
			default:
				break fill
			}
		}
		if len(batch) > 0 {
			b.exec(batch)
		}
	}
}

func (b *batcher[Q]) exec(batch []Q) {
	keys, args := b.head()
	nkeys, nargs := len(keys), len(args)
	for _, req := range batch {
		nkeys += req.keyCount()
		nargs += req.argCount()
	}
	keys = slices.Grow(keys, nkeys-len(keys))
	args = slices.Grow(args, nargs-len(args))
	for _, req := range batch {
		keys, args = req.appendTo(b.k, keys, args)
	}
	// The batch runs on behalf of all its callers; one caller giving up must not
	// abort the others' requests.
	ctx := context.WithoutCancel(batch[0].call().ctx)
	rep, err := run(ctx, b.r.sc, b.script, keys, args...)
	i := 0
	for _, q := range batch {
		req := q.call()
		switch {
		case err != nil:
			req.err = err
		case i >= len(rep):
			req.err = fmt.Errorf("script: short batch reply")
		default:
			n := int(asInt(rep[i]))
			if i+1+n > len(rep) {
				req.err = fmt.Errorf("script: short batch reply")
				break
			}
			req.rep = rep[i+1 : i+1+n]
			i += 1 + n
		}
		close(req.done)
	}
}

// takeError turns take.lua's refusals into errors; 'ok' and 'replay' pass.
func takeError(rep reply) error {
	switch rep.status() {
	case "ok", "replay":
		return nil
	case "reused":
		return ErrIdempotencyKeyReused
	case "rate_limited":
		return newRateError(rep.num(1))
	case "not_found":
		return fmt.Errorf("sku %s: %w", rep.str(1), ErrNotFound)
	case "corrupt":
		return fmt.Errorf("sku %s: the stock record lacks a field", rep.str(1))
	case "bad_record":
		return fmt.Errorf("record %s exists but does not parse", rep.str(1))
	case "window":
		return fmt.Errorf("sku %s: %w", rep.str(1), ErrSaleNotActive)
	case "pass":
		return fmt.Errorf("sku %s: %w", rep.str(1), ErrQueuePassRequired)
	case "currency":
		return invalid("items", "sku %s is sold in another currency than the other lines", rep.str(1))
	case "limit":
		return &LimitError{SKU: rep.str(1), Limit: rep.num(2), Already: rep.num(3), Requested: rep.num(4)}
	case "oos":
		se := &StockError{Short: make([]Shortage, 0, (len(rep)-1)/3)}
		for i := 1; i+2 < len(rep); i += 3 {
			se.Short = append(se.Short, Shortage{SKU: rep.str(i), Requested: rep.num(i + 1), Available: rep.num(i + 2)})
		}
		return se
	}
	return rep.expect("ok")
}
