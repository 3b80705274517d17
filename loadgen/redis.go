package loadgen

import (
	"context"
	"errors"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/flashstock/flashstock/engine"
)

// Engine drives flashstock's engine in-process, against the Redis it was built on.
type Engine struct {
	Inv *engine.Redis
}

// Name implements Target.
func (Engine) Name() string { return "engine" }

func userID(buyer int) string { return "bench-" + strconv.Itoa(buyer) }

// Prepare implements Target.
func (e Engine) Prepare(ctx context.Context, stock map[string]int64) error {
	for sku, n := range stock {
		if _, err := e.Inv.CreateProduct(ctx, engine.Product{SKU: sku, Stock: n, Price: 1999, Currency: "USD"}); err != nil {
			return err
		}
	}
	return nil
}

// Checkout implements Target.
func (e Engine) Checkout(ctx context.Context, buyer int, key string, lines []engine.Line) Answer {
	req := engine.CheckoutRequest{UserID: userID(buyer), Lines: lines, IdempotencyKey: key}
	if key == "" {
		req.OrderID = engine.NewID()
	}
	o, err := e.Inv.Checkout(ctx, req)
	if err != nil {
		return engineAnswer(err)
	}
	return Answer{Outcome: OK, ID: o.ID}
}

// Reserve implements Holder.
func (e Engine) Reserve(ctx context.Context, buyer int, key string, lines []engine.Line) Answer {
	req := engine.ReserveRequest{UserID: userID(buyer), Lines: lines, IdempotencyKey: key, TTL: 600e9}
	if key == "" {
		req.HoldID = engine.NewID()
	}
	h, err := e.Inv.Reserve(ctx, req)
	if err != nil {
		return engineAnswer(err)
	}
	return Answer{Outcome: OK, ID: h.ID}
}

// Commit implements Holder.
func (e Engine) Commit(ctx context.Context, _ int, holdID, _ string) Answer {
	o, err := e.Inv.Commit(ctx, engine.CommitRequest{HoldID: holdID, OrderID: engine.OrderIDForHold(holdID)})
	if err != nil {
		return engineAnswer(err)
	}
	return Answer{Outcome: OK, ID: o.ID}
}

// Cancel implements Canceller.
func (e Engine) Cancel(ctx context.Context, _ int, orderID string) Answer {
	if _, err := e.Inv.Cancel(ctx, engine.CancelRequest{OrderID: orderID}); err != nil {
		return engineAnswer(err)
	}
	return Answer{Outcome: OK, ID: orderID}
}

// Levels implements Target.
func (e Engine) Levels(ctx context.Context, skus []string) (map[string]engine.Level, error) {
	return e.Inv.Lookup(ctx, skus)
}

// engineAnswer names an engine error by the contract code the API would answer with.
func engineAnswer(err error) Answer {
	var se *engine.StockError
	switch {
	case errors.As(err, &se):
		return Answer{Outcome: Refused, Reason: "out_of_stock", Short: se.Short}
	case errors.Is(err, engine.ErrLimitExceeded):
		return Answer{Outcome: Refused, Reason: "purchase_limit_exceeded"}
	case errors.Is(err, engine.ErrSaleNotActive):
		return Answer{Outcome: Refused, Reason: "sale_not_active"}
	case errors.Is(err, engine.ErrQueuePassRequired):
		return Answer{Outcome: Refused, Reason: "queue_pass_required"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return failed("timeout", err)
	}
	return failed("error", err)
}

// Bare Redis baselines keep a SKU as two plain keys: available units and units sold.
func availKey(sku string) string { return "bench:{" + sku + "}:a" }
func soldKey(sku string) string  { return "bench:{" + sku + "}:s" }

func prepareBare(ctx context.Context, rdb redis.UniversalClient, stock map[string]int64) error {
	for sku, n := range stock {
		if err := rdb.MSet(ctx, availKey(sku), n, soldKey(sku), 0).Err(); err != nil {
			return err
		}
	}
	return nil
}

func bareLevels(ctx context.Context, rdb redis.UniversalClient, skus []string) (map[string]engine.Level, error) {
	out := make(map[string]engine.Level, len(skus))
	for _, sku := range skus {
		v, err := rdb.MGet(ctx, availKey(sku), soldKey(sku)).Result()
		if err != nil {
			return nil, err
		}
		a, _ := strconv.ParseInt(str(v[0]), 10, 64)
		s, _ := strconv.ParseInt(str(v[1]), 10, 64)
		out[sku] = engine.Level{SKU: sku, Available: a, Sold: s}
	}
	return out, nil
}

func str(v any) string { s, _ := v.(string); return s }

// SeedStyle is the strategy of the code flashstock replaced: read the stock under WATCH,
// then decrement it in MULTI/EXEC, retrying up to three times when another buyer got
// there first, then giving up. It never oversells, but it turns buyers away under
// contention while stock remains.
type SeedStyle struct {
	RDB redis.UniversalClient
	// Retries after the first try (default 3, as the seed had it).
	Retries int
}

// Name implements Target.
func (SeedStyle) Name() string { return "seed-style" }

// Prepare implements Target.
func (s SeedStyle) Prepare(ctx context.Context, stock map[string]int64) error {
	return prepareBare(ctx, s.RDB, stock)
}

// Levels implements Target.
func (s SeedStyle) Levels(ctx context.Context, skus []string) (map[string]engine.Level, error) {
	return bareLevels(ctx, s.RDB, skus)
}

var errShort = errors.New("short")

// Checkout implements Target (single-SKU lines only).
func (s SeedStyle) Checkout(ctx context.Context, _ int, key string, lines []engine.Line) Answer {
	if len(lines) != 1 {
		return failed("unsupported", errors.New("the seed-style baseline buys one line"))
	}
	sku, q := lines[0].SKU, lines[0].Quantity
	ak := availKey(sku)
	retries := s.Retries
	if retries <= 0 {
		retries = 3
	}
	for range retries + 1 {
		err := s.RDB.Watch(ctx, func(tx *redis.Tx) error {
			n, err := tx.Get(ctx, ak).Int64()
			if err != nil {
				return err
			}
			if n < q {
				return errShort
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.DecrBy(ctx, ak, q)
				p.IncrBy(ctx, soldKey(sku), q)
				return nil
			})
			return err
		}, ak)
		switch {
		case err == nil:
			return Answer{Outcome: OK, ID: key}
		case errors.Is(err, errShort):
			return Answer{Outcome: Refused, Reason: "out_of_stock"}
		case errors.Is(err, redis.TxFailedErr):
			continue
		default:
			return engineAnswer(err)
		}
	}
	return Answer{Outcome: Refused, Reason: ReasonConflict}
}

// Ceiling is the trivial decrement script driven from Go, one EVALSHA per buyer: no
// order, no outbox, no idempotency. Its Go client costs more CPU per call than Redis
// does, so the suite's ceiling is RedisBenchmark's; this one shows the difference.
type Ceiling struct {
	RDB redis.UniversalClient
}

// ceilingSource is the trivial decrement script: take the units if they are there.
const ceilingSource = `
local n = redis.call('DECRBY', KEYS[1], ARGV[1])
if n >= 0 then return 1 end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 0`

var ceilingScript = redis.NewScript(ceilingSource)

// Name implements Target.
func (Ceiling) Name() string { return "ceiling-go" }

// Prepare implements Target.
func (c Ceiling) Prepare(ctx context.Context, stock map[string]int64) error {
	if err := prepareBare(ctx, c.RDB, stock); err != nil {
		return err
	}
	return ceilingScript.Load(ctx, c.RDB).Err()
}

// Levels implements Target. Units sold are not counted: the sold figure is derived.
func (c Ceiling) Levels(ctx context.Context, skus []string) (map[string]engine.Level, error) {
	return bareLevels(ctx, c.RDB, skus)
}

// Checkout implements Target (single-SKU lines only).
func (c Ceiling) Checkout(ctx context.Context, _ int, key string, lines []engine.Line) Answer {
	if len(lines) != 1 {
		return failed("unsupported", errors.New("the ceiling baseline buys one line"))
	}
	n, err := ceilingScript.EvalSha(ctx, c.RDB, []string{availKey(lines[0].SKU)}, lines[0].Quantity).Int64()
	switch {
	case err != nil:
		return engineAnswer(err)
	case n == 1:
		return Answer{Outcome: OK, ID: key}
	}
	return Answer{Outcome: Refused, Reason: "out_of_stock"}
}
