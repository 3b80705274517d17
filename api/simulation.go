package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flashstock/flashstock/api/codes"
	"github.com/flashstock/flashstock/engine"
	"github.com/flashstock/flashstock/internal/latency"
	stocksync "github.com/flashstock/flashstock/sync"
)

// The flash-sale simulation must not starve live buyers. So:
//   - one run at a time, across every replica: a Redis lock whose TTL is the run's own
//     deadline plus the cleanup budget, so a crashed run frees it;
//   - it runs on a lane of its own (engine.Redis.Lane): one batcher, at most
//     simWorkers synthetic buyers in flight, never queued on the live buyers' batchers;
//   - it stops when the request's context ends (its deadline, Config.RequestTimeout)
//     or the server shuts down, and answers with what it did (cancelled: true);
//   - afterwards the synthetic buyers' per-user purchase counters are removed. Their
//     orders stay: they are real sales of real stock, which the report counts.
//
// Keys: Keys.Simulation("lock") is the lock; Keys.Simulation("runs") lists runs whose
// synthetic buyers' counters are not yet removed (run id → "<buyers>\n<sku>,<sku>…"),
// so that a run that crashed is cleaned up by the next.
const (
	// simWorkers caps the buyers in flight: one batch of the lane's single batcher.
	// A larger `concurrency` is accepted (the contract allows 1000) and capped.
	simWorkers = 64
	// simCleanup bounds what follows a run's deadline while the lock is held: buyers
	// already sent finishing (5 s), forgetting their counters (30 s) and reading the
	// levels for the report (30 s), with room to spare.
	simCleanup = 90 * time.Second
	// simMaxRun bounds a run when the request carries no deadline of its own.
	simMaxRun = 10 * time.Minute
)

var errSimulationRunning = problem(http.StatusConflict, codes.AlreadyExists,
	"a flash-sale simulation is already running; retry when it has finished")

type bulkReport struct {
	Buyers int `json:"buyers"`
	// Attempted is how many buyers were sent: Buyers, unless the run was cancelled.
	Attempted          int              `json:"attempted"`
	Cancelled          bool             `json:"cancelled"`
	Succeeded          int64            `json:"succeeded"`
	OutOfStock         int64            `json:"outOfStock"`
	LimitExceeded      int64            `json:"limitExceeded"`
	Failed             int64            `json:"failed"`
	DurationMs         int64            `json:"durationMs"`
	CheckoutsPerSecond float64          `json:"checkoutsPerSecond"`
	LatencyMs          latencyView      `json:"latencyMs"`
	StockBefore        map[string]int64 `json:"stockBefore"`
	StockAfter         map[string]int64 `json:"stockAfter"`
	Oversold           int64            `json:"oversold"`
}

type latencyView struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// bulkCheckout runs a flash-sale simulation: `buyers` distinct synthetic customers buy
// the same items through the real checkout path (placeOrder), `concurrency` at a time
// (at most simWorkers). The report's figures are measured: stock is read before and
// after. A second run while one is in progress, here or on another replica, is 409
// already_exists.
func (s *server) bulkCheckout(c *fiber.Ctx) error {
	var in struct {
		Items       *[]engine.Line `json:"items"`
		Buyers      *int           `json:"buyers"`
		Concurrency *int           `json:"concurrency"`
	}
	if _, err := decodeStrict(c.Body(), &in, false); err != nil {
		return err
	}
	switch {
	case in.Items == nil || len(*in.Items) == 0:
		return validation("items", "at least one line is required")
	case in.Buyers == nil || *in.Buyers < 1 || *in.Buyers > 100_000:
		return validation("buyers", "must be between 1 and 100000")
	case in.Concurrency == nil || *in.Concurrency < 1 || *in.Concurrency > 1000:
		return validation("concurrency", "must be between 1 and 1000")
	}
	sim := simulation{lines: *in.Items, buyers: *in.Buyers, workers: min(*in.Concurrency, simWorkers), units: map[string]int64{}}
	for _, l := range sim.lines {
		if !engine.ValidSKU(l.SKU) {
			return validation("items", "every sku must be 1-64 characters of [A-Za-z0-9._-]")
		}
		sim.units[l.SKU] += l.Quantity
	}
	for sku := range sim.units {
		sim.skus = append(sim.skus, sku)
	}
	slices.Sort(sim.skus)

	// The run stops when the request's context ends or the server shuts down
	// (fasthttp closes the RequestCtx's Done channel then; it is nil under app.Test).
	ctx, cancel := context.WithTimeout(c.UserContext(), simMaxRun)
	defer cancel()
	if shutdown := c.Context().Done(); shutdown != nil {
		go func() {
			select {
			case <-shutdown:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	ttl := simMaxRun
	if d, ok := ctx.Deadline(); ok {
		ttl = time.Until(d)
	}
	lock, err := stocksync.Acquire(ctx, s.rdb, s.inv.Keys().Simulation("lock"), ttl+simCleanup)
	if errors.Is(err, stocksync.ErrLocked) {
		return errSimulationRunning
	}
	if err != nil {
		return redisErr(err)
	}
	// Cleanup and release must happen even when the run was cancelled.
	after := context.WithoutCancel(ctx)
	defer func() { _ = lock.Release(after) }()
	s.forgetStaleRuns(c, after)

	rep, err := s.runSimulation(ctx, after, sim)
	if err != nil {
		return err
	}
	return c.JSON(rep)
}

// simulation is one run's input.
type simulation struct {
	lines   []engine.Line
	units   map[string]int64 // SKU → units each buyer asks for
	skus    []string         // sorted
	buyers  int
	workers int
}

// runSimulation runs sim under ctx, then (under after, which outlives ctx) measures
// the stock and removes the synthetic buyers' counters.
func (s *server) runSimulation(ctx, after context.Context, sim simulation) (bulkReport, error) {
	before, err := s.inv.Levels(ctx, sim.skus)
	if err != nil {
		return bulkReport{}, err
	}
	run := engine.NewShortID()
	user := func(i int) string { return "sim-" + run + "-" + strconv.Itoa(i) }
	// Recorded before the first buyer, so that a crash mid-run leaves a note for the
	// next run to clean up after.
	if err := s.rdb.HSet(ctx, s.inv.Keys().Simulation("runs"), run, strconv.Itoa(sim.buyers)+"\n"+strings.Join(sim.skus, ",")).Err(); err != nil {
		return bulkReport{}, redisErr(err)
	}
	lane, closeLane := s.inv.Lane(1)
	defer closeLane()

	lat := make([]time.Duration, sim.buyers)
	var ok, oos, limit, failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range min(sim.workers, sim.buyers) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= sim.buyers {
					return
				}
				// A buyer once sent is seen through: its outcome must be known to the
				// report, so its call does not end with ctx.
				bctx, cancel := context.WithTimeout(after, 5*time.Second)
				t0 := time.Now()
				_, err := placeOrder(bctx, lane, user(i), sim.lines, "", 0, false, "")
				lat[i] = time.Since(t0)
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
					s.live.checkouts.Add(1)
				case errors.Is(err, engine.ErrOutOfStock):
					oos.Add(1)
					s.live.refusals.Add(1)
				case errors.Is(err, engine.ErrLimitExceeded):
					limit.Add(1)
					s.live.refusals.Add(1)
				case errors.Is(err, engine.ErrInvalid) || errors.Is(err, engine.ErrNotFound) ||
					errors.Is(err, engine.ErrQueuePassRequired): // synthetic buyers hold no queue passes
					errOnce.Do(func() { firstErr = err })
					failed.Add(1)
				default:
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	attempted := min(int(next.Load()), sim.buyers)

	if err := s.forgetRun(after, run, sim.skus, attempted); err != nil {
		s.log.Warn("simulation: remove synthetic buyers' counters", "run", run, "err", err)
	}
	if firstErr != nil && failed.Load() == int64(attempted) {
		return bulkReport{}, firstErr // the request itself was bad: every buyer got the same refusal
	}
	lctx, cancel := context.WithTimeout(after, simCleanup)
	defer cancel()
	levels, err := s.inv.Levels(lctx, sim.skus)
	if err != nil {
		return bulkReport{}, err
	}

	rep := bulkReport{Buyers: sim.buyers, Attempted: attempted, Cancelled: attempted < sim.buyers,
		Succeeded: ok.Load(), OutOfStock: oos.Load(), LimitExceeded: limit.Load(),
		Failed: failed.Load(), DurationMs: elapsed.Milliseconds(),
		CheckoutsPerSecond: float64(attempted) / elapsed.Seconds(), LatencyMs: percentiles(lat[:attempted]),
		StockBefore: map[string]int64{}, StockAfter: map[string]int64{}}
	for i, sku := range sim.skus {
		rep.StockBefore[sku], rep.StockAfter[sku] = before[i].Available, levels[i].Available
		// Oversold: units that left available stock beyond what was there, or orders
		// confirmed for units that never left it.
		taken := before[i].Available - levels[i].Available
		rep.Oversold += max(0, -levels[i].Available) + max(0, rep.Succeeded*sim.units[sku]-taken)
	}
	return rep, nil
}

// forgetRun removes the per-user purchase counters of a run's first `buyers` synthetic
// buyers, then the run's note.
func (s *server) forgetRun(ctx context.Context, run string, skus []string, buyers int) error {
	ctx, cancel := context.WithTimeout(ctx, simCleanup)
	defer cancel()
	users := make([]string, buyers)
	for i := range users {
		users[i] = "sim-" + run + "-" + strconv.Itoa(i)
	}
	if err := s.inv.ForgetBuyers(ctx, skus, users); err != nil {
		return err
	}
	return s.rdb.HDel(ctx, s.inv.Keys().Simulation("runs"), run).Err()
}

// forgetStaleRuns cleans up after runs that ended without cleaning up (a crash). It
// runs under the simulation lock, so no listed run is still going.
func (s *server) forgetStaleRuns(c *fiber.Ctx, ctx context.Context) {
	runs, err := s.rdb.HGetAll(ctx, s.inv.Keys().Simulation("runs")).Result()
	if err != nil {
		reqLog(c, s.log).Warn("simulation: list unfinished runs", "err", err)
		return
	}
	for run, v := range runs {
		n, skus, _ := strings.Cut(v, "\n")
		buyers, err := strconv.Atoi(n)
		if err != nil || skus == "" {
			err = s.rdb.HDel(ctx, s.inv.Keys().Simulation("runs"), run).Err()
		} else {
			err = s.forgetRun(ctx, run, strings.Split(skus, ","), buyers)
		}
		if err != nil {
			reqLog(c, s.log).Warn("simulation: clean up after an unfinished run", "run", run, "err", err)
		}
	}
}

func percentiles(d []time.Duration) latencyView {
	l := latency.Of(d)
	return latencyView{P50: l.P50, P95: l.P95, P99: l.P99, Max: l.Max}
}
