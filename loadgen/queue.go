package loadgen

import (
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashstock/flashstock/engine"
)

// Queue: a drop through a waiting room. Every buyer (each its own identity) joins the
// SKU's room before the sale starts; then the sale opens, and each polls with backoff
// (on its own schedule, guided by its estimated wait) and, once admitted, buys one unit
// with its pass. Stock defaults to a tenth of the
// buyers. The attempts the report counts are the checkouts; joins and polls are counted
// on the side (QueueFigures). It is not in Scenarios (the baselines have no rooms): ask
// for it by name.
const Queue = "queue"

// Queuer is a target with waiting rooms.
type Queuer interface {
	// PrepareRoom creates sku with stock units and a waiting room admitting
	// admitPerMinute, its sale not yet started.
	PrepareRoom(ctx context.Context, sku string, stock, admitPerMinute int64) error
	// OpenSale starts sku's sale now.
	OpenSale(ctx context.Context, sku string) error
	// Join puts buyer in sku's room; Poll asks where buyer stands.
	Join(ctx context.Context, buyer int, sku string) Ticket
	Poll(ctx context.Context, buyer int, sku string) Ticket
	// CheckoutPass buys lines for buyer with the pass the room gave it.
	CheckoutPass(ctx context.Context, buyer int, key string, lines []engine.Line, pass string) Answer
}

// Ticket is a waiting room's answer to a join or a poll.
type Ticket struct {
	// Status is waiting, admitted, sold_out or expired; empty when Err is set.
	Status string `json:"status"`
	Pass   string `json:"pass"`
	// EstimatedWait is the room's estimate for a waiting buyer.
	EstimatedWait time.Duration `json:"-"`
	Err           error         `json:"-"`
}

// QueueFigures are what a queue run measured besides its checkouts.
type QueueFigures struct {
	AdmitPerMinute int64   `json:"admitPerMinute"`
	Joins          int64   `json:"joins"`
	JoinsPerSecond float64 `json:"joinsPerSecond"`
	JoinLatency    Latency `json:"joinLatencyMs"`
	Polls          int64   `json:"polls"`
	PollsPerSecond float64 `json:"pollsPerSecond"`
	PollLatency    Latency `json:"pollLatencyMs"`
	// Admitted buyers (each made one checkout attempt), buyers told sold_out, buyers
	// whose pass expired before they used it, and join or poll calls that failed.
	Admitted int64 `json:"admitted"`
	SoldOut  int64 `json:"soldOut"`
	Expired  int64 `json:"expired"`
	Failures int64 `json:"failures"`
	// SecondsToSellOut is from the opening to the last checkout.
	SecondsToSellOut float64 `json:"secondsToSellOut"`
}

// How often a waiting buyer polls: first after pollFirst, backing off by doubling,
// and never less often than every pollAtMost.
const (
	pollFirst  = 20 * time.Millisecond
	pollAtMost = 2 * time.Second
)

// pollAt is when a buyer polls next; pollQueue orders them by that time.
type pollAt struct {
	at      time.Time
	buyer   int
	backoff time.Duration
}

type pollQueue []pollAt

func (q pollQueue) Len() int           { return len(q) }
func (q pollQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q pollQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *pollQueue) Push(x any)        { *q = append(*q, x.(pollAt)) }
func (q *pollQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// queueWorker is what one goroutine of a queue run recorded.
type queueWorker struct {
	worker
	joins, polls            []int64 // latencies, ns
	admitted, soldOut, gone int64
	failures                int64
	lastBuy                 int64
}

func runQueue(ctx context.Context, target Target, cfg Config, progress io.Writer) (*Result, error) {
	q, ok := target.(Queuer)
	if !ok {
		return nil, fmt.Errorf("%s has no waiting rooms", target.Name())
	}
	if id, ok := target.(interface{ Identities() int }); ok && id.Identities() < cfg.Buyers {
		return nil, fmt.Errorf("%s: %d buyers need as many identities, it has %d (pass the JWT secret to mint them)",
			target.Name(), cfg.Buyers, id.Identities())
	}
	p := newPlan(cfg)
	sku := p.skus[0]
	if err := q.PrepareRoom(ctx, sku, cfg.Stock, cfg.AdmitPerMinute); err != nil {
		return nil, fmt.Errorf("%s: prepare the room: %w", target.Name(), err)
	}
	before, err := target.Levels(ctx, p.skus)
	if err != nil {
		return nil, fmt.Errorf("%s: levels before: %w", target.Name(), err)
	}
	workers := make([]queueWorker, cfg.Concurrency)
	var counts live
	start := time.Now()
	since := func() int64 { return int64(time.Since(start)) }

	// Everyone joins before the start.
	var next atomic.Int64
	var wg sync.WaitGroup
	stopBar := startBar(progress, target.Name()+" queue: joins", cfg.Buyers, 0, &counts, start)
	for w := range workers {
		wg.Go(func() {
			qw := &workers[w]
			for i := next.Add(1) - 1; i < int64(cfg.Buyers) && ctx.Err() == nil; i = next.Add(1) - 1 {
				begin := since()
				t := q.Join(ctx, int(i), sku)
				qw.joins = append(qw.joins, since()-begin)
				if t.Err != nil {
					qw.failures++
				}
				counts.done.Add(1)
			}
		})
	}
	wg.Wait()
	stopBar()
	joinTime := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := q.OpenSale(ctx, sku); err != nil {
		return nil, fmt.Errorf("%s: open the sale: %w", target.Name(), err)
	}

	// Then each polls with backoff, and buys when admitted.
	open := time.Now()
	var drop live
	stopBar = startBar(progress, target.Name()+" queue: drop", cfg.Buyers, 0, &drop, open)
	for w := range workers {
		wg.Go(func() {
			qw := &workers[w]
			qw.worker.failures = map[string]error{}
			// Each buyer polls on its own schedule: soon after its last answer while
			// near the front, rarely while far back (a quarter of its estimated wait,
			// at most pollAtMost), and backing off from pollFirst while it waits.
			var due pollQueue
			for i := w; i < cfg.Buyers; i += len(workers) {
				due = append(due, pollAt{at: open, buyer: i, backoff: pollFirst})
			}
			heap.Init(&due)
			for due.Len() > 0 && ctx.Err() == nil {
				next := heap.Pop(&due).(pollAt)
				if d := time.Until(next.at); d > 0 {
					time.Sleep(d)
				}
				begin := since()
				t := q.Poll(ctx, next.buyer, sku)
				qw.polls = append(qw.polls, since()-begin)
				switch t.Status {
				case "waiting":
					next.at = time.Now().Add(max(next.backoff, min(t.EstimatedWait/4, pollAtMost)))
					next.backoff = min(2*next.backoff, pollAtMost)
					heap.Push(&due, next)
					continue
				case "admitted":
					qw.admitted++
					qw.buy(ctx, q, cfg, p, next.buyer, t.Pass, since, &drop)
				case "sold_out":
					qw.soldOut++
					drop.refused.Add(1)
				case "expired":
					qw.gone++
				default:
					qw.failures++
					drop.failed.Add(1)
				}
				drop.done.Add(1)
			}
		})
	}
	wg.Wait()
	stopBar()
	elapsed := time.Since(open)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	after, err := target.Levels(ctx, p.skus)
	if err != nil {
		return nil, fmt.Errorf("%s: levels after: %w", target.Name(), err)
	}

	plain := make([]worker, len(workers))
	f := &QueueFigures{AdmitPerMinute: cfg.AdmitPerMinute}
	var joins, polls []int64
	var lastBuy int64
	for i, qw := range workers {
		plain[i] = qw.worker
		joins, polls = append(joins, qw.joins...), append(polls, qw.polls...)
		f.Admitted += qw.admitted
		f.SoldOut += qw.soldOut
		f.Expired += qw.gone
		f.Failures += qw.failures
		lastBuy = max(lastBuy, qw.lastBuy)
	}
	f.Joins, f.Polls = int64(len(joins)), int64(len(polls))
	f.JoinsPerSecond = float64(f.Joins) / joinTime.Seconds()
	f.PollsPerSecond = float64(f.Polls) / elapsed.Seconds()
	f.JoinLatency, f.PollLatency = percentiles(joins), percentiles(polls)
	f.SecondsToSellOut = (time.Duration(lastBuy) - open.Sub(start)).Seconds()
	r := summarize(target.Name(), cfg, p, plain, elapsed)
	r.Queue = f
	r.check(p, plain, nil, before, after)
	return r, nil
}

// buy is an admitted buyer's checkout, recorded as an attempt.
func (qw *queueWorker) buy(ctx context.Context, q Queuer, cfg Config, p plan, i int, pass string, since func() int64, counts *live) {
	key := ""
	if !cfg.NoKeys {
		key = cfg.RunID + "-" + strconv.Itoa(i)
	}
	begin := since()
	a := q.CheckoutPass(ctx, i, key, p.linesFor(i), pass)
	rec := attempt{start: begin, end: since(), n: int32(i), outcome: a.Outcome, reason: a.Reason}
	switch a.Outcome {
	case OK:
		counts.ok.Add(1)
		qw.lastBuy = rec.end
	case Refused:
		rec.liar = a.Reason == "out_of_stock" && allServable(a)
	case Failed:
		if _, ok := qw.worker.failures[a.Reason]; !ok {
			qw.worker.failures[a.Reason] = a.Err
		}
	}
	qw.attempts = append(qw.attempts, rec)
}

// PrepareRoom implements Queuer.
func (e Engine) PrepareRoom(ctx context.Context, sku string, stock, admitPerMinute int64) error {
	later := time.Now().Add(24 * time.Hour)
	_, err := e.Inv.CreateProduct(ctx, engine.Product{SKU: sku, Stock: stock, Price: 1999, Currency: "USD",
		SaleStartsAt: &later, WaitingRoom: &engine.WaitingRoom{Enabled: true, AdmitPerMinute: admitPerMinute}})
	return err
}

// OpenSale implements Queuer.
func (e Engine) OpenSale(ctx context.Context, sku string) error {
	now := time.Now()
	return e.Inv.UpdateProduct(ctx, sku, engine.ProductPatch{SaleStartsAt: &now})
}

// Join implements Queuer.
func (e Engine) Join(ctx context.Context, buyer int, sku string) Ticket {
	t, err := e.Inv.JoinQueue(ctx, sku, userID(buyer))
	return Ticket{Status: string(t.Status), Pass: t.Pass, Err: err}
}

// Poll implements Queuer.
func (e Engine) Poll(ctx context.Context, buyer int, sku string) Ticket {
	t, err := e.Inv.QueuePosition(ctx, sku, userID(buyer))
	return Ticket{Status: string(t.Status), Pass: t.Pass, EstimatedWait: t.EstimatedWait, Err: err}
}

// CheckoutPass implements Queuer.
func (e Engine) CheckoutPass(ctx context.Context, buyer int, key string, lines []engine.Line, pass string) Answer {
	req := engine.CheckoutRequest{UserID: userID(buyer), Lines: lines, IdempotencyKey: key, QueuePass: pass}
	if key == "" {
		req.OrderID = engine.NewID()
	}
	o, err := e.Inv.Checkout(ctx, req)
	if err != nil {
		return engineAnswer(err)
	}
	return Answer{Outcome: OK, ID: o.ID}
}

// PrepareRoom implements Queuer.
func (h *HTTP) PrepareRoom(ctx context.Context, sku string, stock, admitPerMinute int64) error {
	body, _ := json.Marshal(map[string]any{"sku": sku, "name": "bench " + sku, "price": 1999, "currency": "USD",
		"stock": stock, "saleStartsAt": time.Now().Add(24 * time.Hour).UTC(),
		"waitingRoom": map[string]any{"enabled": true, "admitPerMinute": admitPerMinute}})
	status, resp, err := h.do(ctx, "POST", "/api/v1/products", h.admin, "", body)
	if err == nil && status != fasthttp.StatusCreated {
		err = fmt.Errorf("create %s: %d %s", sku, status, resp)
	}
	return err
}

// OpenSale implements Queuer.
func (h *HTTP) OpenSale(ctx context.Context, sku string) error {
	status, resp, err := h.do(ctx, "PATCH", "/api/v1/products/"+url.PathEscape(sku), h.admin, "", []byte(`{"saleStartsAt":null}`))
	if err == nil && status != fasthttp.StatusOK {
		err = fmt.Errorf("open %s: %d %s", sku, status, resp)
	}
	return err
}

// Join implements Queuer.
func (h *HTTP) Join(ctx context.Context, buyer int, sku string) Ticket {
	return ticket(h.do(ctx, "POST", "/api/v1/queue/"+url.PathEscape(sku), h.token(buyer), "", nil))
}

// Poll implements Queuer.
func (h *HTTP) Poll(ctx context.Context, buyer int, sku string) Ticket {
	return ticket(h.do(ctx, "GET", "/api/v1/queue/"+url.PathEscape(sku), h.token(buyer), "", nil))
}

// CheckoutPass implements Queuer.
func (h *HTTP) CheckoutPass(ctx context.Context, buyer int, key string, lines []engine.Line, pass string) Answer {
	return h.answer(h.doPass(ctx, "POST", "/api/v1/checkout", h.token(buyer), key, pass, itemsBody(lines)))
}

func ticket(status int, body []byte, err error) Ticket {
	if err != nil {
		return Ticket{Err: err}
	}
	if status != fasthttp.StatusOK && status != fasthttp.StatusCreated {
		return Ticket{Err: fmt.Errorf("%d %s", status, body)}
	}
	var v struct {
		Status string `json:"status"`
		Pass   string `json:"pass"`
		Wait   int64  `json:"estimatedWaitSeconds"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Status == "" {
		return Ticket{Err: fmt.Errorf("%d %s", status, body)}
	}
	return Ticket{Status: v.Status, Pass: v.Pass, EstimatedWait: time.Duration(v.Wait) * time.Second}
}
